package cachestore

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// load runs flight f: it checks the cache once more, calls the Loader
// under the store's lifetime and Config.LoadTimeout, stores the result and
// wakes the waiters. It runs on a goroutine of the store holding a load
// token.
func (s *Store[V, A]) load(f *Flight[V, A]) {
	if s.life.Err() != nil {
		s.abandon(f)
		return
	}
	// Someone may have stored a fresh entry since the lookup that started
	// this flight (a load under another key's StoreKey, or a write that
	// ristretto applied late): use it instead of loading.
	if it := s.peekFresh(f); it != nil {
		s.finish(f, it.entry, nil, false)
		return
	}
	ctx, cancel := context.WithTimeout(s.life, s.cfg.LoadTimeout)
	e, err := s.callLoader(ctx, f)
	cancel()
	if err != nil && s.life.Err() != nil {
		err = ErrClosed // cancelled by Close: not the key's failure
	}
	s.finish(f, e, err, true)
}

// callLoader calls the Loader, turning a panic into a *PanicError.
func (s *Store[V, A]) callLoader(ctx context.Context, f *Flight[V, A]) (e Entry[V], err error) {
	defer func() {
		if r := recover(); r != nil {
			e, err = Entry[V]{}, &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return s.loader.Load(ctx, f.key, f.arg, f.refresh)
}

// peekFresh returns a fresh item under f's key other than the one f
// refreshes, or nil. An item expired soft or hard is not fresh.
func (s *Store[V, A]) peekFresh(f *Flight[V, A]) *item[V] {
	now := s.now()
	fresh := func(it *item[V]) bool {
		return it != nil && it != f.stale && now < it.fresh && it.expired() == Keep
	}
	it, ok := s.cache.Get(f.key)
	if !ok || !fresh(it) {
		s.mu.Lock()
		it = s.recent.get(f.key, now)
		s.mu.Unlock()
		if !fresh(it) {
			return nil
		}
	}
	return it
}

// newItem builds the item that stores e under key.
func (s *Store[V, A]) newItem(key string, e Entry[V]) *item[V] {
	it := &item[V]{key: key, entry: e, cost: max(e.Cost, 1), slot: -1}
	it.fresh = s.at(e.FreshUntil)
	it.stale = max(s.at(e.StaleUntil), it.fresh)
	it.refreshAt = it.fresh
	if ra := s.cfg.RefreshAhead; ra > 0 {
		if life := it.fresh - s.now(); life > 0 {
			it.refreshAt = it.fresh - int64(float64(life)*ra)
		}
	}
	return it
}

// finish ends flight f with e or err. When loaded is true, e came from the
// Loader and is stored as it asks; otherwise e is already stored.
func (s *Store[V, A]) finish(f *Flight[V, A], e Entry[V], err error, loaded bool) {
	now := s.now()
	var (
		set    *item[V] // to write to ristretto
		dels   []string // to delete from ristretto
		failed *backoffStep[A]
	)
	s.mu.Lock()
	if s.flights[f.key] == f {
		delete(s.flights, f.key)
	}
	switch {
	case !loaded:
	case errors.Is(err, ErrClosed):
		if f.stale != nil {
			f.stale.refreshing.Store(false)
		}
	case err != nil:
		until := s.rememberFailure(f.key, err, now)
		if f.stale != nil {
			f.stale.retryAt.Store(until) // before the flag: see queueRefresh
			f.stale.refreshing.Store(false)
		}
		failed = &backoffStep[A]{arg: f.arg, err: err, until: s.epoch.Add(time.Duration(until))}
	case e.NoStore:
		s.delFail(f.key)
		s.rememberBypass(f.key, s.at(e.FreshUntil), now)
		s.recent.del(f.key)
		dels = append(dels, f.key)
	default:
		s.delFail(f.key)
		s.delBypass(f.key)
		target := f.key
		if e.StoreKey != "" && e.StoreKey != f.key {
			// The looked-up key's older entry is superseded by the one
			// stored under StoreKey.
			target = e.StoreKey
			s.delBypass(target)
			s.recent.del(f.key)
			dels = append(dels, f.key)
		}
		if it := s.newItem(target, e); now < it.stale {
			s.recent.put(it)
			set = it
		} else {
			s.recent.del(target)
			dels = append(dels, target)
		}
	}
	f.entry, f.err = e, err
	s.mu.Unlock()
	if failed != nil {
		s.obs.Backoff(failed.arg, failed.err, failed.until)
	}

	for _, k := range dels {
		s.cache.Del(k)
	}
	if set != nil {
		if !s.cache.SetWithTTL(set.key, set, set.cost, time.Duration(set.stale-now)) {
			s.obs.SetDropped()
		}
		s.obs.CostChanged(s.cost())
	}
	f.end()
}

// backoffStep is a failed load's report to the Observer, made after mu
// is released.
type backoffStep[A any] struct {
	arg   A
	err   error
	until time.Time
}

// abandon ends flight f with ErrClosed, without loading.
func (s *Store[V, A]) abandon(f *Flight[V, A]) {
	s.finish(f, Entry[V]{}, ErrClosed, true)
}

// cost returns the cost ristretto holds.
func (s *Store[V, A]) cost() int64 {
	return s.maxCost.Load() - s.cache.RemainingCost()
}

// onEvict is ristretto's OnEvict: it reports capacity evictions, not
// expiries nor the clearing done by Close.
func (s *Store[V, A]) onEvict(i *ristretto.Item[*item[V]]) {
	if s.closing.Load() {
		return
	}
	if !i.Expiration.IsZero() && !i.Expiration.After(time.Now()) {
		return // expired
	}
	s.obs.Evicted()
	s.obs.CostChanged(s.cost())
}

// onReject is ristretto's OnReject, called on ristretto's goroutine when it
// did not admit a new key. ristretto also calls it when two Sets of a key
// that was not yet present were buffered together: it admits the first and
// rejects the second as a duplicate. If the rejected item is the newest of
// its key and ristretto holds an older one, it is written again, which
// replaces the older one at once.
func (s *Store[V, A]) onReject(i *ristretto.Item[*item[V]]) {
	it := i.Value
	if it == nil || s.closing.Load() {
		return
	}
	s.mu.Lock()
	newest := s.recent.peek(it.key) == it
	s.mu.Unlock()
	if newest {
		if cur, ok := s.cache.Get(it.key); ok && cur != it {
			if ttl := it.stale - s.now(); ttl > 0 {
				s.cache.SetWithTTL(it.key, it, it.cost, time.Duration(ttl))
				return
			}
		}
	}
	s.obs.SetRejected()
}

// Close stops the store: it cancels running loads (their flights end with
// ErrClosed), ends queued refreshes, stops the refresh workers and
// ristretto, and waits for every goroutine the store started. Lookups that
// start after Close began answer Shed with ErrClosed; Close may run while
// lookups are still being made, and waits for those that are inside
// ristretto. Loaders must return when their context ends, or Close waits
// for them. Close is idempotent and always returns nil. Wait must not run
// concurrently with Close.
func (s *Store[V, A]) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.closing.Store(true)
		s.cancel()
		s.wg.Wait()
		for {
			select {
			case f := <-s.refreshQ:
				s.queued.Add(-1)
				s.abandon(f)
				continue
			default:
			}
			break
		}
		s.gets.drain()
		s.cache.Close()
	})
	return nil
}

