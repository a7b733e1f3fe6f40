package cachestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

func TestMissThenHit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{}
		s := newStore(t, Config{}, l, nil)
		if got := load(t, s, "a").Value; got != "a" {
			t.Fatalf("loaded value = %v, want a", got)
		}
		// Without waiting for ristretto: the side table serves it.
		if r := s.LookupIn(0, "a", nil); r.Status != Hit || r.Entry.Value != "a" {
			t.Fatalf("Lookup after load = %v %v, want hit a", r.Status, r.Entry.Value)
		}
		s.Wait()
		if r := s.LookupIn(0, "a", nil); r.Status != Hit || r.Entry.Value != "a" {
			t.Fatalf("Lookup after Wait = %v %v, want hit a", r.Status, r.Entry.Value)
		}
		if n := l.calls.Load(); n != 1 {
			t.Fatalf("loads = %d, want 1", n)
		}
	})
}

func TestColdKeyCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		obs := &countingObserver{}
		s := newStore(t, Config{}, l, obs)
		const n = 1000
		var (
			wg       sync.WaitGroup
			detached atomic.Int64
			flights  sync.Map
			joined   atomic.Int64
			got      atomic.Int64
		)
		for range n {
			wg.Go(func() {
				r := s.LookupIn(0, "cold", func() any { detached.Add(1); return "arg" })
				if r.Status != Miss || r.Flight == nil {
					t.Errorf("Lookup = %v, want miss with a flight", r.Status)
					return
				}
				if r.Joined {
					joined.Add(1)
				}
				flights.Store(r.Flight, true)
				if e, err := waitFlight(context.Background(), r.Flight); err == nil && e.Value == "cold" {
					got.Add(1)
				}
			})
		}
		synctest.Wait() // every lookup has answered, the load is blocked
		close(l.gate)
		wg.Wait()
		nf := 0
		flights.Range(func(any, any) bool { nf++; return true })
		for _, c := range []struct {
			what      string
			got, want int64
		}{
			{"loads", l.calls.Load(), 1},
			{"detach calls", detached.Load(), 1},
			{"distinct flights", int64(nf), 1},
			{"joined lookups", joined.Load(), n - 1},
			{"waiters served", got.Load(), n},
		} {
			if c.got != c.want {
				t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
			}
		}
		if l.args[0] != "arg" {
			t.Errorf("loader arg = %v, want the detach result", l.args[0])
		}
	})
}

func TestCancelledWaiterDoesNotFailOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		s := newStore(t, Config{}, l, nil)
		first := s.LookupIn(0, "k", nil)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := waitFlight(ctx, first.Flight); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("first waiter: err = %v, want deadline exceeded", err)
		}
		second := s.LookupIn(0, "k", nil)
		if !second.Joined || second.Flight != first.Flight {
			t.Fatalf("second lookup did not join the running load: %+v", second)
		}
		close(l.gate)
		e, err := waitFlight(context.Background(), second.Flight)
		if err != nil || e.Value != "k" {
			t.Fatalf("second waiter got %v, %v; want k, nil", e.Value, err)
		}
		if l.ctxErrs[0] != nil {
			t.Fatalf("loader context ended with %v although only a waiter gave up", l.ctxErrs[0])
		}
	})
}

func TestStaleServedDuringOneRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answer, _ := versioned(10*time.Second, time.Minute)
		l := &fakeLoader{answer: answer}
		s := newStore(t, Config{}, l, nil)
		load(t, s, "k")
		time.Sleep(11 * time.Second) // stale now
		l.gate = make(chan struct{})
		var detached atomic.Int64
		for i := range 100 {
			r := s.LookupIn(0, "k", func() any { detached.Add(1); return nil })
			if r.Status != Updating || r.Entry.Value != int64(1) {
				t.Fatalf("lookup %d while refreshing = %v %v, want updating 1", i, r.Status, r.Entry.Value)
			}
		}
		synctest.Wait()
		if n, r := l.calls.Load(), l.refresh.Load(); n != 2 || r != 1 {
			t.Fatalf("loads = %d (refreshes %d), want 2 (1)", n, r)
		}
		if n := detached.Load(); n != 1 {
			t.Fatalf("detach calls = %d, want 1", n)
		}
		l.gate <- struct{}{}
		synctest.Wait()
		if r := s.LookupIn(0, "k", nil); r.Status != Hit || r.Entry.Value != int64(2) {
			t.Fatalf("lookup after refresh = %v %v, want hit 2", r.Status, r.Entry.Value)
		}
	})
}

func TestOneRefreshPerExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answer, _ := versioned(10*time.Second, time.Minute)
		l := &fakeLoader{answer: answer}
		s := newStore(t, Config{}, l, nil)
		load(t, s, "k")
		const expiries = 5
		for round := 1; round <= expiries; round++ {
			// Lookups every 100ms from many goroutines through one fresh
			// period and into the stale window.
			var wg sync.WaitGroup
			for range 10 {
				wg.Go(func() {
					for range 120 {
						s.LookupIn(0, "k", nil)
						time.Sleep(100 * time.Millisecond)
					}
				})
			}
			wg.Wait()
			synctest.Wait()
			if got := l.refresh.Load(); got != int64(round) {
				t.Fatalf("after expiry %d: refreshes = %d, want %d", round, got, round)
			}
		}
	})
}

func TestBackoffSpacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("boom")
		l := &fakeLoader{answer: func(context.Context, string, any, bool) (Entry[any], error) {
			return Entry[any]{}, boom
		}}
		s := newStore(t, Config{BackoffMin: time.Second, BackoffMax: 8 * time.Second}, l, nil)
		const step = 10 * time.Millisecond
		end := time.Now().Add(time.Minute)
		for time.Now().Before(end) {
			r := s.LookupIn(0, "k", nil)
			switch r.Status {
			case Miss:
				if _, err := waitFlight(context.Background(), r.Flight); !errors.Is(err, boom) {
					t.Fatalf("flight error = %v, want boom", err)
				}
			case Failed:
				if !errors.Is(r.Err, boom) {
					t.Fatalf("Failed with %v, want boom", r.Err)
				}
			default:
				t.Fatalf("Lookup of a failing key = %v", r.Status)
			}
			time.Sleep(step)
		}
		starts := l.starts()
		base := time.Second
		for i := 1; i < len(starts); i++ {
			gap := starts[i].Sub(starts[i-1])
			lo, hi := base*8/10, base+step
			if gap < lo || gap > hi {
				t.Errorf("gap before load %d = %v, want within [%v, %v]", i, gap, lo, hi)
			}
			base = min(2*base, 8*time.Second)
		}
		// 1+2+4+8*n within a minute: about 10 loads, never one per lookup.
		if n := len(starts); n < 8 || n > 12 {
			t.Errorf("loads in a minute = %d, want about 10", n)
		}
	})
}

// refused is a failure that names when to try again.
type refused struct{ wait time.Duration }

func (r refused) Error() string             { return "refused" }
func (r refused) RetryAfter() time.Duration { return r.wait }

func TestRetryAfterReplacesBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		boom := errors.New("boom")
		l := &fakeLoader{answer: func(context.Context, string, any, bool) (Entry[any], error) {
			// Two real failures (backoff 1 s, then 2 s), then refusals that
			// ask for 300 ms each: they must neither wait out a doubled
			// backoff nor lengthen it.
			if n.Add(1) <= 2 {
				return Entry[any]{}, boom
			}
			return Entry[any]{}, fmt.Errorf("wrapped: %w", refused{300 * time.Millisecond})
		}}
		s := newStore(t, Config{BackoffMin: time.Second, BackoffMax: time.Minute}, l, nil)
		const step = 10 * time.Millisecond
		end := time.Now().Add(10 * time.Second)
		for time.Now().Before(end) {
			if r := s.LookupIn(0, "k", nil); r.Status == Miss {
				waitFlight(context.Background(), r.Flight)
			}
			time.Sleep(step)
		}
		starts := l.starts()
		if len(starts) < 4 {
			t.Fatalf("loads = %d, want more", len(starts))
		}
		for i := 3; i < len(starts); i++ {
			if gap := starts[i].Sub(starts[i-1]); gap < 300*time.Millisecond || gap > 300*time.Millisecond+2*step {
				t.Errorf("gap after a refusal = %v, want the 300ms it asked for", gap)
			}
		}
	})
}

func TestFailedRefreshKeepsServingStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		answer, _ := versioned(10*time.Second, time.Minute)
		l := &fakeLoader{answer: func(ctx context.Context, key string, arg any, refresh bool) (Entry[any], error) {
			if fail.Load() {
				return Entry[any]{}, errors.New("origin down")
			}
			return answer(ctx, key, arg, refresh)
		}}
		s := newStore(t, Config{}, l, nil)
		load(t, s, "k")
		fail.Store(true)
		time.Sleep(11 * time.Second)
		if r := s.LookupIn(0, "k", nil); r.Status != Updating {
			t.Fatalf("first stale lookup = %v, want updating", r.Status)
		}
		synctest.Wait() // the refresh failed
		for range 50 {
			r := s.LookupIn(0, "k", nil)
			if r.Status != Stale || r.Entry.Value != int64(1) {
				t.Fatalf("lookup in backoff = %v %v, want stale 1", r.Status, r.Entry.Value)
			}
			time.Sleep(10 * time.Millisecond) // 0.5s: inside the first backoff
		}
		if n := l.refresh.Load(); n != 1 {
			t.Fatalf("refreshes during backoff = %d, want 1", n)
		}
		fail.Store(false)
		time.Sleep(time.Second) // backoff over
		if r := s.LookupIn(0, "k", nil); r.Status != Updating {
			t.Fatalf("lookup after backoff = %v, want updating", r.Status)
		}
		synctest.Wait()
		if r := s.LookupIn(0, "k", nil); r.Status != Hit || r.Entry.Value != int64(2) {
			t.Fatalf("lookup after recovery = %v %v, want hit 2", r.Status, r.Entry.Value)
		}
	})
}

func TestRefreshShedWhenQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &countingObserver{}
		l := &fakeLoader{}
		s := newStore(t, Config{RefreshQueue: 1, RefreshWorkers: 1}, l, obs)
		for _, k := range []string{"a", "b", "c"} {
			load(t, s, k)
		}
		time.Sleep(11 * time.Second)
		l.gate = make(chan struct{})
		if r := s.LookupIn(0, "a", nil); r.Status != Updating {
			t.Fatalf("a = %v, want updating (running)", r.Status)
		}
		synctest.Wait() // the worker is blocked in a's refresh
		if r := s.LookupIn(0, "b", nil); r.Status != Updating {
			t.Fatalf("b = %v, want updating (queued)", r.Status)
		}
		if r := s.LookupIn(0, "c", nil); r.Status != Stale || r.Entry.Value != "c" {
			t.Fatalf("c = %v %v, want stale c (shed)", r.Status, r.Entry.Value)
		}
		if n := obs.refreshShed.Load(); n != 1 {
			t.Fatalf("shed refreshes = %d, want 1", n)
		}
		if n := obs.queueLen.Load(); n != 1 {
			t.Fatalf("reported queue length = %d, want 1", n)
		}
		close(l.gate)
		synctest.Wait()
		// The shed refresh is tried again by the next lookup.
		if r := s.LookupIn(0, "c", nil); r.Status != Updating {
			t.Fatalf("c after the queue drained = %v, want updating", r.Status)
		}
		synctest.Wait()
		if n := l.refresh.Load(); n != 3 {
			t.Fatalf("refreshes = %d, want 3", n)
		}
	})
}

func TestShedAtLoadLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		obs := &countingObserver{}
		s := newStore(t, Config{MaxLoads: 1, LoadQueue: 1}, l, obs)
		a := s.LookupIn(0, "a", nil)
		// Beyond the load limit a miss waits in the load queue.
		q := s.LookupIn(0, "q", func() any { return "q's arg" })
		if q.Status != Miss || q.Flight == nil {
			t.Fatalf("lookup beyond the load limit = %+v, want a queued miss with a flight", q)
		}
		if j := s.LookupIn(0, "q", nil); j.Status != Miss || !j.Joined || j.Flight != q.Flight {
			t.Fatalf("lookup of the queued key = %+v, want it joined", j)
		}
		// Beyond the queue it is shed.
		var detached bool
		r := s.LookupIn(0, "b", func() any { detached = true; return nil })
		if r.Status != Shed || r.Flight != nil || !errors.Is(r.Err, ErrShed) || detached {
			t.Fatalf("lookup beyond the load queue = %+v (detached %v), want shed, ErrShed, no flight, no detach", r, detached)
		}
		if n := obs.loadShed.Load(); n != 1 {
			t.Errorf("LoadShed reported %d times, want 1", n)
		}
		if j := s.LookupIn(0, "a", nil); j.Status != Miss || !j.Joined {
			t.Fatalf("lookup of the running key = %+v, want a joined miss", j)
		}
		close(l.gate)
		waitFlight(context.Background(), a.Flight)
		if _, err := waitFlight(context.Background(), q.Flight); err != nil {
			t.Fatalf("queued load: %v", err)
		}
		if got := l.argOf("q"); got != "q's arg" {
			t.Errorf("queued load got arg %v", got)
		}
		load(t, s, "b")
	})
}

// TestLoadQueueTakesGroupsInTurn: one group's thousand queued loads do not
// delay another group's first load by more than one turn (rule 22).
func TestLoadQueueTakesGroupsInTurn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		s := newStore(t, Config{MaxLoads: 1}, l, nil)
		first := s.LookupIn(1, "big-0", nil)
		for i := 1; i < 1000; i++ {
			s.LookupIn(1, fmt.Sprintf("big-%d", i), nil)
		}
		other := s.LookupIn(2, "small", nil)
		close(l.gate)
		waitFlight(context.Background(), first.Flight)
		waitFlight(context.Background(), other.Flight)
		order := l.order()
		pos := slices.Index(order, "small")
		if pos < 0 || pos > 2 {
			t.Fatalf("the other page's load ran as load %d of %d, want within the first three", pos+1, len(order))
		}
		synctest.Wait()
		if n := len(l.order()); n != 1001 {
			t.Errorf("%d loads ran, want all 1001", n)
		}
	})
}

func TestNoStoreBypass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
			e := ttlEntry(key, time.Minute, 0)
			e.NoStore = true
			return e, nil
		}}
		s := newStore(t, Config{}, l, nil)
		l.gate = make(chan struct{})
		first := s.LookupIn(0, "k", nil)
		joined := s.LookupIn(0, "k", nil)
		close(l.gate)
		for _, r := range []Result[any, any]{first, joined} {
			if e, err := waitFlight(context.Background(), r.Flight); err != nil || e.Value != "k" {
				t.Fatalf("waiter got %v, %v; want k", e.Value, err)
			}
		}
		s.Wait()
		r := s.LookupIn(0, "k", nil)
		if r.Status != Bypass || r.Flight == nil || r.Joined {
			t.Fatalf("lookup of an uncacheable key = %+v, want bypass with a new flight", r)
		}
		waitFlight(context.Background(), r.Flight)
		if n := l.calls.Load(); n != 2 {
			t.Fatalf("loads = %d, want 2", n)
		}
		time.Sleep(61 * time.Second)
		if r := s.LookupIn(0, "k", nil); r.Status != Miss {
			t.Fatalf("lookup after the bypass ended = %v, want miss", r.Status)
		}
		synctest.Wait()
	})
}

