package cachestore

// Expiry is how Store.Expire ends an entry before its times say: the
// caller learned that what the entry holds is out of date (fragcache: a
// purge of one of its tags), which the store cannot see for itself.
type Expiry uint32

// The expiries. An entry's expiry is only ever raised.
const (
	// Keep: the entry stays as its times say.
	Keep Expiry = iota
	// ExpireSoft: the entry is served as if past its FreshUntil (Updating
	// while one refresh runs, within its StaleUntil) whatever its times
	// say.
	ExpireSoft
	// ExpireHard: the entry is gone; lookups miss and load the key.
	ExpireHard
)

// expired returns the item's expiry.
func (it *item[V]) expired() Expiry { return Expiry(it.expiry.Load()) }

// raiseExpiry sets the item's expiry to e unless it is already as
// strong, and reports whether it did.
func (it *item[V]) raiseExpiry(e Expiry) bool {
	for {
		cur := it.expiry.Load()
		if cur >= uint32(e) {
			return false
		}
		if it.expiry.CompareAndSwap(cur, uint32(e)) {
			return true
		}
	}
}

// Expire ends the entries stored under key early where judge says so.
// judge is called with the value of each item the store holds under key
// (ristretto's and, when it is another one, the side table's), and its
// answer applies to that item only: an entry stored after the caller's
// lookup is judged on its own value, never expired for an older one's
// sake. An entry that turns soft has its refresh backoff cleared, so that
// the next lookup starts its refresh (once: Expire again does not clear
// it again); one expired hard is removed. It returns
// the strongest expiry applied (Keep when none was).
//
// Expire is safe for concurrent use; judge must not call the Store. It
// is not on the hit path: a caller expires the key it found out of date,
// then looks it up again.
func (s *Store[V, A]) Expire(key string, judge func(V) Expiry) Expiry {
	g := s.gets.enter(&s.closing)
	if g == nil {
		return Keep
	}
	defer s.gets.leave(g)
	cached, _ := s.cache.Get(key)
	s.mu.Lock()
	side := s.recent.peek(key)
	s.mu.Unlock()
	items := [...]*item[V]{cached, side}
	if side == cached {
		items[1] = nil
	}
	most := Keep
	for _, it := range items {
		if it == nil {
			continue
		}
		e := min(judge(it.entry.Value), ExpireHard)
		if e == Keep {
			continue
		}
		if it.raiseExpiry(e) && e == ExpireSoft {
			// Once, when it turns soft: a refresh that keeps failing
			// afterwards backs off as any does.
			it.retryAt.Store(0)
		}
		most = max(most, e)
	}
	if cached != nil && cached.expired() == ExpireHard {
		// Only if it is still the one stored: a newer entry written since
		// keeps its place (ristretto has no compare-and-delete; a newer
		// write racing this one costs a load, never an old answer).
		if cur, ok := s.cache.Get(key); ok && cur == cached {
			s.cache.Del(key)
		}
	}
	if side != nil && side.expired() == ExpireHard {
		s.mu.Lock()
		if s.recent.peek(key) == side {
			s.recent.del(key)
		}
		s.mu.Unlock()
	}
	return most
}

// Forget clears what the store remembers of key's failures: the backoff
// after a failed load, so that lookups no longer answer Failed, and the
// refresh backoff of the entry stored under it. The next lookup loads the
// key, or refreshes its entry, at once. Safe for concurrent use.
func (s *Store[V, A]) Forget(key string) {
	s.mu.Lock()
	s.delFail(key)
	side := s.recent.peek(key)
	s.mu.Unlock()
	if side != nil {
		side.retryAt.Store(0)
	}
	g := s.gets.enter(&s.closing)
	if g == nil {
		return
	}
	defer s.gets.leave(g)
	if it, ok := s.cache.Get(key); ok {
		it.retryAt.Store(0)
	}
}
