package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"fragcache/cachestore"
	"fragcache/l2"
)

// tagLoader answers every key with a record tagged as a fetch from the
// upstream would tag it: its automatic tags and two of its own.
type tagLoader struct{ r *reach }

func (l tagLoader) Load(_ context.Context, key string, _ *loadArg, _ bool) (fragEntry, error) {
	t, err := l.r.resolve("/", key)
	if err != nil {
		return fragEntry{}, err
	}
	v := &fragRecord{body: []byte("fragment"), fresh: time.Now().Add(time.Hour), serveScope: scopeShared, stored: time.Now()}
	v.stale = v.fresh
	v.tags = []string{"item-" + key, "section"}
	v.tagIDs = tagIDs(autoTagIDs(nil, &t, &rule{FragmentRule: FragmentRule{Name: "widgets"}}), v.tags)
	return fragEntry{Value: v, Cost: 200, FreshUntil: v.fresh, StaleUntil: v.stale}, nil
}

// BenchmarkPurgedLookup is the check of DESIGN "Invalidation" that a purge
// costs no lookup anything: 100 000 stored fragments (9 tags each), looked
// up in random order and judged as the composer judges them, against a
// table with no purge recorded and one with 10 000 distinct tags purged,
// in turn, three times. "Flat" is the figure at 10 000 within 1.1x of the
// figure at 0 (DESIGN rule 28); heap-MiB is the live heap without and
// with the table of 10 000 tags. judge/* is the look at the table itself,
// which a fragment stored before the newest purge takes once per
// generation (compare 10 with 10 000: an empty table answers without
// hashing a tag):
//
//	go test -run '^$' -bench PurgedLookup -benchtime 2000000x ./proxy/
func BenchmarkPurgedLookup(b *testing.B) {
	const fragments, purged = 100_000, 10_000
	r, err := newReach("http://app", nil)
	if err != nil {
		b.Fatal(err)
	}
	st, err := cachestore.New[*fragRecord, *loadArg](cachestore.Config{MaxCost: 1 << 30, MaxLoads: 256}, tagLoader{r}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	keys := make([]string, fragments)
	for i := range keys {
		keys[i] = fmt.Sprintf("/widgets/w%d/item", i)
		if res := st.LookupIn(0, keys[i], nil); res.Flight != nil {
			<-res.Flight.Done()
		}
	}
	st.Wait()
	order := rand.Perm(fragments)
	lookups := func(pt *purgeTable) func(b *testing.B) {
		return func(b *testing.B) {
			hits, i := 0, 0
			for b.Loop() {
				res := st.LookupIn(0, keys[order[i%fragments]], nil)
				if res.Entry.Value != nil && pt.verdict(res.Entry.Value) == verdictKeep {
					hits++
				}
				i++
			}
			if hits != i {
				b.Fatalf("%d of %d lookups were judged kept hits", hits, i)
			}
		}
	}
	sample, _ := tagLoader{r}.Load(context.Background(), keys[0], nil, false)
	judge := func(pt *purgeTable) func(b *testing.B) {
		return func(b *testing.B) {
			s := sample.Value.stored.UnixMicro() - 1 // before every purge: the table is looked at
			for b.Loop() {
				if pt.judge(s, sample.Value.tagIDs) != verdictKeep {
					b.Fatal("purged")
				}
			}
		}
	}
	heap := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc) / (1 << 20)
	}
	newTable := func(n int) *purgeTable {
		pt := newPurgeTable(time.Minute, false)
		at := pt.clock.now()
		for i := range n {
			pt.add([]l2.Tag{l2.TagOf(fmt.Sprintf("gone-%d", i))}, i%2 == 0, at)
		}
		return pt
	}

	none := newTable(0)
	h0 := heap()
	many := newTable(purged)
	h1 := heap()
	for _, k := range keys { // every fragment judged once since the purges
		many.verdict(st.LookupIn(0, k, nil).Entry.Value)
	}
	for range 3 {
		b.Run("lookup/purged=0", func(b *testing.B) { lookups(none)(b); b.ReportMetric(h0, "heap-MiB") })
		b.Run(fmt.Sprintf("lookup/purged=%d", purged), func(b *testing.B) { lookups(many)(b); b.ReportMetric(h1, "heap-MiB") })
	}
	b.Run("judge/purged=0", judge(none))
	b.Run("judge/purged=10", judge(newTable(10)))
	b.Run(fmt.Sprintf("judge/purged=%d", purged), judge(many))
	if n := many.records(); n != purged {
		b.Fatalf("%d records, want %d", n, purged)
	}
}
