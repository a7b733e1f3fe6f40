package cachestore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every function registered with Notify before the flight ends is called
// exactly once; registering after the end reports false and calls nothing.
func TestFlightNotify(t *testing.T) {
	release := make(chan struct{})
	s := newStore(t, Config{}, LoaderFunc(func(ctx context.Context, key string, _ any, _ bool) (Entry, error) {
		<-release
		return Entry{Value: key, FreshUntil: time.Now().Add(time.Minute)}, nil
	}))
	r := s.Lookup("k", nil)
	if r.Flight == nil {
		t.Fatalf("Lookup of a cold key = %v, want a flight", r.Status)
	}
	const n = 64
	var calls, registered atomic.Int64
	register := func() {
		if r.Flight.Notify(func() {
			select {
			case <-r.Flight.Done():
			default:
				t.Error("Notify function called before Done was closed")
			}
			calls.Add(1)
		}) {
			registered.Add(1)
		}
	}
	for i := 0; i < n/2; i++ {
		register() // before the end: all of these must be called
	}
	var wg sync.WaitGroup
	for i := 0; i < n/2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); register() }() // racing the end
	}
	close(release)
	wg.Wait()
	<-r.Flight.Done()
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() != registered.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if c, reg := calls.Load(), registered.Load(); c != reg || reg < n/2 {
		t.Fatalf("calls = %d, registered = %d (of %d); want every registered function called once", c, reg, n)
	}
	if r.Flight.Notify(func() { t.Error("called after the end") }) {
		t.Fatal("Notify after the end = true, want false")
	}
}
