package proxy

import (
	"math"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/l2"
)

func mustResolve(t *testing.T, r *reach, src string) target {
	t.Helper()
	tg, err := r.resolve("/", src)
	if err != nil {
		t.Fatalf("resolve %q: %v", src, err)
	}
	return tg
}

// The automatic tags of a fragment, and the tags a purge of a URL or a
// prefix records, meet: a purge names what the fragment carries.
func TestAutoTags(t *testing.T) {
	r, err := newReach("http://app:8080", []string{"cdn.example"})
	if err != nil {
		t.Fatal(err)
	}
	tg := mustResolve(t, r, "/widgets/weather/today/hourly/extra?city=Paris")
	news := &rule{FragmentRule: FragmentRule{Name: "news", Match: "/widgets"}}
	got := autoTagIDs(nil, &tg, news)
	want := []string{
		"url:http://app:8080/widgets/weather/today/hourly/extra",
		"path:http://app:8080/widgets",
		"path:http://app:8080/widgets/weather",
		"path:http://app:8080/widgets/weather/today",
		"path:http://app:8080/widgets/weather/today/hourly",
		"rule:news",
		"all",
	}
	if len(got) != len(want) {
		t.Fatalf("%d automatic tags, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i] != l2.TagOf(w) {
			t.Errorf("tag %d is not %q", i, w)
		}
	}
	if n := len(autoTagIDs(nil, &tg, &rule{})); n != len(want)-1 {
		t.Errorf("an unnamed rule: %d tags, want %d (no rule tag)", n, len(want)-1)
	}

	for _, tc := range []struct {
		prefix, tag string
		ok          bool
	}{
		{"/widgets", "path:http://app:8080/widgets", true},
		{"/widgets/", "path:http://app:8080/widgets", true},
		{"/widgets/weather/today/hourly", "path:http://app:8080/widgets/weather/today/hourly", true},
		{"http://cdn.example/img", "path:http://cdn.example:80/img", true},
		{"/a/b/c/d/e", "", false},    // 5 segments
		{"/", "", false},             // no segment
		{"/a//b", "", false},         // an empty segment
		{"/a?x=1", "", false},        // a query
		{"http://evil/a", "", false}, // not allowed
	} {
		tag, err := prefixTag(r, tc.prefix)
		if (err == nil) != tc.ok || tag != tc.tag {
			t.Errorf("prefixTag(%q) = %q, %v; want %q ok=%v", tc.prefix, tag, err, tc.tag, tc.ok)
		}
		if tc.ok && tc.prefix[0] == '/' && !hasID(autoTagIDs(nil, &tg, nil), l2.TagOf(tc.tag)) {
			t.Errorf("the prefix %q matches no tag of %s", tc.prefix, tg.url)
		}
	}
	short := mustResolve(t, r, "/x/")
	if ids := autoTagIDs(nil, &short, nil); len(ids) != 3 || ids[1] != l2.TagOf("path:http://app:8080/x") {
		t.Errorf("/x/: %d tags, want url, path /x, all", len(ids))
	}
}

