package cachestore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// notified is what one function registered with Notify saw.
type notified struct {
	calls   atomic.Int64
	done    atomic.Bool // Done was closed when it ran
	settled atomic.Bool // Result was final (not errPending) when it ran
}

func (n *notified) fn(f *Flight[any, any]) func() {
	return func() {
		n.calls.Add(1)
		select {
		case <-f.Done():
			n.done.Store(true)
		default:
		}
		if _, err := f.Result(); !errors.Is(err, errPending) {
			n.settled.Store(true)
		}
	}
}

func TestNotifyManyRegistrants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		s := newStore(t, Config{}, l, nil)
		f := s.LookupIn(0, "k", nil).Flight
		const n = 1000
		seen := make([]notified, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if !f.Notify(seen[i].fn(f)) {
					t.Errorf("Notify %d on a running flight = false, want true", i)
				}
			})
		}
		wg.Wait()
		synctest.Wait()
		for i := range seen {
			if c := seen[i].calls.Load(); c != 0 {
				t.Fatalf("function %d called %d times before the flight ended", i, c)
			}
		}
		close(l.gate)
		synctest.Wait() // the load has ended and the functions have run
		for i := range seen {
			if c := seen[i].calls.Load(); c != 1 || !seen[i].done.Load() || !seen[i].settled.Load() {
				t.Fatalf("function %d: %d calls, Done closed %v, Result final %v; want 1, true, true",
					i, c, seen[i].done.Load(), seen[i].settled.Load())
			}
		}
		if e, err := f.Result(); err != nil || e.Value != "k" {
			t.Fatalf("Result = %v, %v; want k", e.Value, err)
		}
		var late atomic.Int64
		if f.Notify(func() { late.Add(1) }) {
			t.Fatalf("Notify on an ended flight = true, want false")
		}
		synctest.Wait()
		if late.Load() != 0 {
			t.Fatalf("a function refused by Notify was called")
		}
	})
}

func TestNotifyOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		s := newStore(t, Config{}, l, nil)
		f := s.LookupIn(0, "k", nil).Flight
		var order []int // written only on the goroutine that ends the flight
		for i := range 5 {
			f.Notify(func() { order = append(order, i) })
		}
		close(l.gate)
		<-f.Done()
		synctest.Wait()
		if fmt.Sprint(order) != "[0 1 2 3 4]" {
			t.Fatalf("functions ran in order %v, want [0 1 2 3 4]", order)
		}
	})
}

// TestNotifyRacesEnd registers functions while the flight ends, on real
// goroutines (run it with -race): the load ends once half of them have
// registered, while the rest are registering. Every registration that
// Notify accepts
// is called exactly once, after Done is closed; every one it refuses finds
// Done already closed and is never called.
func TestNotifyRacesEnd(t *testing.T) {
	const rounds, registrants = 50, 32
	gates := make(map[string]chan struct{}, rounds)
	for r := range rounds {
		gates[fmt.Sprint("k", r)] = make(chan struct{})
	}
	l := &fakeLoader{answer: func(ctx context.Context, key string, _ any, _ bool) (Entry[any], error) {
		select {
		case <-gates[key]:
		case <-ctx.Done():
		}
		return ttlEntry(key, time.Minute, 0), nil
	}}
	s := newStore(t, Config{}, l, nil)
	var accepted, refused int
	for r := range rounds {
		key := fmt.Sprint("k", r)
		f := s.LookupIn(0, key, nil).Flight
		seen := make([]notified, registrants)
		ok := make([]bool, registrants)
		start := make(chan struct{})
		var regs, calls sync.WaitGroup
		var registered atomic.Int64
		for i := range registrants {
			regs.Add(1)
			calls.Add(1)
			go func() {
				defer regs.Done()
				<-start
				fn := seen[i].fn(f)
				ok[i] = f.Notify(func() { fn(); calls.Done() })
				registered.Add(1)
				if !ok[i] {
					select {
					case <-f.Done():
					default:
						t.Errorf("round %d: Notify refused %d while Done is open", r, i)
					}
					calls.Done()
				}
			}()
		}
		regs.Add(1)
		go func() { // the load ends while the second half registers
			defer regs.Done()
			<-start
			for registered.Load() < registrants/2 {
				runtime.Gosched()
			}
			close(gates[key])
		}()
		close(start)
		regs.Wait()
		calls.Wait()
		for i := range seen {
			want := int64(0)
			if ok[i] {
				want = 1
				accepted++
				if !seen[i].done.Load() || !seen[i].settled.Load() {
					t.Errorf("round %d: function %d ran before Done was closed", r, i)
				}
			} else {
				refused++
			}
			if c := seen[i].calls.Load(); c != want {
				t.Errorf("round %d: function %d (accepted %v) called %d times, want %d", r, i, ok[i], c, want)
			}
		}
	}
	t.Logf("%d registrations accepted, %d refused", accepted, refused)
}

// TestNotifyOnClose: a flight that Close ends calls its functions too, with
// ErrClosed as its result.
func TestNotifyOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &fakeLoader{gate: make(chan struct{})}
		s, err := New(Config{}, l, nil)
		if err != nil {
			t.Fatal(err)
		}
		f := s.LookupIn(0, "k", nil).Flight
		var got error
		var calls int
		if !f.Notify(func() { calls++; _, got = f.Result() }) {
			t.Fatal("Notify on a running flight = false")
		}
		s.Close()
		if calls != 1 || !errors.Is(got, ErrClosed) {
			t.Fatalf("after Close: %d calls, Result error %v; want 1, ErrClosed", calls, got)
		}
	})
}
