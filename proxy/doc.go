// Package proxy is fragcache's HTTP side: the fasthttp front server, the
// upstream client that forwards page requests, the fragment fetcher that
// loads includes for the cache store, and the composition of pages from
// parsed templates and fragments.
//
// It is the only package that knows fasthttp and the only one that
// imports fragment, cachestore and metrics together; nothing imports it
// but main. A handler never fetches a fragment itself: it looks every
// active include up in the store, waits on the store's flights until the
// page's deadline, and renders placeholders for what is not ready.
//
// # The stages
//
// A request goes through four stages, each with its own state and none
// holding the Proxy:
//
//   - forwarding (headers.go, type forwarding): which peers are trusted,
//     which host the site is served as, what a request to the upstream
//     carries.
//   - the page stage (page.go, Proxy.composePage): the page is read,
//     decoded and parsed, then handed to a composer.
//   - composition (compose.go, type composer over a composeEnv): every
//     include is resolved (urls.go, type sources), looked up in the store
//     and awaited as its flight ends; the page is rendered with
//     placeholders for the rest.
//   - response writing (respond.go): the composed page's headers.
//
// The fetcher (fetch.go) is the store's Loader: it runs on the store's
// goroutines, never on a handler's.
//
// # Where to look
//
//   - Who may see this fragment: privacy.go, planLookup (which key a
//     request looks up) and placeAnswer (where an answer is stored and
//     who may be served it); scopes in scope.go, scoper.user.
//   - How long a page waits: compose.go, composer.await (one start, each
//     include's deadline from startSrc, DESIGN precise rule 1).
//   - What goes in the response headers: respond.go, writePage (composed)
//     and writeUnchanged; proxy.go, Proxy.passthrough.
//   - How a fragment is fetched: fetch.go, fetcher.fetch (the request in
//     fetcher.request, freshness and placement in fetcher.entry); the
//     connection rules in conn.go, transport.RoundTrip.
//   - What became of an include: compose.go records it per slot (lookup,
//     at) and in render order (composer.note in appendInclude); debug.go
//     turns it into the debug Server-Timing (appendServerTiming, rule 32)
//     and the demo's data-fc-outcome (appendMarked, rule 34).
//   - What the admin page shows of the includes: activity.go, the srcs
//     table (srcTable) and Proxy.Activity.
//   - What a purge does: purgereq.go, Proxy.Purge records one time per
//     tag (tags.go names them) in the purge table (purge.go), which
//     judges every fragment lazily (purgeTable.verdict): the composer
//     judges what the store answers (composer.startSrc, composer.settle),
//     the fetcher what it is about to store (fetcher.fence), the tier
//     what it reads from Redis (tier.decode).
package proxy