func TestNoStoreRemovesStaleCopy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var noStore atomic.Bool
		l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
			e := ttlEntry(key, 10*time.Second, time.Minute)
			e.NoStore = noStore.Load()
			return e, nil
		}}
		s := newStore(t, Config{}, l, nil)
		load(t, s, "k")
		s.Wait()
		noStore.Store(true)
		time.Sleep(11 * time.Second)
		if r := s.LookupIn(0, "k", nil); r.Status != Updating {
			t.Fatalf("stale lookup = %v, want updating", r.Status)
		}
		synctest.Wait()
		if r := s.LookupIn(0, "k", nil); r.Status != Bypass {
			t.Fatalf("lookup after an uncacheable refresh = %v, want bypass", r.Status)
		}
		synctest.Wait()
	})
}

func TestStoreKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
			e := ttlEntry(key, time.Minute, 0)
			e.StoreKey = "shared|x"
			return e, nil
		}}
		s := newStore(t, Config{}, l, nil)
		if got := load(t, s, "user:1|x").Value; got != "user:1|x" {
			t.Fatalf("waiter got %v, want the loaded entry", got)
		}
		if r := s.LookupIn(0, "shared|x", nil); r.Status != Hit || r.Entry.Value != "user:1|x" {
			t.Fatalf("lookup of the StoreKey = %v %v, want hit", r.Status, r.Entry.Value)
		}
		s.Wait()
		if r := s.LookupIn(0, "shared|x", nil); r.Status != Hit {
			t.Fatalf("lookup of the StoreKey after Wait = %v, want hit", r.Status)
		}
		if r := s.LookupIn(0, "user:1|x", nil); r.Status != Miss {
			t.Fatalf("lookup of the looked-up key = %v, want miss (nothing stored there)", r.Status)
		}
		synctest.Wait()
	})
}

func TestExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		s := newStore(t, Config{}, l, nil)
		r := s.LookupIn(0, "k", nil)
		l.gate <- struct{}{}
		waitFlight(context.Background(), r.Flight)
		s.Wait()
		steps := []struct {
			after  time.Duration
			want   Status
			joined bool
		}{
			{9 * time.Second, Hit, false},
			{2 * time.Second, Updating, false},  // 11s: stale, refresh blocked
			{58 * time.Second, Updating, false}, // 69s
			{2 * time.Second, Miss, true},       // 71s: past StaleUntil, joins the refresh
		}
		for i, st := range steps {
			time.Sleep(st.after)
			r := s.LookupIn(0, "k", nil)
			if r.Status != st.want || r.Joined != st.joined {
				t.Fatalf("step %d: lookup = %v (joined %v), want %v (joined %v)", i, r.Status, r.Joined, st.want, st.joined)
			}
		}
		close(l.gate)
	})
}

func TestLoadTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		s := newStore(t, Config{LoadTimeout: 2 * time.Second}, l, nil)
		start := time.Now()
		r := s.LookupIn(0, "k", nil)
		_, err := waitFlight(context.Background(), r.Flight)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("flight error = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("load ended after %v, want 2s", d)
		}
		if r := s.LookupIn(0, "k", nil); r.Status != Failed || !errors.Is(r.Err, context.DeadlineExceeded) {
			t.Fatalf("lookup after a timeout = %v %v, want failed", r.Status, r.Err)
		}
	})
}

func TestLoaderPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &countingObserver{}
		l := &fakeLoader{answer: func(context.Context, string, any, bool) (Entry[any], error) {
			panic("loader bug")
		}}
		s := newStore(t, Config{}, l, obs)
		_, err := waitFlight(context.Background(), s.LookupIn(0, "k", nil).Flight)
		var pe *PanicError
		if !errors.As(err, &pe) || pe.Value != "loader bug" || len(pe.Stack) == 0 {
			t.Fatalf("flight error = %v, want a *PanicError with a stack", err)
		}
		if r := s.LookupIn(0, "k", nil); r.Status != Failed {
			t.Fatalf("lookup after a panic = %v, want failed (backoff)", r.Status)
		}
		last, _ := obs.backoffErr.Load().(error)
		if n := obs.backoffs.Load(); n != 1 || !errors.As(last, &pe) {
			t.Fatalf("backoffs reported = %d (last %v), want 1 with the *PanicError", n, last)
		}
	})
}

func TestRefreshAhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		answer, _ := versioned(10*time.Second, time.Minute)
		l := &fakeLoader{answer: answer}
		s := newStore(t, Config{RefreshAhead: 0.2}, l, nil)
		load(t, s, "k")
		time.Sleep(7 * time.Second)
		if r := s.LookupIn(0, "k", nil); r.Status != Hit || l.refresh.Load() != 0 {
			t.Fatalf("lookup before the refresh-ahead window = %v (refreshes %d), want hit, none", r.Status, l.refresh.Load())
		}
		time.Sleep(2 * time.Second) // 9s: in the last 20% of 10s
		for range 10 {
			if r := s.LookupIn(0, "k", nil); r.Status != Hit {
				t.Fatalf("lookup in the refresh-ahead window = %v, want hit", r.Status)
			}
		}
		synctest.Wait()
		if n := l.refresh.Load(); n != 1 {
			t.Fatalf("refreshes = %d, want 1", n)
		}
		time.Sleep(2 * time.Second) // 11s: the first entry would be stale
		if r := s.LookupIn(0, "k", nil); r.Status != Hit || r.Entry.Value != int64(2) {
			t.Fatalf("lookup after the refresh-ahead = %v %v, want hit 2", r.Status, r.Entry.Value)
		}
	})
}

func TestCloseWaitsForEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{}
		s, err := New(Config{RefreshWorkers: 1, MaxLoads: 2}, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"s1", "s2"} {
			load(t, s, k)
		}
		time.Sleep(11 * time.Second)
		l.gate = make(chan struct{}) // loads now wait for their context
		miss := s.LookupIn(0, "m", nil)
		s.LookupIn(0, "s1", nil) // refresh running
		synctest.Wait()
		s.LookupIn(0, "s2", nil) // refresh queued behind it
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := miss.Flight.Result(); !errors.Is(err, ErrClosed) {
			t.Fatalf("running flight after Close: %v, want ErrClosed", err)
		}
		if r := s.LookupIn(0, "m", nil); r.Status != Shed || !errors.Is(r.Err, ErrClosed) {
			t.Fatalf("lookup after Close = %+v, want shed with ErrClosed", r)
		}
		if r := s.LookupIn(0, "s1", nil); r.Status != Shed {
			t.Fatalf("lookup of a stored key after Close = %v, want shed", r.Status)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		// synctest.Test fails if any goroutine of the store is left.
	})
}

func TestQueuedRefreshEndsOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{}
		s, err := New(Config{RefreshWorkers: 1, MaxLoads: 1}, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		load(t, s, "a")
		load(t, s, "b")
		s.Wait()
		time.Sleep(11 * time.Second)
		l.gate = make(chan struct{})
		s.LookupIn(0, "a", nil)
		synctest.Wait()
		s.LookupIn(0, "b", nil) // queued
		forget(s, "b")          // out of sight: the next lookup joins the queued refresh
		r := s.LookupIn(0, "b", nil)
		if r.Flight == nil || !r.Joined {
			t.Fatalf("lookup of an evicted key under refresh = %+v, want a joined flight", r)
		}
		s.Close()
		if _, err := r.Flight.Result(); !errors.Is(err, ErrClosed) {
			t.Fatalf("queued refresh after Close: %v, want ErrClosed", err)
		}
	})
}

func TestRejectedSetStillServed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &countingObserver{}
		l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
			e := ttlEntry(key, time.Minute, 0)
			e.Cost = 1 << 20 // larger than the whole budget: ristretto refuses it
			return e, nil
		}}
		s := newStore(t, Config{MaxCost: 1 << 16}, l, obs)
		load(t, s, "big")
		s.Wait()
		if n := obs.rejected.Load(); n != 1 {
			t.Fatalf("rejected sets = %d, want 1", n)
		}
		if r := s.LookupIn(0, "big", nil); r.Status != Hit {
			t.Fatalf("lookup after a rejected set = %v, want hit from the side table", r.Status)
		}
		if n := l.calls.Load(); n != 1 {
			t.Fatalf("loads = %d, want 1", n)
		}
	})
}

func TestMemoryPressureDegradesToMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &countingObserver{}
		l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
			e := ttlEntry(key, time.Minute, 0)
			e.Cost = 4096
			return e, nil
		}}
		// Room for about 16 entries in ristretto, 1 in the side table.
		s := newStore(t, Config{MaxCost: 1 << 16}, l, obs)
		const n = 200
		for i := range n {
			load(t, s, fmt.Sprint("k", i))
		}
		s.Wait()
		l.gate = make(chan struct{}) // hold the loads the next misses start
		defer close(l.gate)
		var hits, misses int
		for i := range n {
			r := s.LookupIn(0, fmt.Sprint("k", i), nil)
			switch r.Status {
			case Hit:
				hits++
			case Miss:
				misses++
			default:
				t.Fatalf("lookup under pressure = %+v, want hit or miss", r)
			}
		}
		if hits == 0 || hits > 30 || misses == 0 {
			t.Fatalf("hits %d, misses %d: want a few hits, the rest misses", hits, misses)
		}
		if obs.rejected.Load()+obs.evicted.Load() == 0 {
			t.Fatalf("no rejection or eviction reported under pressure")
		}
		if st := s.stats(); st.Recent > 1 || st.Cost > 1<<16 {
			t.Fatalf("stats under pressure = %+v, want the side table and ristretto within bounds", st)
		}
	})
}

func TestDetachOnlyWhenStarting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{}
		s := newStore(t, Config{}, l, nil)
		var calls int
		detach := func() any { calls++; return calls }
		r := s.LookupIn(0, "k", detach)
		waitFlight(context.Background(), r.Flight)
		s.LookupIn(0, "k", detach) // hit
		if calls != 1 {
			t.Fatalf("detach calls = %d, want 1", calls)
		}
		if l.args[0] != 1 {
			t.Fatalf("loader arg = %v, want 1", l.args[0])
		}
	})
}

// TestDuplicateNewSetRewritten covers ristretto refusing the second of two
// buffered Sets of a new key as a duplicate: the newer item must replace
// the one ristretto admitted.
func TestDuplicateNewSetRewritten(t *testing.T) {
	obs := &countingObserver{}
	s := newStore(t, Config{}, &fakeLoader{}, obs)
	v1 := s.newItem("k", ttlEntry("v1", time.Hour, 0))
	v2 := s.newItem("k", ttlEntry("v2", time.Hour, 0))
	s.cache.SetWithTTL("k", v1, v1.cost, time.Hour)
	s.Wait()
	s.mu.Lock()
	s.recent.put(v2)
	s.mu.Unlock()
	s.onReject(&ristretto.Item[*item[any]]{Value: v2})
	if r := s.LookupIn(0, "k", nil); r.Entry.Value != "v2" {
		t.Fatalf("after the rejected duplicate: %v, want v2", r.Entry.Value)
	}
	if n := obs.rejected.Load(); n != 0 {
		t.Fatalf("rejections reported = %d, want 0 (a duplicate is not a rejection)", n)
	}
}

func TestCloseDuringLookups(t *testing.T) {
	s, err := New(Config{}, &fakeLoader{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	load(t, s, "hot")
	s.Wait()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := s.LookupIn(0, "hot", nil)
				if r.Status != Hit && r.Status != Shed {
					t.Errorf("lookup during Close = %v, want hit or shed", r.Status)
					return
				}
				s.LookupIn(0, fmt.Sprint("cold", i), nil)
			}
		})
	}
	time.Sleep(10 * time.Millisecond) // let the lookups run: real concurrency is the point
	s.Close()
	if r := s.LookupIn(0, "hot", nil); r.Status != Shed || !errors.Is(r.Err, ErrClosed) {
		t.Errorf("lookup after Close = %+v, want shed with ErrClosed", r)
	}
	close(stop)
	wg.Wait()
}

