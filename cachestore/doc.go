// Package cachestore is fragcache's fragment store: an in-memory cache of
// entries under string keys, with request coalescing,
// stale-while-revalidate, background refresh, refresh-ahead and negative
// caching.
//
// A [Store] is generic in the type V of the values it holds and the type A
// of the argument its loads take (what a load needs beyond its key, copied
// out of the request that started it), so that neither crosses the store
// in an interface (fragcache's proxy stores pointers to its fragment
// records and passes pointers to its fetch arguments).
//
// It owns the caching policy only: keys, entries, freshness and staleness,
// the flights that load missing keys, the bounded refresh queue and its
// workers, the load limit, failure backoff and the memory of uncacheable
// keys. ristretto is its L1. Values come from a [Loader] the caller supplies;
// events go to an [Observer] the caller supplies.
//
// It must not import net/http, fasthttp, or fragcache's fragment, metrics or
// proxy packages: it knows nothing of HTTP or ESI. A per-user scope, a Vary
// value or a fragment class is simply part of the key the caller builds.
//
// # How a lookup answers
//
// [Store.LookupIn] never blocks. A fresh entry is a [Hit]. An entry past its
// FreshUntil but before its StaleUntil is served as [Updating] while exactly
// one refresh of it runs in the background, or as [Stale] when no refresh can
// run (backoff after a failure, or the refresh queue is full). A key with
// nothing usable starts one load, or joins the one already running, and
// answers [Miss] with a [Flight] the caller may wait on with its own
// deadline: on [Flight.Done], or through [Flight.Notify] when it waits on
// many flights at once. The load itself runs under the store's lifetime and
// [Config.LoadTimeout], never under a caller's context, so a caller that gives
// up does not cancel it for the others. [Store.Peek] answers from a stored
// entry only and never starts a load.
//
// # What is not here
//
// The API is no bigger than its callers: lookups report their outcome in
// the [Result] and loads theirs to the [Loader]'s own code, so the
// [Observer] carries only what neither sees (queues, shedding, backoff,
// ristretto's refusals, evictions and cost).
package cachestore
