package l2

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fragcache/internal/redistest"
)

// Tests against a real redis-server (internal/redistest): exclusivity and
// expiry of the fill lock, wake-ups across clients, the purge fence, the
// decoder's rejections as Redis stores them, the breaker with Redis
// stopped and paused, memory per entry and TTLs. Each client here stands
// for one fragcache replica.

// replicas returns n clients of s.
func replicas(t *testing.T, s *redistest.Server, n int, edit ...func(*Config)) ([]*Client, []*recorder) {
	t.Helper()
	cs, rs := make([]*Client, n), make([]*recorder, n)
	for i := range cs {
		cs[i], rs[i] = newClient(t, s.URL(), edit...)
	}
	return cs, rs
}

func TestLockIsExclusiveAcrossReplicas(t *testing.T) {
	s := redistest.Start(t)
	cs, _ := replicas(t, s, 3)
	ctx := context.Background()
	for round := range 5 {
		key := fmt.Sprintf("exclusive %d", round)
		h := hashKey(key)
		var won atomic.Int64
		var mu sync.Mutex
		var winner *Lock
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 60 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				l, ttl, err := cs[i%3].tryLock(ctx, key, h)
				if err != nil {
					t.Errorf("tryLock: %v", err)
					return
				}
				if l != nil {
					won.Add(1)
					mu.Lock()
					winner = l
					mu.Unlock()
				} else if ttl <= 0 || ttl > LockTTL {
					t.Errorf("loser told the holder's TTL is %v, want (0, %v]", ttl, LockTTL)
				}
			}()
		}
		close(start)
		wg.Wait()
		if n := won.Load(); n != 1 {
			t.Fatalf("round %d: %d of 60 concurrent attempts on 3 replicas took the lock, want 1", round, n)
		}
		if err := winner.Release(ctx, Outcome{Kind: Abandoned}); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
}

// TestOneFetchClusterWide: 30 callers on 3 replicas ask for one cold key at
// once; one takes the lock and fills it 200 ms later, every other one is
// woken by its publish long before the lock would expire, and each
// replica has exactly one subscriber connection whatever its waiters.
func TestOneFetchClusterWide(t *testing.T) {
	s := redistest.Start(t)
	cs, rs := replicas(t, s, 3)
	ctx := context.Background()
	var fetches atomic.Int64
	var wg sync.WaitGroup
	var woken atomic.Int64
	begin := time.Now()
	start := make(chan struct{})
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[i%3]
			<-start
			a, err := c.Acquire(ctx, "cold")
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			if a.Lock == nil {
				if a.Woken != Filled {
					t.Errorf("woken with %v, want filled", a.Woken)
				}
				if lk, err := c.Get(ctx, "cold"); err != nil || lk.Status != Hit || string(lk.Entry.Body) != "filled" {
					t.Errorf("Get after wake = %v %q, %v; want the filled entry", lk.Status, lk.Entry.Body, err)
				}
				woken.Add(1)
				return
			}
			fetches.Add(1)
			time.Sleep(200 * time.Millisecond) // the fetch
			if r, err := a.Lock.Set(ctx, entry("filled", time.Minute, time.Minute)); err != nil || r != StoredFresh {
				t.Errorf("Set = %v, %v", r, err)
			}
			if err := a.Lock.Release(ctx, Outcome{Kind: Filled}); err != nil {
				t.Errorf("Release: %v", err)
			}
		}()
	}
	close(start)
	// While they wait: one subscriber connection per replica, not per waiter.
	eventually(t, 2*time.Second, "29 waiters registered", func() bool {
		return cs[0].w.len()+cs[1].w.len()+cs[2].w.len() == 29
	})
	if n := pubsubClients(t, s); n != 3 {
		t.Errorf("%d pub/sub connections with 29 waiters on 3 replicas, want 3", n)
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	if n := woken.Load(); n != 29 {
		t.Fatalf("%d callers woken, want 29", n)
	}
	if elapsed > 1500*time.Millisecond {
		t.Fatalf("waiters ended after %v; a publish should wake them right after the 200 ms fetch, not at the %v lock expiry", elapsed, LockTTL)
	}
	var filled int64
	for _, r := range rs {
		filled += r.waits[WaitFilled].Load()
	}
	if filled != 29 {
		t.Errorf("lock waits counted filled %d times, want 29", filled)
	}
	for _, c := range cs {
		if n := c.w.len(); n != 0 {
			t.Errorf("%d watchers left after every Acquire returned", n)
		}
	}
}