// TestSideMapsBoundedInBytes: the failure and uncacheable records are
// keyed by values a visitor can choose (up to 8 KiB each); they stay
// within their byte bound however many distinct keys fail.
func TestSideMapsBoundedInBytes(t *testing.T) {
	long := strings.Repeat("k", 8<<10)
	s, err := New(Config{MaxCost: 8 << 20}, loaderFunc(func(ctx context.Context, key string, _ any, _ bool) (Entry[any], error) {
		if strings.HasPrefix(key, "nostore") {
			return Entry[any]{Value: 1, NoStore: true, FreshUntil: time.Now().Add(time.Minute)}, nil
		}
		return Entry[any]{}, errors.New("down")
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 3000 {
		for _, prefix := range []string{"fail", "nostore"} {
			r := s.LookupIn(0, fmt.Sprintf("%s%d%s", prefix, i, long), nil)
			if r.Flight != nil {
				<-r.Flight.Done()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, b := range map[string]int64{"failure": s.failBytes, "uncacheable": s.bypassBytes} {
		if b > s.sideBytes() {
			t.Errorf("%s records hold %d bytes, want at most %d", name, b, s.sideBytes())
		}
		if b == 0 {
			t.Errorf("no %s record kept", name)
		}
	}
	var sum int64
	for k := range s.fails {
		sum += int64(len(k)) + sideEntryBytes
	}
	if sum != s.failBytes {
		t.Errorf("failBytes %d, but the records sum to %d", s.failBytes, sum)
	}
}

// SetMaxCost changes the budget of a running store: stats reports it, and
// once new writes are applied the store holds no more than the lowered
// budget (ristretto evicts to make room for them); a raised budget admits
// more again. A budget that is not positive is refused and changes nothing.
func TestSetMaxCost(t *testing.T) {
	const cost = 1 << 10
	l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
		e := ttlEntry(key, time.Hour, time.Hour)
		e.Cost = cost
		return e, nil
	}}
	obs := &countingObserver{}
	s := newStore(t, Config{MaxCost: 1 << 20}, l, obs)
	for i := range 200 {
		load(t, s, fmt.Sprintf("old%d", i))
	}
	s.Wait()
	if got := s.stats().Cost; got < 150*cost {
		t.Fatalf("cost after 200 loads of %d bytes = %d, want most of them kept", cost, got)
	}

	for _, bad := range []int64{0, -1} {
		if err := s.SetMaxCost(bad); err == nil {
			t.Errorf("SetMaxCost(%d) = nil, want an error", bad)
		}
	}
	if got := s.stats().MaxCost; got != 1<<20 {
		t.Fatalf("MaxCost after refused budgets = %d, want 1MiB", got)
	}

	const lowered = 32 * cost
	if err := s.SetMaxCost(lowered); err != nil {
		t.Fatalf("SetMaxCost(%d): %v", lowered, err)
	}
	if got := s.stats().MaxCost; got != lowered {
		t.Errorf("Stats().MaxCost = %d, want %d", got, lowered)
	}
	// Each new key makes ristretto evict until it fits; its admission is
	// statistical, so a bounded number of new keys is allowed to get there.
	n := 0
	for ; n < 500 && s.stats().Cost > lowered; n++ {
		load(t, s, fmt.Sprintf("new%d", n))
		s.Wait()
	}
	if got := s.stats().Cost; got > lowered {
		t.Fatalf("cost %d after %d new keys, want at most the lowered budget %d", got, n, lowered)
	}
	if obs.evicted.Load() == 0 {
		t.Error("no eviction reported while the budget was lowered")
	}
	t.Logf("held %d bytes under the lowered budget after %d new keys", s.stats().Cost, n)

	if err := s.SetMaxCost(1 << 20); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		load(t, s, fmt.Sprintf("again%d", i))
	}
	s.Wait()
	if got := s.stats().Cost; got <= lowered {
		t.Errorf("cost %d after raising the budget and 100 loads, want above %d", got, lowered)
	}
	s.Close()
	if err := s.SetMaxCost(1 << 20); !errors.Is(err, ErrClosed) {
		t.Errorf("SetMaxCost after Close = %v, want ErrClosed", err)
	}
}
