package cachestore

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// The hit path is measured against a bare ristretto Get on the same key
// set, with the same ristretto configuration and TTLs, in the same run:
//
//	go test -run '^$' -bench 'LookupHit|RistrettoGet' -cpu 2 ./cachestore/
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
	keys := benchKeySet()
	s, err := New(Config{}, &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry, error) {
		return ttlEntry(key, time.Hour, time.Hour), nil
	}})
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
			r := s.Lookup(keys[i%benchKeys], func() any { return arg })
			if r.Status != Hit {
				b.Fatalf("Lookup = %v, want hit", r.Status)
			}
			i++
		}
	})
}

func BenchmarkRistrettoGet(b *testing.B) {
	keys := benchKeySet()
	c, err := ristretto.NewCache(&ristretto.Config[string, *item]{
		NumCounters: DefaultMaxCost / 4096 * 10,
		MaxCost:     DefaultMaxCost,
		BufferItems: 64,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, k := range keys {
		c.SetWithTTL(k, &item{key: k}, 100, 2*time.Hour)
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
