package cachestore

// Peek reports whether key holds an entry that a Lookup would serve (fresh
// or within its stale window). Unlike Lookup it starts nothing and
// reports nothing to the Observer: callers use it to choose among the keys
// an entry may live under before they look one up. It is safe for
// concurrent use and allocates nothing.
func (s *Store) Peek(key string) bool {
	now := s.now()
	if it, ok := s.cache.Get(key); ok && now < it.stale {
		return true
	}
	s.mu.Lock()
	it := s.recent.get(key, now)
	s.mu.Unlock()
	return it != nil
}
