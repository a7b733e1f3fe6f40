package cachestore

import "sync/atomic"

// item is what the store keeps in ristretto and in the side table: an
// Entry plus its times in the store's clock, its refresh state and its
// expiry. The Entry and the times never change once the item is built;
// only the three atomics do.
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
	// expiry is set by Store.Expire, never lowered: ExpireSoft makes
	// the item stale whatever its times say, ExpireHard makes it gone.
	// Zero: as its times say.
	expiry atomic.Uint32

	// slot is the item's index in recentTable.ring, or -1; guarded by
	// Store.mu.
	slot int
}
