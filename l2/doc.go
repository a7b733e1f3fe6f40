// Package l2 is fragcache's shared second cache tier on Redis: N replicas
// read and write one store, take one fill lock per key cluster-wide, wake
// each other's waiters, share failure backoff and record purges, all through
// one Redis (or Valkey, or a managed Redis) and github.com/redis/go-redis/v9
// with client-side caching and retries off.
//
// It owns the Redis side only: key names, the binary header of stored
// values (format version, full key, fresh-until, stale-until, stored-at, tag
// hashes) and its decoder, the Lua scripts of the lock, the fenced store and
// the purge record, the event channel and its one subscriber, and a breaker
// that keeps a slow or dead Redis from costing callers more than one
// timeout. The body of an entry is opaque: its encoding is the caller's.
//
// It must not import fragcache's proxy, cachestore, fragment or metrics
// packages, nor net/http or fasthttp: it knows nothing of HTTP, ESI or the
// L1. Metrics reach the caller through the [Observer] it declares, purges
// and the subscription's state through the [Listener].
//
// # Keys
//
// Every per-key Redis key is <prefix>:v1:<kind>:<hash>, <hash> the hex
// SHA-256 of the caller's full key, so that key lengths are bounded and no
// key text (which may carry a scope HMAC) reaches Redis's key space: kind f
// is the entry, l the fill lock, n the hint (failure backoff or bypass).
// Every one of them has a TTL: an entry's runs to its stale-until (capped at
// Config.PurgeRetention), a lock's is [LockTTL], a hint's its duration. The
// two exceptions (DESIGN rule 27) are the purge set <prefix>:v1:purges and
// the epoch <prefix>:v1:epoch; events go over the channel <prefix>:v1:events.
// Nothing grows with the number of URLs: no index, no list.
//
// # A fill, seen from the caller
//
// Inside the caller's local flight for key (an L1 miss or a refresh):
//
//  1. [Client.Get]: Hit -> use it; Stale -> serve it stale (refresh later);
//     a [Hint] -> back off or bypass; Miss or Corrupt -> go on.
//  2. [Client.Acquire]: either the [Lock], or the outcome of the process
//     that held it ([Filled]: Get again; [Failed]; [Bypassed]).
//  3. With the lock: Get once more (someone may have filled it just
//     before), fetch, [Lock.Set] the entry (fenced by [Lock.Start] against
//     purges), then [Lock.Release] with the [Outcome], which publishes it.
//
// Any error means "Redis cannot help now": serve from L1 and fetch locally.
// Nothing here ever blocks past Config.Timeout per request, or past the
// caller's context in Acquire; while the breaker is open requests fail at
// once with [ErrBreakerOpen], and it closes by itself once a probe answers.
//
// # Times
//
// All times are absolute, with microsecond precision. StoredAt, lock starts
// and purge times come from the Redis server's clock (TIME inside the
// scripts), so purges are judged by one clock whatever the replicas' clocks
// say; fresh-until and stale-until are the caller's and are compared with
// the local clock by Get; hints are stored as TTLs, so their Until is local.
package l2
