// Package metrics owns fragcache's Prometheus collectors and the admin
// endpoints that expose them: /metrics, the probes, and the admin page at
// /, which reads the same registry plus what its caller gives it through
// AdminOptions.Activity.
//
// It is a leaf: it imports the Prometheus client and the standard library,
// never another fragcache package. Every collector is registered on the
// registry the caller passes in, never on the global default registry, and
// every labelled child the hot path needs is resolved once, at construction
// or when a reload changes the fragment classes (SetFragments), so that
// recording an event is an atomic add.
//
// Label values are bounded: fragment names come from the operator's
// configuration (plus "other"), upstream names from the configured hosts,
// results and reasons from fixed lists. No URL or cache key is ever a label.
package metrics
