//go:build !race

package cachestore

import (
	"testing"
	"time"
)

// TestLookupHitAllocs pins the hit path at zero allocations, with a detach
// closure capturing a local as the proxy passes one. The race detector
// changes allocation counts, hence the build tag.
func TestLookupHitAllocs(t *testing.T) {
	s := newStore(t, Config{}, &fakeLoader{}, nil)
	load(t, s, "k")
	s.Wait()
	local := 42
	for _, name := range []string{"ristretto", "side table"} {
		if name == "side table" {
			forget(s, "k")
			s.mu.Lock()
			s.recent.put(s.newItem("k", ttlEntry("k", time.Hour, time.Hour)))
			s.mu.Unlock()
		}
		allocs := testing.AllocsPerRun(1000, func() {
			if r := s.LookupIn(0, "k", func() any { return local }); r.Status != Hit {
				t.Fatalf("Lookup = %v, want hit", r.Status)
			}
		})
		if allocs != 0 {
			t.Errorf("hit from %s: %v allocations per Lookup, want 0", name, allocs)
		}
	}
}
