package cachestore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// judgeBelow expires every value below v with e: the stand-in for a
// purge of everything stored before it.
func judgeBelow(v int64, e Expiry) func(any) Expiry {
	return func(x any) Expiry {
		if n, ok := x.(int64); ok && n < v {
			return e
		}
		return Keep
	}
}

// A soft expiry turns a fresh entry stale at once: every lookup serves it
// while exactly one refresh runs, and the refresh's answer is a hit.
func TestExpireSoftServesStaleDuringOneRefresh(t *testing.T) {
	for _, applied := range []bool{false, true} { // in the side table only, or in ristretto too
		t.Run(map[bool]string{false: "side table", true: "ristretto"}[applied], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				answer, _ := versioned(time.Hour, time.Hour)
				l := &fakeLoader{answer: answer}
				s := newStore(t, Config{}, l, nil)
				load(t, s, "k")
				if applied {
					s.Wait()
				}
				if got := s.Expire("k", judgeBelow(2, ExpireSoft)); got != ExpireSoft {
					t.Fatalf("Expire = %v, want soft", got)
				}
				l.gate = make(chan struct{})
				for i := range 50 {
					r := s.LookupIn(0, "k", nil)
					if r.Status != Updating || r.Entry.Value != int64(1) {
						t.Fatalf("lookup %d after a soft expiry = %v %v, want updating 1", i, r.Status, r.Entry.Value)
					}
				}
				if r := s.Peek("k", nil); applied && r.Status != Updating { // Peek asks ristretto only
					t.Fatalf("Peek after a soft expiry = %v, want updating", r.Status)
				}
				synctest.Wait()
				if n, r := l.calls.Load(), l.refresh.Load(); n != 2 || r != 1 {
					t.Fatalf("loads = %d (refreshes %d), want 2 (1)", n, r)
				}
				l.gate <- struct{}{}
				synctest.Wait()
				if r := s.LookupIn(0, "k", nil); r.Status != Hit || r.Entry.Value != int64(2) {
					t.Fatalf("lookup after the refresh = %v %v, want hit 2", r.Status, r.Entry.Value)
				}
				// The new entry is judged on its own: not expired.
				if got := s.Expire("k", judgeBelow(2, ExpireSoft)); got != Keep {
					t.Fatalf("Expire of the refreshed entry = %v, want keep", got)
				}
			})
		})
	}
}

// A hard expiry makes the entry gone: the next lookup misses and loads,
// and a flight started meanwhile never takes the expired entry for a
// fresh one.
func TestExpireHardMisses(t *testing.T) {
	for _, applied := range []bool{false, true} {
		t.Run(map[bool]string{false: "side table", true: "ristretto"}[applied], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				answer, _ := versioned(time.Hour, time.Hour)
				l := &fakeLoader{answer: answer}
				s := newStore(t, Config{}, l, nil)
				load(t, s, "k")
				if applied {
					s.Wait()
				}
				if got := s.Expire("k", judgeBelow(2, ExpireHard)); got != ExpireHard {
					t.Fatalf("Expire = %v, want hard", got)
				}
				if r := s.Peek("k", nil); r.Status != Miss || r.Entry.Value != nil {
					t.Fatalf("Peek after a hard expiry = %v %v, want miss", r.Status, r.Entry.Value)
				}
				if e := load(t, s, "k"); e.Value != int64(2) {
					t.Fatalf("load after a hard expiry = %v, want 2", e.Value)
				}
				if r := s.LookupIn(0, "k", nil); r.Status != Hit || r.Entry.Value != int64(2) {
					t.Fatalf("lookup after the reload = %v %v, want hit 2", r.Status, r.Entry.Value)
				}
				if n := l.calls.Load(); n != 2 {
					t.Fatalf("loads = %d, want 2", n)
				}
			})
		})
	}
}

// An expiry is never lowered, and a judge that keeps changes nothing.
func TestExpireNeverLowered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
			e := ttlEntry(key, time.Hour, time.Hour)
			e.Value = int64(1)
			return e, nil
		}}
		s := newStore(t, Config{}, l, nil)
		load(t, s, "k")
		s.Wait()
		if got := s.Expire("k", judgeBelow(0, ExpireHard)); got != Keep {
			t.Fatalf("Expire by a judge that keeps = %v, want keep", got)
		}
		if r := s.LookupIn(0, "k", nil); r.Status != Hit {
			t.Fatalf("lookup = %v, want hit", r.Status)
		}
		s.Expire("k", judgeBelow(2, ExpireHard))
		s.Expire("k", judgeBelow(2, ExpireSoft))
		if r := s.Peek("k", nil); r.Status != Miss {
			t.Fatalf("Peek after hard then soft = %v, want miss", r.Status)
		}
		if got := s.Expire("absent", judgeBelow(2, ExpireHard)); got != Keep {
			t.Fatalf("Expire of an absent key = %v, want keep", got)
		}
	})
}

