package l2

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Unit tests of the encoding and script logic against miniredis; the
// behaviour that depends on a real server (timing, breaker, memory,
// pub/sub across processes) is tested in redis_test.go.

func newMini(t *testing.T, edit ...func(*Config)) (*miniredis.Miniredis, *Client, *recorder) {
	t.Helper()
	m := miniredis.RunT(t)
	c, rec := newClient(t, "redis://"+m.Addr(), edit...)
	return m, c, rec
}

func TestGetStatuses(t *testing.T) {
	m, c, rec := newMini(t)
	ctx := context.Background()
	l := acquire(t, c, ctx, "fresh")
	if r, err := l.Set(ctx, entry("F", time.Minute, time.Minute, TagOf("all"))); err != nil || r != StoredFresh {
		t.Fatalf("Set = %v, %v; want stored_fresh", r, err)
	}
	l.Release(ctx, Outcome{Kind: Filled})
	l = acquire(t, c, ctx, "stale")
	e := entry("S", -time.Second, time.Minute)
	if r, err := l.Set(ctx, e); err != nil || r != StoredFresh {
		t.Fatalf("Set = %v, %v", r, err)
	}
	l.Release(ctx, Outcome{Kind: Filled})
	m.Set(c.ks.key(kindEntry, hashKey("corrupt")), "not an entry")

	for _, tc := range []struct {
		key  string
		want Status
		body string
	}{{"fresh", Hit, "F"}, {"stale", Stale, "S"}, {"absent", Miss, ""}, {"corrupt", Corrupt, ""}} {
		lk, err := c.Get(ctx, tc.key)
		if err != nil || lk.Status != tc.want || string(lk.Entry.Body) != tc.body {
			t.Errorf("Get(%q) = %v %q, %v; want %v %q", tc.key, lk.Status, lk.Entry.Body, err, tc.want, tc.body)
		}
	}
	lk, _ := c.Get(ctx, "fresh")
	if len(lk.Entry.Tags) != 1 || lk.Entry.Tags[0] != TagOf("all") {
		t.Errorf("tags = %v, want [all]", lk.Entry.Tags)
	}
	if d := time.Since(lk.Entry.StoredAt); d < 0 || d > 5*time.Second {
		t.Errorf("StoredAt = %v, %v ago; want the lock's start", lk.Entry.StoredAt, d)
	}
	for _, want := range []struct {
		r Result
		n int64
	}{{ResultHit, 2}, {ResultStale, 1}, {ResultMiss, 1}, {ResultCorrupt, 1}} {
		if got := rec.count(OpGet, want.r); got < want.n {
			t.Errorf("get %v counted %d, want at least %d", want.r, got, want.n)
		}
	}
}

func TestSetTTLAndLimits(t *testing.T) {
	m, c, _ := newMini(t, func(cfg *Config) { cfg.PurgeRetention = time.Hour; cfg.MaxBodySize = 100 })
	ctx := context.Background()
	l := acquire(t, c, ctx, "k")
	defer l.Release(ctx, Outcome{Kind: Abandoned})

	if _, err := l.Set(ctx, entry("x", time.Second, 9*time.Second)); err != nil {
		t.Fatal(err)
	}
	if ttl := m.TTL(c.ks.key(kindEntry, hashKey("k"))); ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Errorf("TTL = %v, want the 10s to stale-until", ttl)
	}
	if _, err := l.Set(ctx, entry("x", time.Minute, 48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ttl := m.TTL(c.ks.key(kindEntry, hashKey("k"))); ttl != time.Hour {
		t.Errorf("TTL = %v, want it capped at PurgeRetention (1h)", ttl)
	}
	if r, err := l.Set(ctx, entry("x", -2*time.Second, time.Second)); err != nil || r != Expired {
		t.Errorf("Set past stale-until = %v, %v; want expired", r, err)
	}
	if _, err := l.Set(ctx, Entry{Body: make([]byte, 101), StaleUntil: time.Now().Add(time.Minute)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Set of 101 bytes = %v, want ErrTooLarge", err)
	}
	if _, err := l.Set(ctx, Entry{Tags: make([]Tag, MaxTags+1), StaleUntil: time.Now().Add(time.Minute)}); !errors.Is(err, ErrTooManyTags) {
		t.Errorf("Set of MaxTags+1 tags = %v, want ErrTooManyTags", err)
	}
}

func TestFenceInScript(t *testing.T) {
	_, c, _ := newMini(t)
	ctx := context.Background()
	a, b := TagOf("url:a"), TagOf("url:b")

	for _, tc := range []struct {
		name  string
		purge func(l *Lock)
		want  SetResult
	}{
		{"no purge", func(*Lock) {}, StoredFresh},
		{"purge of another tag", func(*Lock) { c.Purge(ctx, []Tag{b}, Hard) }, StoredFresh},
		{"soft purge after start", func(*Lock) { c.Purge(ctx, []Tag{a}, Soft) }, StoredStale},
		{"hard purge after start", func(*Lock) { c.Purge(ctx, []Tag{a}, Hard) }, NotStored},
		{"epoch changed", func(*Lock) { c.rdb.Del(ctx, c.ks.epoch) }, StoredStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "fence " + tc.name
			time.Sleep(2 * time.Millisecond) // earlier purges strictly before this start
			l := acquire(t, c, ctx, key)
			defer l.Release(ctx, Outcome{Kind: Filled})
			tc.purge(l)
			r, err := l.Set(ctx, entry("body", time.Minute, time.Minute, a))
			if err != nil || r != tc.want {
				t.Fatalf("Set = %v, %v; want %v", r, err, tc.want)
			}
			lk, err := c.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			want := map[SetResult]Status{StoredFresh: Hit, StoredStale: Stale, NotStored: Miss}[tc.want]
			if lk.Status != want {
				t.Fatalf("Get after %v = %v, want %v", r, lk.Status, want)
			}
			if want == Stale && !lk.Entry.FreshUntil.Equal(lk.Entry.StoredAt) {
				t.Fatalf("stale write: fresh-until %v, want stored-at %v", lk.Entry.FreshUntil, lk.Entry.StoredAt)
			}
		})
	}
}

func TestPurgeRecordsAndSnapshot(t *testing.T) {
	_, c, _ := newMini(t)
	ctx := context.Background()
	a, b := TagOf("a"), TagOf("b")
	t1, err := c.Purge(ctx, []Tag{a, b}, Soft)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	t2, err := c.Purge(ctx, []Tag{a}, Hard)
	if err != nil || !t2.After(t1) {
		t.Fatalf("second purge at %v, %v; want after %v", t2, err, t1)
	}
	s, err := c.ReadPurges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[PurgeRecord]bool{}
	for _, r := range s.Records {
		got[r] = true
	}
	for _, want := range []PurgeRecord{{a, Soft, t1}, {b, Soft, t1}, {a, Hard, t2}} {
		if !got[want] {
			t.Errorf("snapshot %+v lacks %+v", s.Records, want)
		}
	}
	if len(s.Records) != 3 || s.Truncated || s.Epoch == "" || s.Now.Before(t2) {
		t.Errorf("snapshot = %+v", s)
	}
	if ttl := c.rdb.PTTL(ctx, c.ks.purges).Val(); ttl != -1 {
		t.Errorf("purge set TTL = %v, want none", ttl)
	}
}