// The tags an upstream names: header order, repeats dropped, the bounds of
// DESIGN rule 28 counted.
func TestUpstreamTags(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.Add("Surrogate-Key", "a b  a")
	h.Add("Surrogate-Key", "c")
	h.Add("xkey", "d\te")
	h.Add("Cache-Tag", " f, g ,,a")
	tags, dropped := upstreamTags(&h)
	if got, want := tags, []string{"a", "b", "c", "d", "e", "f", "g"}; !equalStrings(got, want) || dropped != 0 {
		t.Errorf("tags %q dropped %d, want %q and 0", got, dropped, want)
	}

	h.Reset()
	long := string(make([]byte, maxRecordTag+1))
	for i := range 70 {
		h.Add("Surrogate-Key", "t"+string(rune('A'+i%26))+string(rune('a'+i/26)))
	}
	h.Add("Cache-Tag", "x"+long[1:]+"y")
	tags, dropped = upstreamTags(&h)
	if len(tags) != maxRecordTags || dropped != 70-maxRecordTags+1 {
		t.Errorf("%d tags kept, %d dropped; want %d and %d", len(tags), dropped, maxRecordTags, 70-maxRecordTags+1)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// record returns a fragment record stored at µs with tags.
func record(at int64, tags ...string) *fragRecord {
	r := &fragRecord{stored: time.UnixMicro(at)}
	r.tagIDs = tagIDs(nil, tags)
	return r
}

// The verdicts of the purge table: stored at or before a purge of one of
// its tags is purged, soft or hard, and a hard purge is never weakened
// by a later soft one.
func TestPurgeVerdicts(t *testing.T) {
	pt := newPurgeTable(time.Minute, false)
	now := pt.clock.now()
	a, b := l2.TagOf("a"), l2.TagOf("b")
	before, after := record(now-10, "a", "z"), record(now+10, "a")
	other := record(now-10, "z")
	if v := pt.verdict(before); v != verdictKeep {
		t.Fatalf("no purges: %v", v)
	}
	pt.add([]l2.Tag{a}, false, now)
	for _, tc := range []struct {
		name string
		r    *fragRecord
		want purgeVerdict
	}{
		{"stored before a soft purge", before, verdictSoft},
		{"stored after it", after, verdictKeep},
		{"another tag", other, verdictKeep},
		{"stored at the purge", record(now, "a"), verdictSoft},
	} {
		if v := pt.verdict(tc.r); v != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, v, tc.want)
		}
	}
	pt.add([]l2.Tag{a, b}, true, now+5)
	pt.add([]l2.Tag{a}, false, now+20)
	if v := pt.verdict(before); v != verdictHard {
		t.Errorf("hard then soft: %v, want hard", v)
	}
	if v := pt.verdict(after); v != verdictSoft {
		t.Errorf("stored between the hard and the later soft purge: %v, want soft", v)
	}
	pt.setStaleTTL(0)
	if v := pt.verdict(after); v != verdictHard {
		t.Errorf("with --stale-ttl 0 a soft purge: %v, want hard", v)
	}
	if !pt.purgedSince(now, []l2.Tag{b}) || pt.purgedSince(now+6, []l2.Tag{b}) {
		t.Error("purgedSince disagrees with the records")
	}
	var nilTable *purgeTable
	if nilTable.verdict(before) != verdictKeep {
		t.Error("a nil table purged something")
	}
}

// A verdict of "keep" is cached per generation: a purge that concerns the
// record is seen at once, one that does not leaves it on the quick path.
func TestPurgeVerdictCache(t *testing.T) {
	pt := newPurgeTable(time.Minute, false)
	now := pt.clock.now()
	r := record(now-10, "a")
	pt.add([]l2.Tag{l2.TagOf("other")}, false, now)
	if v := pt.verdict(r); v != verdictKeep || r.judged != pt.gen.Load() {
		t.Fatalf("verdict %v, judged %d at generation %d", v, r.judged, pt.gen.Load())
	}
	pt.add([]l2.Tag{l2.TagOf("a")}, true, now)
	if v := pt.verdict(r); v != verdictHard {
		t.Errorf("after a purge of its tag: %v, want hard", v)
	}
	if got := testing.AllocsPerRun(100, func() { pt.verdict(record(now+100, "a")) }); got > 2 {
		t.Errorf("verdict allocates %.0f", got) // the record and its tag slice only
	}
}