func pubsubClients(t *testing.T, s *redistest.Server) int {
	t.Helper()
	list, _ := s.MustDo("CLIENT", "LIST", "TYPE", "pubsub").(string)
	return strings.Count(list, "\n")
}

// TestLockExpiresWhenHolderStops: a holder that renews keeps the lock past
// its TTL; once it stops renewing (its process dies: the client is closed
// without Release), a waiter on another replica takes over within LockTTL
// plus a little, without polling Redis in a loop.
func TestLockExpiresWhenHolderStops(t *testing.T) {
	s := redistest.Start(t)
	holder, _ := newClient(t, s.URL())
	waiter, rec := newClient(t, s.URL())
	ctx := context.Background()
	acquire(t, holder, ctx, "k")

	type answer struct {
		a   Acquired
		err error
		at  time.Time
	}
	got := make(chan answer, 1)
	go func() {
		a, err := waiter.Acquire(ctx, "k")
		got <- answer{a, err, time.Now()}
	}()
	select {
	case r := <-got:
		t.Fatalf("waiter got %+v, %v while the holder renews its lock", r.a, r.err)
	case <-time.After(LockTTL + 1500*time.Millisecond):
	}
	stopped := time.Now()
	holder.Close() // a dead holder: no renewal, no release
	var r answer
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("waiter did not take over within 5 s of the holder stopping")
	}
	if r.err != nil || r.a.Lock == nil {
		t.Fatalf("waiter got %+v, %v; want the lock", r.a, r.err)
	}
	defer r.a.Lock.Release(ctx, Outcome{Kind: Abandoned})
	if d := r.at.Sub(stopped); d > LockTTL+500*time.Millisecond {
		t.Fatalf("took over %v after the holder stopped, want within %v", d, LockTTL+500*time.Millisecond)
	}
	if n := rec.waits[WaitExpired].Load(); n != 1 {
		t.Errorf("lock waits counted expired %d times, want 1", n)
	}
	// About 7 s of waiting: a handful of attempts, not a busy loop.
	if n := rec.count(OpLock, ResultOK); n > 12 {
		t.Errorf("waiter sent %d lock requests in about 7 s, want a handful", n)
	}
}

func TestReleaseNeverDeletesAnotherHoldersLock(t *testing.T) {
	s := redistest.Start(t)
	cs, _ := replicas(t, s, 2)
	ctx := context.Background()
	a := acquire(t, cs[0], ctx, "k")
	lockKey := cs[0].ks.key(kindLock, hashKey("k"))
	a.stopOnce.Do(func() { close(a.stop) }) // a stalls: no more renewals
	<-a.done
	s.MustDo("PEXPIRE", lockKey, "1")
	time.Sleep(5 * time.Millisecond)
	b := acquire(t, cs[1], ctx, "k")
	if err := a.Release(ctx, Outcome{Kind: Filled}); err != nil {
		t.Fatalf("late Release: %v", err)
	}
	if v := s.MustDo("GET", lockKey); v != b.token {
		t.Fatalf("after the late holder's Release the lock holds %v, want the new holder's token", v)
	}
	if l, _, err := cs[0].tryLock(ctx, "k", hashKey("k")); err != nil || l != nil {
		t.Fatalf("third attempt took the lock (%v, %v) while the new holder has it", l, err)
	}
	if err := b.Release(ctx, Outcome{Kind: Filled}); err != nil {
		t.Fatal(err)
	}
	if v := s.MustDo("EXISTS", lockKey); v != int64(0) {
		t.Fatalf("lock still exists after its holder released it")
	}
}

