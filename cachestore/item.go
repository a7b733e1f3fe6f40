package cachestore

import "sync/atomic"

// item is what the store keeps in ristretto and in the side table: an
// Entry plus its times in the store's clock and its refresh state. The
// Entry and the times never change once the item is built; only the two
// atomics do.
type item[V any] struct {
	key   string // the key it is stored under
	entry Entry[V]
	cost  int64

	// Nanoseconds since Store.epoch. refreshAt <= fresh <= stale.
	refreshAt int64 // from here on a lookup queues a refresh-ahead
	fresh     int64 // FreshUntil
	stale     int64 // StaleUntil

	// refreshing is set by the one lookup that queues a refresh of this
	// item, and cleared when the refresh fails or could not be queued.
	refreshing atomic.Bool
	// retryAt is the end of the backoff after a failed refresh, in
	// nanoseconds since Store.epoch; before it no refresh is queued.
	retryAt atomic.Int64

	// slot is the item's index in recentTable.ring, or -1; guarded by
	// Store.mu.
	slot int
}
