package cachestore

// recentTable is the side table that makes a load's result visible at
// once, while ristretto cannot promise it:
//
//   - ristretto applies a Set of a new key asynchronously, on its own
//     goroutine, so a Get right after the Set misses;
//   - its write buffer may drop the Set under contention;
//   - its TinyLFU admission may reject a new key that has been seen less
//     often than the entries it would evict.
//
// Every stored item goes into this table as well as into ristretto, and a
// lookup that misses ristretto looks here before it starts a load. The table
// is a FIFO bounded by a number of items and by a cost (a fraction of
// Config.MaxCost), so it never grows with load: under memory pressure items
// are pushed out by newer ones after a short while and the store degrades
// to misses, as ristretto wants. Items are also dropped when they pass
// StaleUntil or their key is deleted.
//
// ristretto is always asked first. It never holds an older item than this
// table: it replaces a present key at once, and when it refuses the second
// of two buffered writes of a new key as a duplicate, Store.onReject writes
// the newer item again. So the table never hides a newer entry.
//
// It is guarded by Store.mu.
type recentTable[V any] struct {
	m       map[string]*item[V]
	ring    []*item[V] // FIFO by insertion; nil where an item was removed
	head    int        // index of the oldest slot
	n       int        // used slots, including nil holes
	cost    int64      // sum of the cost of the items in m
	maxCost int64
}

func newRecentTable[V any](slots int, maxCost int64) recentTable[V] {
	return recentTable[V]{
		m:       make(map[string]*item[V], slots),
		ring:    make([]*item[V], slots),
		maxCost: maxCost,
	}
}

// get returns the item under key if it is still usable at now: not past
// its StaleUntil, not expired hard.
func (t *recentTable[V]) get(key string, now int64) *item[V] {
	it := t.m[key]
	if it == nil {
		return nil
	}
	if now >= it.stale || it.expired() == ExpireHard {
		t.remove(it)
		return nil
	}
	return it
}

// peek returns the item under key, usable or not.
func (t *recentTable[V]) peek(key string) *item[V] { return t.m[key] }

// put adds it, replacing any item under the same key, and pushes out the
// oldest items while the table is over its bounds. The newest item stays
// even when it alone exceeds the cost bound.
func (t *recentTable[V]) put(it *item[V]) {
	if old := t.m[it.key]; old != nil {
		t.remove(old)
	}
	if t.n == len(t.ring) {
		t.popOldest()
	}
	it.slot = (t.head + t.n) % len(t.ring)
	t.ring[it.slot] = it
	t.n++
	t.m[it.key] = it
	t.cost += it.cost
	for t.cost > t.maxCost && len(t.m) > 1 {
		t.popOldest()
	}
}

// del removes the item under key, if any.
func (t *recentTable[V]) del(key string) {
	if it := t.m[key]; it != nil {
		t.remove(it)
	}
}

func (t *recentTable[V]) remove(it *item[V]) {
	if t.m[it.key] == it {
		delete(t.m, it.key)
		t.cost -= it.cost
	}
	if it.slot >= 0 && t.ring[it.slot] == it {
		t.ring[it.slot] = nil
	}
	it.slot = -1
}

func (t *recentTable[V]) popOldest() {
	for t.n > 0 {
		it := t.ring[t.head]
		t.ring[t.head] = nil
		t.head = (t.head + 1) % len(t.ring)
		t.n--
		if it != nil {
			it.slot = -1
			if t.m[it.key] == it {
				delete(t.m, it.key)
				t.cost -= it.cost
			}
			return
		}
	}
}

func (t *recentTable[V]) len() int { return len(t.m) }
