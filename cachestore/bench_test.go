package cachestore

import (
	"context"
	"flag"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// The hit path is measured against a bare ristretto Get on the same key
// set, with the same ristretto configuration and TTLs, in the same run:
//
//	go test -run '^$' -bench 'LookupHit|RistrettoGet' -cpu 2 ./cachestore/
//	go test -run HitRatio -cpu 2 -v ./cachestore/ -args -hitratio
//
// A hit must cost no more than twice a bare Get and allocate nothing.

const benchKeys = 1024

func benchKeySet() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "frag:other|https://app.example/widgets/" + strconv.Itoa(i)
	}
	return keys
}

func BenchmarkLookupHit(b *testing.B) {
	benchLookupHit(b)
}

func BenchmarkRistrettoGet(b *testing.B) {
	benchRistrettoGet(b)
}

var hitRatio = flag.Bool("hitratio", false, "run TestHitRatio")

// TestHitRatio runs the two benchmarks above alternately, five times each,
// and checks the median of hit ns/op over Get ns/op, which a shared machine
// disturbs less than two separate figures. It takes some seconds, so it
// runs only with -hitratio:
//
//	go test -run HitRatio -cpu 2 -v ./cachestore/ -args -hitratio
func TestHitRatio(t *testing.T) {
	if !*hitRatio {
		t.Skip("run with -hitratio")
	}
	var ratios, hits, gets []float64
	for range 5 {
		h := testing.Benchmark(benchLookupHit)
		g := testing.Benchmark(benchRistrettoGet)
		hn, gn := float64(h.T.Nanoseconds())/float64(h.N), float64(g.T.Nanoseconds())/float64(g.N)
		hits, gets, ratios = append(hits, hn), append(gets, gn), append(ratios, hn/gn)
		if h.AllocsPerOp() != 0 {
			t.Errorf("a hit allocates %d times", h.AllocsPerOp())
		}
	}
	r := median(ratios)
	t.Logf("hit %.1f ns/op, ristretto Get %.1f ns/op (medians), ratio %.2f (runs %.2f)", median(hits), median(gets), r, ratios)
	if r > 2 {
		t.Errorf("a hit costs %.2f times a bare ristretto Get, want at most 2", r)
	}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func benchLookupHit(b *testing.B) {
	keys := benchKeySet()
	s, err := New(Config{}, &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
		return ttlEntry(key, time.Hour, time.Hour), nil
	}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, k := range keys {
		load(b, s, k)
	}
	s.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		arg := 0
		for pb.Next() {
			r := s.LookupIn(0, keys[i%benchKeys], func() any { return arg })
			if r.Status != Hit {
				b.Fatalf("Lookup = %v, want hit", r.Status)
			}
			i++
		}
	})
}

func benchRistrettoGet(b *testing.B) {
	keys := benchKeySet()
	c, err := ristretto.NewCache(&ristretto.Config[string, *item[any]]{
		NumCounters: DefaultMaxCost / 4096 * 10,
		MaxCost:     DefaultMaxCost,
		BufferItems: 64,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, k := range keys {
		c.SetWithTTL(k, &item[any]{key: k}, 100, 2*time.Hour)
	}
	c.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok := c.Get(keys[i%benchKeys]); !ok {
				b.Fatal("Get missed")
			}
			i++
		}
	})
}

// BenchmarkLookupHitPopulation: the cost of a hit as the number of cached
// entries grows (keys drawn at random over all of them, entries of 1 KiB's
// cost), the store's share of the scaling curve in docs/performance.md:
//
//	go test -run '^$' -bench LookupHitPopulation -cpu 2 ./cachestore/
func BenchmarkLookupHitPopulation(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			keys := make([]string, n)
			for i := range keys {
				keys[i] = "frag:other|http://127.0.0.1:8080/frag/" + strconv.Itoa(i%100) + "?v=f" + strconv.Itoa(i/100)
			}
			s, err := New(Config{MaxCost: 3 << 30}, &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
				e := ttlEntry(key, time.Hour, time.Hour)
				e.Cost = 1 << 10
				return e, nil
			}}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			// A set ristretto dropped is loaded again until every key hits.
			for range 10 {
				missing := 0
				for _, k := range keys {
					if r := s.LookupIn(0, k, nil); r.Status == Miss {
						missing++
						if r.Flight != nil {
							_, _ = waitFlight(context.Background(), r.Flight)
						}
					}
				}
				s.Wait()
				if missing == 0 {
					break
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			var misses atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				x := uint64(time.Now().UnixNano()) | 1
				for pb.Next() {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					if s.LookupIn(0, keys[x%uint64(n)], nil).Status != Hit {
						misses.Add(1)
					}
				}
			})
			b.ReportMetric(float64(misses.Load())/float64(b.N), "misses/op")
		})
	}
}
