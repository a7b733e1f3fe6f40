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
package proxy