func TestWaitersLearnFailureAndBypass(t *testing.T) {
	s := redistest.Start(t)
	cs, rs := replicas(t, s, 2)
	ctx := context.Background()
	for _, tc := range []struct {
		kind EventKind
		hint HintKind
		wait WaitResult
	}{{Failed, HintFailed, WaitFailed}, {Bypassed, HintBypass, WaitFilled}} {
		t.Run(tc.kind.String(), func(t *testing.T) {
			key := "outcome " + tc.kind.String()
			l := acquire(t, cs[0], ctx, key)
			got := make(chan Acquired, 1)
			go func() {
				a, err := cs[1].Acquire(ctx, key)
				if err != nil {
					t.Errorf("Acquire: %v", err)
				}
				got <- a
			}()
			eventually(t, 2*time.Second, "waiter registered", func() bool { return cs[1].w.len() == 1 })
			time.Sleep(20 * time.Millisecond) // past its first attempt
			before := rs[1].waits[tc.wait].Load()
			if err := l.Release(ctx, Outcome{Kind: tc.kind, For: 5 * time.Second}); err != nil {
				t.Fatal(err)
			}
			var a Acquired
			select {
			case a = <-got:
			case <-time.After(time.Second):
				t.Fatal("waiter not woken within 1 s of the release")
			}
			if a.Lock != nil || a.Woken != tc.kind || time.Until(a.Until) < 4*time.Second || time.Until(a.Until) > 5*time.Second {
				t.Fatalf("waiter got %+v; want %v for about 5 s", a, tc.kind)
			}
			if n := rs[1].waits[tc.wait].Load() - before; n != 1 {
				t.Errorf("lock wait %v counted %d times, want 1", tc.wait, n)
			}
			lk, err := cs[1].Get(ctx, key)
			if err != nil || lk.Status != Miss || lk.Hint.Kind != tc.hint || time.Until(lk.Hint.Until) < 4*time.Second {
				t.Fatalf("Get = %+v, %v; want a miss with the %v hint", lk, err, tc.hint)
			}
			if d := time.Since(lk.Hint.Since); d < 0 || d > 5*time.Second {
				t.Errorf("hint recorded %v ago, want just now", d)
			}
		})
	}
}

// TestPurgeFencesAFetchInFlight: a purge recorded by another replica after a
// fetch started keeps that fetch's answer from being stored as fresh, and
// reaches every replica's Listener at once.
func TestPurgeFencesAFetchInFlight(t *testing.T) {
	s := redistest.Start(t)
	cs, rs := replicas(t, s, 2)
	ctx := context.Background()
	tag := TagOf("url:http://app/widgets/orders")
	for _, tc := range []struct {
		mode Mode
		want SetResult
		get  Status
	}{{Soft, StoredStale, Stale}, {Hard, NotStored, Miss}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			key := "fenced " + tc.mode.String()
			l := acquire(t, cs[0], ctx, key)
			defer l.Release(ctx, Outcome{Kind: Filled})
			sent := time.Now()
			at, err := cs[1].Purge(ctx, []Tag{tag}, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			if !at.After(l.Start) {
				t.Fatalf("purge at %v, not after the lock's start %v", at, l.Start)
			}
			r, err := l.Set(ctx, entry("pre-purge content", time.Minute, time.Minute, tag, TagOf("all")))
			if err != nil || r != tc.want {
				t.Fatalf("Set after a %v purge = %v, %v; want %v", tc.mode, r, err, tc.want)
			}
			if lk, err := cs[1].Get(ctx, key); err != nil || lk.Status != tc.get {
				t.Fatalf("Get = %v, %v; want %v", lk.Status, err, tc.get)
			}
			// Both replicas hear of it.
			for i, rec := range rs {
				eventually(t, time.Second, "purge event", func() bool {
					ps, _, _ := rec.state()
					for _, p := range ps {
						if p.At.Equal(at) && p.Mode == tc.mode && len(p.Tags) == 1 && p.Tags[0] == tag {
							return true
						}
					}
					return false
				})
				if d := time.Since(sent); d > 500*time.Millisecond {
					t.Errorf("replica %d heard of the purge %v after it was sent", i, d)
				}
			}
		})
	}
	// A fetch started after the purge stores fresh again.
	time.Sleep(2 * time.Millisecond)
	l := acquire(t, cs[0], ctx, "after")
	defer l.Release(ctx, Outcome{Kind: Filled})
	if r, err := l.Set(ctx, entry("new", time.Minute, time.Minute, tag)); err != nil || r != StoredFresh {
		t.Fatalf("Set after the purges = %v, %v; want stored_fresh", r, err)
	}
}