// A soft expiry clears the refresh backoff of a stale entry whose refresh
// failed: the next lookup refreshes at once.
func TestExpireSoftClearsRefreshBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		answer, _ := versioned(10*time.Second, time.Hour)
		l := &fakeLoader{answer: func(ctx context.Context, key string, arg any, refresh bool) (Entry[any], error) {
			if fail.Load() {
				return Entry[any]{}, errors.New("origin down")
			}
			return answer(ctx, key, arg, refresh)
		}}
		s := newStore(t, Config{BackoffMin: time.Minute, BackoffMax: time.Minute}, l, nil)
		load(t, s, "k")
		fail.Store(true)
		time.Sleep(11 * time.Second)
		s.LookupIn(0, "k", nil)
		synctest.Wait() // the refresh failed: a minute of backoff
		if r := s.LookupIn(0, "k", nil); r.Status != Stale {
			t.Fatalf("lookup in backoff = %v, want stale", r.Status)
		}
		fail.Store(false)
		s.Expire("k", judgeBelow(2, ExpireSoft))
		if r := s.LookupIn(0, "k", nil); r.Status != Updating {
			t.Fatalf("lookup after a soft expiry = %v, want updating (the backoff cleared)", r.Status)
		}
		synctest.Wait()
		if r := s.LookupIn(0, "k", nil); r.Status != Hit || r.Entry.Value != int64(2) {
			t.Fatalf("lookup after the refresh = %v %v, want hit 2", r.Status, r.Entry.Value)
		}
	})
}

// Forget ends a failing key's backoff: the next lookup loads it.
func TestForgetEndsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		fail.Store(true)
		l := &fakeLoader{answer: func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
			if fail.Load() {
				return Entry[any]{}, errors.New("origin down")
			}
			return ttlEntry(key, time.Hour, time.Hour), nil
		}}
		s := newStore(t, Config{BackoffMin: time.Minute, BackoffMax: time.Minute}, l, nil)
		r := s.LookupIn(0, "k", nil)
		if _, err := waitFlight(context.Background(), r.Flight); err == nil {
			t.Fatal("the first load succeeded")
		}
		if r := s.LookupIn(0, "k", nil); r.Status != Failed {
			t.Fatalf("lookup in backoff = %v, want failed", r.Status)
		}
		fail.Store(false)
		s.Forget("k")
		if e := load(t, s, "k"); e.Value != "k" {
			t.Fatalf("load after Forget = %v, want k", e.Value)
		}
		if n := l.calls.Load(); n != 2 {
			t.Fatalf("loads = %d, want 2", n)
		}
	})
}

// A soft expiry clears the refresh backoff once: expiring the entry again
// while its refreshes keep failing leaves their backoff alone.
func TestExpireSoftTwiceKeepsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		answer, _ := versioned(time.Hour, time.Hour)
		l := &fakeLoader{answer: func(ctx context.Context, key string, arg any, refresh bool) (Entry[any], error) {
			if fail.Load() {
				return Entry[any]{}, errors.New("origin down")
			}
			return answer(ctx, key, arg, refresh)
		}}
		s := newStore(t, Config{BackoffMin: time.Minute, BackoffMax: time.Minute}, l, nil)
		load(t, s, "k")
		fail.Store(true)
		s.Expire("k", judgeBelow(2, ExpireSoft))
		if r := s.LookupIn(0, "k", nil); r.Status != Updating {
			t.Fatalf("lookup after a soft expiry = %v, want updating", r.Status)
		}
		synctest.Wait() // the refresh failed: a minute of backoff
		for range 20 {
			s.Expire("k", judgeBelow(2, ExpireSoft))
			if r := s.LookupIn(0, "k", nil); r.Status != Stale {
				t.Fatalf("lookup in backoff after another soft expiry = %v, want stale", r.Status)
			}
		}
		synctest.Wait()
		if n := l.refresh.Load(); n != 1 {
			t.Fatalf("refreshes = %d, want 1: the backoff holds", n)
		}
	})
}