// Wait blocks until ristretto has applied every write buffered so far. It
// is meant for tests (the proxy's benchmarks warm a page with it); lookups
// never need it.
func (s *Store[V, A]) Wait() { s.cache.Wait() }

// storeStats is a snapshot of the store's state.
type storeStats struct {
	Cost            int64 // bytes ristretto holds (applied writes only)
	MaxCost         int64 // Config.MaxCost, or the last SetMaxCost
	Loads           int   // loads running
	Flights         int   // loads running or queued, by key
	RefreshQueueLen int   // refreshes waiting for a worker
	Recent          int   // items in the side table
	Failing         int   // keys remembered as failing, in backoff or not
	Uncacheable     int   // keys remembered as uncacheable
}

// stats returns a snapshot of the store's state, for tests. It is safe for
// concurrent use.
func (s *Store[V, A]) stats() storeStats {
	st := storeStats{
		MaxCost:         s.maxCost.Load(),
		Loads:           len(s.sem),
		RefreshQueueLen: len(s.refreshQ),
	}
	if !s.closing.Load() {
		st.Cost = s.cost()
	}
	s.mu.Lock()
	st.Flights = len(s.flights)
	st.Recent = s.recent.len()
	st.Failing = len(s.fails)
	st.Uncacheable = len(s.bypass)
	s.mu.Unlock()
	return st
}