// TestCorruptValuesAreMisses: whatever sits under an entry key that is not
// an entry of that key (another version, another key, trailing bytes, a
// value of another application) is a miss, never served.
func TestCorruptValuesAreMisses(t *testing.T) {
	s := redistest.Start(t)
	c, rec := newClient(t, s.URL(), func(cfg *Config) { cfg.MaxBodySize = 64 })
	ctx := context.Background()
	for _, tc := range corruptCases() {
		if len(tc.v) == 0 {
			continue // Redis stores an empty string; covered by "short"
		}
		t.Run(tc.name, func(t *testing.T) {
			s.MustDo("SET", c.ks.key(kindEntry, hashKey("k")), string(tc.v), "PX", "60000")
			before := rec.count(OpGet, ResultCorrupt)
			lk, err := c.Get(ctx, "k")
			if err != nil || lk.Status != Corrupt || lk.Entry.Body != nil {
				t.Fatalf("Get = %+v, %v; want corrupt with no entry", lk, err)
			}
			if n := rec.count(OpGet, ResultCorrupt) - before; n != 1 {
				t.Fatalf("counted corrupt %d times, want 1", n)
			}
		})
	}
	// The control: the same key holding its own entry is a hit.
	good := entry("ok", time.Minute, time.Minute)
	good.StoredAt = time.Now()
	s.MustDo("SET", c.ks.key(kindEntry, hashKey("k")), string(encode("k", good)), "PX", "60000")
	if lk, err := c.Get(ctx, "k"); err != nil || lk.Status != Hit {
		t.Fatalf("Get of a good value = %v, %v; want hit", lk.Status, err)
	}
}

