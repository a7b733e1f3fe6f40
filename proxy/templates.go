package proxy

import (
	"bytes"
	"hash/maphash"
	"sync"

	"fragcache/fragment"
	"fragcache/metrics"
)

// templateCache keeps parsed page templates keyed by a per-process keyed
// 128-bit hash of the page body, so an unchanged shell is parsed once. A
// hit is confirmed by comparing the bytes; a body is admitted on its
// second sighting, so pages that never repeat (a timestamp in every
// answer) do not churn the cache. It is bounded by a byte budget and safe
// for concurrent use.
type templateCache struct {
	seeds  [2]maphash.Seed
	budget int64
	m      *metrics.Metrics

	// mu protects entries, seen and cost.
	mu      sync.RWMutex
	entries map[[2]uint64]*tplEntry
	seen    map[[2]uint64]struct{}
	cost    int64
}

type tplEntry struct {
	body []byte
	tpl  *fragment.Template
	err  error // what Parse reported, counted again on every use
}

// maxSeen bounds the set of bodies seen once.
const maxSeen = 1 << 16

func newTemplateCache(budget int64, m *metrics.Metrics) *templateCache {
	return &templateCache{
		seeds:   [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		budget:  budget,
		m:       m,
		entries: make(map[[2]uint64]*tplEntry),
		seen:    make(map[[2]uint64]struct{}),
	}
}

// get returns the template of body, parsing it when it is not cached.
// body is not retained unless it is admitted (then a copy is kept).
func (c *templateCache) get(body []byte, lim fragment.Limits) (*fragment.Template, error) {
	k := [2]uint64{maphash.Bytes(c.seeds[0], body), maphash.Bytes(c.seeds[1], body)}
	if lim.Stream {
		// The same body analysed for streaming is another template, under
		// another key.
		k[1] ^= 1
	}
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if ok && bytes.Equal(e.body, body) {
		c.m.TemplateHits.Inc()
		return e.tpl, e.err
	}
	c.m.TemplateMisses.Inc()
	tpl, err := fragment.Parse(body, lim)
	cost := tplCost(body, tpl)
	if cost > c.budget/8 {
		return tpl, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, again := c.seen[k]; !again {
		if len(c.seen) >= maxSeen {
			clear(c.seen)
		}
		c.seen[k] = struct{}{}
		return tpl, err
	}
	delete(c.seen, k)
	if old, ok := c.entries[k]; ok {
		c.cost -= tplCost(old.body, old.tpl)
	}
	for key, old := range c.entries { // random order: evict arbitrary entries
		if c.cost+cost <= c.budget {
			break
		}
		c.cost -= tplCost(old.body, old.tpl)
		delete(c.entries, key)
	}
	c.entries[k] = &tplEntry{body: append([]byte(nil), body...), tpl: tpl, err: err}
	c.cost += cost
	return tpl, err
}

// tplCost is what a cached template holds: its body, its parse and the
// memos of its includes.
func tplCost(body []byte, tpl *fragment.Template) int64 {
	return int64(len(body)) + int64(tpl.Size()) + memoCost(tpl) + 128
}