// The table is bounded: records older than the retention are forgotten,
// and beyond maxRecords the oldest fold into a floor that still purges
// what they purged.
func TestPurgeTableBounded(t *testing.T) {
	pt := newPurgeTable(0, false)
	pt.maxRecords = 100
	now := pt.clock.now()
	old := record(now-1000, "t0")
	for i := range 1000 {
		pt.add([]l2.Tag{l2.TagOf("t" + itoa(i))}, i%2 == 1, now-999+int64(i))
	}
	if n := pt.records(); n > 100 {
		t.Errorf("%d records held, want at most 100", n)
	}
	if len(pt.tags) > 100 || len(pt.events) > 101 {
		t.Errorf("map %d, ring %d: want at most 100 and 101", len(pt.tags), len(pt.events))
	}
	if v := pt.verdict(old); v != verdictHard {
		t.Errorf("a record stored before a folded purge: %v, want hard", v)
	}
	// Age: a record past the retention is dropped without a floor.
	pt2 := newPurgeTable(0, false)
	ancient := pt2.clock.now() - pt2.retention - 10
	pt2.add([]l2.Tag{l2.TagOf("x")}, true, ancient)
	if n := pt2.records(); n != 0 || pt2.hardFloor != none {
		t.Errorf("a purge older than the retention: %d records, floor %d; want 0 and none", n, pt2.hardFloor)
	}
}

func itoa(i int) string {
	return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
}

// The L2's events and snapshots: merged, never replaced; a new epoch
// soft-purges what was stored before; while desynced nothing is fresh; a
// truncated snapshot's tail purges hard.
func TestPurgeTableMirror(t *testing.T) {
	pt := newPurgeTable(time.Minute, true)
	now := pt.clock.now()
	r := record(now-100, "a")
	if v := pt.verdict(r); v != verdictUnsure {
		t.Fatalf("before the first sync: %v, want unsure", v)
	}
	pt.Synced(l2.PurgeSnapshot{Now: time.UnixMicro(now), Epoch: "e1",
		Records: []l2.PurgeRecord{{Tag: l2.TagOf("a"), Mode: l2.Soft, At: time.UnixMicro(now - 50)}}})
	if v := pt.verdict(r); v != verdictSoft {
		t.Errorf("after a snapshot with its tag: %v, want soft", v)
	}
	pt.Purged(l2.PurgeEvent{Mode: l2.Hard, At: time.UnixMicro(now - 40), Epoch: "e1", Tags: []l2.Tag{l2.TagOf("a")}})
	if v := pt.verdict(r); v != verdictHard {
		t.Errorf("after a hard purge event: %v, want hard", v)
	}
	fresh := record(now+10, "b")
	pt.Desynced()
	if v := pt.verdict(fresh); v != verdictUnsure {
		t.Errorf("desynced: %v, want unsure", v)
	}
	// Redis lost everything: an empty set under a new epoch.
	pt.Synced(l2.PurgeSnapshot{Now: time.UnixMicro(now + 20), Epoch: "e2"})
	if v := pt.verdict(r); v != verdictHard {
		t.Errorf("after a restart of Redis, a hard-purged record: %v, want hard still", v)
	}
	if v := pt.verdict(fresh); v != verdictSoft {
		t.Errorf("after a restart of Redis, a record stored before: %v, want soft", v)
	}
	if v := pt.verdict(record(now+30, "b")); v != verdictKeep {
		t.Errorf("stored after the new epoch: %v, want keep", v)
	}
	pt.Synced(l2.PurgeSnapshot{Now: time.UnixMicro(now + 40), Epoch: "e2", Truncated: true,
		Records: []l2.PurgeRecord{{Tag: l2.TagOf("c"), Mode: l2.Soft, At: time.UnixMicro(now + 35)}}})
	if v := pt.verdict(record(now+32, "b")); v != verdictHard {
		t.Errorf("stored before the oldest record of a truncated snapshot: %v, want hard", v)
	}
	if q := pt.quick.Load(); q == math.MaxInt64 {
		t.Error("synced, yet every lookup takes the slow path")
	}
}

// The clock moves to Redis's: an observed Redis time sets the offset,
// from which the local reading never runs ahead.
func TestPurgeClock(t *testing.T) {
	var c purgeClock
	c.start = time.Now()
	redis := time.Now().Add(time.Hour)
	c.observe(redis)
	if d := c.now() - redis.UnixMicro(); d < 0 || d > time.Second.Microseconds() {
		t.Errorf("now after observing Redis an hour ahead: %dµs from it", d)
	}
	c.observe(time.Time{})
	if d := c.now() - redis.UnixMicro(); d < 0 || d > time.Second.Microseconds() {
		t.Error("a zero observation moved the clock")
	}
}