// TestBreakerRedisStopped: with Redis gone a caller pays at most one
// timeout, then nothing; when Redis is back the client uses it again
// within 5 s, resubscribes and reads the purge set again (a new epoch:
// Redis lost its data).
func TestBreakerRedisStopped(t *testing.T) {
	s := redistest.Start(t)
	c, rec := newClient(t, s.URL(), func(cfg *Config) { cfg.Timeout = DefaultTimeout })
	ctx := context.Background()
	_, synced, _ := rec.state()
	epoch := synced[len(synced)-1].Epoch
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatalf("Get with Redis up: %v", err)
	}

	s.Stop()
	start := time.Now()
	_, err := c.Get(ctx, "k")
	if d := time.Since(start); err == nil || d > DefaultTimeout+100*time.Millisecond {
		t.Fatalf("first Get with Redis stopped = %v after %v; want an error within one timeout", err, d)
	}
	var slow int
	start = time.Now()
	for range 200 {
		t0 := time.Now()
		_, err := c.Get(ctx, "k")
		if !errors.Is(err, ErrBreakerOpen) {
			t.Fatalf("Get with the breaker open = %v, want ErrBreakerOpen", err)
		}
		if time.Since(t0) > 5*time.Millisecond {
			slow++
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond || slow > 2 {
		t.Fatalf("200 Gets with Redis down took %v (%d over 5 ms); want next to nothing", d, slow)
	}
	if c.Up() || rec.up.Load() {
		t.Fatal("client reports up with Redis stopped")
	}
	if n := rec.count(OpGet, ResultBreakerOpen); n < 200 {
		t.Errorf("counted breaker_open %d times, want 200", n)
	}
	_, _, desynced := rec.state()
	if desynced == 0 {
		eventually(t, 3*time.Second, "subscription loss reported", func() bool { _, _, d := rec.state(); return d > 0 })
	}

	s.Restart()
	back := time.Now()
	eventually(t, 5*time.Second, "Redis used again", func() bool {
		_, err := c.Get(ctx, "k")
		return err == nil
	})
	if d := time.Since(back); d > 5*time.Second {
		t.Fatalf("used again %v after Redis came back", d)
	}
	if !rec.up.Load() || rec.ups.Load() < 2 {
		t.Errorf("Observer.Up: up=%v after %d ups, want up again", rec.up.Load(), rec.ups.Load())
	}
	eventually(t, 5*time.Second, "resubscribed with a new epoch", func() bool {
		_, synced, _ := rec.state()
		return c.subUp.Load() && synced[len(synced)-1].Epoch != epoch
	})
}

// TestClientPauseCostsAtMostOneTimeout: Redis that stops answering (CLIENT
// PAUSE) costs each caller at most one timeout, never more per call, and
// is used again once it answers.
func TestClientPauseCostsAtMostOneTimeout(t *testing.T) {
	s := redistest.Start(t)
	c, _ := newClient(t, s.URL(), func(cfg *Config) { cfg.Timeout = DefaultTimeout })
	ctx := context.Background()
	const callers, pause = 4, 1500 * time.Millisecond
	bound := DefaultTimeout + 75*time.Millisecond // scheduling slack on a shared machine
	s.Pause(pause)
	paused := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var worst time.Duration
	var slow, calls int
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(paused) < pause-200*time.Millisecond {
				t0 := time.Now()
				_, _ = c.Get(ctx, "k")
				d := time.Since(t0)
				mu.Lock()
				calls++
				worst = max(worst, d)
				if d > DefaultTimeout/2 {
					slow++
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if worst > bound {
		t.Errorf("slowest call during CLIENT PAUSE took %v, want at most one timeout (%v + slack)", worst, DefaultTimeout)
	}
	if slow > callers {
		t.Errorf("%d of %d calls paid a timeout, want at most one per caller (%d)", slow, calls, callers)
	}
	eventually(t, pause+5*time.Second, "Redis used again after the pause", func() bool {
		_, err := c.Get(ctx, "k")
		return err == nil
	})
	if d := time.Since(paused); d > pause+5*time.Second {
		t.Errorf("used again %v after the pause began (pause %v)", d, pause)
	}
}

// TestMemoryPerEntry (DESIGN rule 37): Redis's used_memory after 100 000
// distinct 1 KiB entries, minus the empty baseline, is within 1.5x of their
// key and value bytes, and every entry key has a TTL. The entries go
// through the real store script, pipelined.
func TestMemoryPerEntry(t *testing.T) {
	s := redistest.Start(t)
	c, _ := newClient(t, s.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := acquire(t, c, ctx, "memory test lock")
	l.Release(ctx, Outcome{Kind: Abandoned})
	usedMemory := func() int64 {
		n, err := strconv.ParseInt(s.Info("memory")["used_memory"], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := c.sc.set.Load(ctx, c.rdb).Err(); err != nil {
		t.Fatal(err)
	}
	base := usedMemory()

	const n, batch = 100_000, 1000
	body := []byte(strings.Repeat("x", 1024))
	tags := []Tag{TagOf("all"), TagOf("rule:widgets"), TagOf("url:http://app/w")}
	var payload int64
	for i := 0; i < n; i += batch {
		pipe := c.rdb.Pipeline()
		for j := i; j < i+batch; j++ {
			key := "shared|http://app:8080/widgets/item?id=" + strconv.Itoa(j)
			e := Entry{Body: body, FreshUntil: time.Now().Add(time.Hour), StaleUntil: time.Now().Add(2 * time.Hour), StoredAt: l.Start, Tags: tags}
			keys, args := c.setArgs(key, hashKey(key), &e, 2*time.Hour, l.epoch)
			payload += int64(len(keys[0]) + encodedSize(key, &e))
			c.sc.set.EvalSha(ctx, pipe, keys, args...)
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil {
			t.Fatalf("pipeline: %v", err)
		}
		for _, cmd := range cmds {
			if v, _ := cmd.(interface{ Int64() (int64, error) }).Int64(); v != 0 {
				t.Fatalf("store script answered %d, want 0 (stored fresh)", v)
			}
		}
	}
	grown := usedMemory() - base
	ratio := float64(grown) / float64(payload)
	t.Logf("used_memory grew %d bytes for %d bytes of keys and values: %.3fx (%.0f bytes per entry)",
		grown, payload, ratio, float64(grown)/n)
	if ratio > 1.5 {
		t.Errorf("used_memory grew %.2fx the key and value bytes, want at most 1.5x", ratio)
	}
	ks := s.Info("keyspace")["db0"] // keys=…,expires=…,avg_ttl=…
	keys, expires := keyspaceCounts(t, ks)
	// The entries, plus the epoch (no TTL by design).
	if keys != n+1 || expires != n {
		t.Errorf("keyspace %q: want %d keys of which %d with a TTL (all but the epoch)", ks, n+1, n)
	}
}

func keyspaceCounts(t *testing.T, ks string) (keys, expires int) {
	t.Helper()
	for f := range strings.SplitSeq(ks, ",") {
		k, v, _ := strings.Cut(f, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "keys":
			keys = n
		case "expires":
			expires = n
		}
	}
	return keys, expires
}

// TestEveryKeyHasATTL: after entries, locks, hints and purges, every key of
// the prefix has a TTL except the purge set and the epoch, and an entry's
// TTL ends no later than its stale-until.
func TestEveryKeyHasATTL(t *testing.T) {
	s := redistest.Start(t)
	c, _ := newClient(t, s.URL())
	ctx := context.Background()
	held := acquire(t, c, ctx, "held")
	defer held.Release(ctx, Outcome{Kind: Abandoned})
	stale := map[string]time.Time{}
	for i, o := range []Outcome{{Kind: Filled}, {Kind: Failed, For: time.Minute}, {Kind: Bypassed, For: time.Minute}} {
		key := "key " + strconv.Itoa(i)
		l := acquire(t, c, ctx, key)
		e := entry("b", time.Duration(i+1)*time.Minute, time.Minute, TagOf("all"))
		if _, err := l.Set(ctx, e); err != nil {
			t.Fatal(err)
		}
		stale[c.ks.key(kindEntry, hashKey(key))] = e.StaleUntil
		if err := l.Release(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Purge(ctx, []Tag{TagOf("x")}, Soft); err != nil {
		t.Fatal(err)
	}
	all, _ := s.MustDo("KEYS", "*").([]any)
	if len(all) < 7 { // 3 entries, 2 hints, a lock, purges, epoch
		t.Fatalf("only %d keys: %v", len(all), all)
	}
	for _, k := range all {
		key := k.(string)
		if !strings.HasPrefix(key, "fragcache:v1:") {
			t.Errorf("key %q outside the prefix", key)
		}
		ttl := s.MustDo("PTTL", key).(int64)
		switch key {
		case c.ks.purges, c.ks.epoch:
			if ttl != -1 {
				t.Errorf("%s has a TTL (%d ms), want none", key, ttl)
			}
			continue
		}
		if ttl <= 0 {
			t.Errorf("%s has no TTL", key)
		}
		if su, ok := stale[key]; ok && time.Now().Add(time.Duration(ttl)*time.Millisecond).After(su.Add(time.Second)) {
			t.Errorf("entry %s lives %d ms, past its stale-until", key, ttl)
		}
	}
}

// TestResubscribes: a subscription that is cut (CLIENT KILL) is reported
// lost, re-established with a fresh purge snapshot, and wakes waiters
// again.
func TestResubscribes(t *testing.T) {
	s := redistest.Start(t)
	cs, rs := replicas(t, s, 2)
	ctx := context.Background()
	_, before, _ := rs[1].state()
	s.MustDo("CLIENT", "KILL", "TYPE", "pubsub")
	eventually(t, 3*time.Second, "desynced then synced again", func() bool {
		_, synced, desynced := rs[1].state()
		return desynced >= 1 && len(synced) > len(before) && cs[1].subUp.Load()
	})
	l := acquire(t, cs[0], ctx, "k")
	got := make(chan Acquired, 1)
	go func() {
		a, _ := cs[1].Acquire(ctx, "k")
		got <- a
	}()
	eventually(t, 2*time.Second, "waiter registered", func() bool { return cs[1].w.len() == 1 })
	time.Sleep(20 * time.Millisecond)
	l.Set(ctx, entry("v", time.Minute, time.Minute))
	l.Release(ctx, Outcome{Kind: Filled})
	select {
	case a := <-got:
		if a.Woken != Filled {
			t.Fatalf("woken with %+v, want filled", a)
		}
	case <-time.After(time.Second):
		t.Fatal("waiter not woken within 1 s after the resubscription")
	}
}
