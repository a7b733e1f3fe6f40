package cachestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Loader loads the entry of one key: values of type V, given an argument
// of type A. The store calls it from its own goroutines, at most once at a
// time per key.
//
// ctx is the store's, never a caller's: it ends when Config.LoadTimeout
// passes or the store closes, and Load must return promptly then (Close
// waits for it). arg is what the detach func of the lookup that started the
// load returned (A's zero value when it passed none). refresh is true for a
// background refresh of a stale entry (or a refresh-ahead of a fresh one),
// false for the load of a missing key.
//
// A returned error is remembered with backoff; a panic is recovered and
// treated as an error (a *PanicError).
type Loader[V, A any] interface {
	Load(ctx context.Context, key string, arg A, refresh bool) (Entry[V], error)
}

// Errors the store returns.
var (
	// ErrClosed is returned by lookups and flights once the store is
	// closed, and by loads that Close cancelled.
	ErrClosed = errors.New("cachestore: store closed")
	// ErrShed is Result.Err for Shed: the load limit is reached.
	ErrShed = errors.New("cachestore: load limit reached")
)

// errPending is returned by Flight.Result before the flight is done.
var errPending = errors.New("cachestore: load still running")

// PanicError is the error of a load whose Loader panicked. The panic is
// recovered so the process survives; the key backs off like any failure,
// and Observer.Backoff receives it, with the stack a log line should carry.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the loader goroutine's stack at the panic
}

// Error reports the panic value.
func (e *PanicError) Error() string {
	return fmt.Sprintf("cachestore: loader panicked: %v", e.Value)
}

// Flight is one load of one key, shared by every lookup that started or
// joined it. It is safe for concurrent use. A caller waits for it with
// Done (and its own deadline) or Notify, then reads Result. Waiting never
// affects the load: it runs to its end under the store's lifetime and
// Config.LoadTimeout whether anyone waits or not.
type Flight[V, A any] struct {
	key     string
	refresh bool
	// stale is the entry a refresh replaces; nil for the load of a missing
	// key. The flight resets its refresh state when the refresh fails.
	stale *item[V]
	// arg is the detach func's result; written before the load starts.
	arg A

	done chan struct{}
	// entry and err are written once, before done is closed.
	entry Entry[V]
	err   error

	// mu protects notify and ended.
	mu     sync.Mutex
	notify []func()
	ended  bool // set after done is closed; Notify registers no more
}

func newFlight[V, A any](key string, refresh bool, stale *item[V]) *Flight[V, A] {
	return &Flight[V, A]{key: key, refresh: refresh, stale: stale, done: make(chan struct{})}
}

// Done returns a channel that is closed when the load has ended.
func (f *Flight[V, A]) Done() <-chan struct{} { return f.done }

// Result returns the loaded entry or the load's error once Done is closed,
// and an error of its own before. The entry is delivered even when it was not stored
// (Entry.NoStore, or ristretto refused it). It must not be modified.
func (f *Flight[V, A]) Result() (Entry[V], error) {
	select {
	case <-f.done:
		return f.entry, f.err
	default:
		return Entry[V]{}, errPending
	}
}

// Notify registers fn to be called once when the flight ends, so that a
// caller waiting on many flights learns of each the moment it ends without
// a goroutine per flight. It returns false, and registers nothing, when
// the flight has already ended: Done is then closed and Result final.
//
// fn is called on the goroutine that ends the flight (a store goroutine,
// or the one running Close), right after Done is closed, so Result is
// final when it runs. Registered functions run in the order they were
// registered, with no lock of the store held. fn must be quick and must
// not block: the load slot it runs on is not given back until it returns.
func (f *Flight[V, A]) Notify(fn func()) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return false
	}
	f.notify = append(f.notify, fn)
	return true
}

// end closes Done and calls the functions registered with Notify. entry
// and err must be set.
func (f *Flight[V, A]) end() {
	close(f.done)
	// ended is set after the close: a Notify that returns false has seen
	// it, so it finds Done closed; one that registered before it is
	// called below.
	f.mu.Lock()
	f.ended = true
	fns := f.notify
	f.notify = nil
	f.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}
