package cachestore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeLoader is a Loader[any, any] that counts its calls, records them, and can be
// blocked: while gate is non-nil, each Load waits for a value on it (or
// for its context) before answering.
type fakeLoader struct {
	calls    atomic.Int64
	refresh  atomic.Int64 // calls with refresh set
	gate     chan struct{}
	started  chan string // if non-nil, receives the key of each call
	answer   func(ctx context.Context, key string, arg any, refresh bool) (Entry[any], error)
	mu       sync.Mutex
	args     []any       // guarded by mu
	ctxErrs  []error     // guarded by mu: ctx.Err() seen when each call returned
	startsAt []time.Time // guarded by mu
	keys     []string    // guarded by mu: the key of each call, in order
}

func (l *fakeLoader) Load(ctx context.Context, key string, arg any, refresh bool) (Entry[any], error) {
	l.calls.Add(1)
	if refresh {
		l.refresh.Add(1)
	}
	l.mu.Lock()
	l.args = append(l.args, arg)
	l.keys = append(l.keys, key)
	l.startsAt = append(l.startsAt, time.Now())
	l.mu.Unlock()
	if l.started != nil {
		l.started <- key
	}
	if l.gate != nil {
		select {
		case <-l.gate:
		case <-ctx.Done():
			l.mu.Lock()
			l.ctxErrs = append(l.ctxErrs, ctx.Err())
			l.mu.Unlock()
			return Entry[any]{}, ctx.Err()
		}
	}
	l.mu.Lock()
	l.ctxErrs = append(l.ctxErrs, ctx.Err())
	l.mu.Unlock()
	if l.answer != nil {
		return l.answer(ctx, key, arg, refresh)
	}
	return ttlEntry(key, 10*time.Second, time.Minute), nil
}

// order returns the keys loaded so far, in the order the loads started.
func (l *fakeLoader) order() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.keys...)
}

// argOf returns the arg of the first load of key.
func (l *fakeLoader) argOf(key string) any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, k := range l.keys {
		if k == key {
			return l.args[i]
		}
	}
	return nil
}

func (l *fakeLoader) starts() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.startsAt...)
}

// ttlEntry returns an entry whose value is key, fresh for fresh and
// served stale for stale more.
func ttlEntry(key string, fresh, stale time.Duration) Entry[any] {
	now := time.Now()
	return Entry[any]{Value: key, Cost: 100, FreshUntil: now.Add(fresh), StaleUntil: now.Add(fresh + stale)}
}

// versioned returns an answer func whose entries carry a version number
// counting the loads.
func versioned(fresh, stale time.Duration) (func(context.Context, string, any, bool) (Entry[any], error), *atomic.Int64) {
	var n atomic.Int64
	return func(_ context.Context, key string, _ any, _ bool) (Entry[any], error) {
		e := ttlEntry(key, fresh, stale)
		e.Value = n.Add(1)
		return e, nil
	}, &n
}

// countingObserver counts the store's events.
type countingObserver struct {
	backoffs    atomic.Int64
	backoffErr  atomic.Value // the error of the last Backoff
	refreshShed atomic.Int64
	queueLen    atomic.Int64
	loadQueue   atomic.Int64
	loadShed    atomic.Int64
	rejected    atomic.Int64
	dropped     atomic.Int64
	evicted     atomic.Int64
	cost        atomic.Int64
}

func (o *countingObserver) Backoff(_ any, err error, _ time.Time) {
	o.backoffs.Add(1)
	o.backoffErr.Store(err)
}
func (o *countingObserver) RefreshShed()            { o.refreshShed.Add(1) }
func (o *countingObserver) RefreshQueueLen(n int)   { o.queueLen.Store(int64(n)) }
func (o *countingObserver) LoadQueueLen(n int)      { o.loadQueue.Store(int64(n)) }
func (o *countingObserver) LoadShed()               { o.loadShed.Add(1) }
func (o *countingObserver) SetRejected()            { o.rejected.Add(1) }
func (o *countingObserver) SetDropped()             { o.dropped.Add(1) }
func (o *countingObserver) Evicted()                { o.evicted.Add(1) }
func (o *countingObserver) CostChanged(total int64) { o.cost.Store(total) }

// loaderFunc adapts a function to the Loader interface.
type loaderFunc func(ctx context.Context, key string, arg any, refresh bool) (Entry[any], error)

func (f loaderFunc) Load(ctx context.Context, key string, arg any, refresh bool) (Entry[any], error) {
	return f(ctx, key, arg, refresh)
}

// waitFlight waits for f to end or ctx to be done, whichever comes first,
// and returns f's result or ctx's error.
func waitFlight(ctx context.Context, f *Flight[any, any]) (Entry[any], error) {
	select {
	case <-f.Done():
		return f.Result()
	case <-ctx.Done():
		return Entry[any]{}, ctx.Err()
	}
}

// newStore returns a store closed at the end of the test; obs may be nil.
func newStore(t testing.TB, cfg Config, l Loader[any, any], obs Observer[any]) *Store[any, any] {
	t.Helper()
	s, err := New(cfg, l, obs)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// load looks key up, expects a miss, and waits for its flight.
func load(t testing.TB, s *Store[any, any], key string) Entry[any] {
	t.Helper()
	r := s.LookupIn(0, key, nil)
	if r.Status != Miss || r.Flight == nil {
		t.Fatalf("Lookup(%q) = %v, flight %v; want miss with a flight", key, r.Status, r.Flight)
	}
	e, err := waitFlight(context.Background(), r.Flight)
	if err != nil {
		t.Fatalf("flight of %q: %v", key, err)
	}
	return e
}

// forget removes key from ristretto and the side table, as an eviction
// would.
func forget(s *Store[any, any], key string) {
	s.mu.Lock()
	s.recent.del(key)
	s.mu.Unlock()
	s.cache.Del(key)
}
