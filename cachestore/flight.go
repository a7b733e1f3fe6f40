package cachestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Loader loads the entry of one key. The store calls it from its own
// goroutines, at most once at a time per key.
//
// ctx is the store's, never a caller's: it ends when Config.LoadTimeout
// passes or the store closes, and Load must return promptly then (Close
// waits for it). arg is what the detach func of the lookup that started the
// load returned. refresh is true for a background refresh of a stale entry
// (or a refresh-ahead of a fresh one), false for the load of a missing key.
//
// A returned error is remembered with backoff; a panic is recovered and
// treated as an error (a *PanicError).
type Loader interface {
	Load(ctx context.Context, key string, arg any, refresh bool) (Entry, error)
}

// LoaderFunc adapts a function to the Loader interface.
type LoaderFunc func(ctx context.Context, key string, arg any, refresh bool) (Entry, error)

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, key string, arg any, refresh bool) (Entry, error) {
	return f(ctx, key, arg, refresh)
}

// Errors the store returns.
var (
	// ErrClosed is returned by lookups and flights once the store is
	// closed, and by loads that Close cancelled.
	ErrClosed = errors.New("cachestore: store closed")
	// ErrShed is Result.Err for Shed: the load limit is reached.
	ErrShed = errors.New("cachestore: load limit reached")
	// ErrPending is returned by Flight.Result before the flight is done.
	ErrPending = errors.New("cachestore: load still running")
)

// PanicError is the error of a load whose Loader panicked. The panic is
// recovered so the process survives; the key backs off like any failure.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the loader goroutine's stack at the panic
}

// Error reports the panic value.
func (e *PanicError) Error() string {
	return fmt.Sprintf("cachestore: loader panicked: %v", e.Value)
}

// Flight is one load of one key, shared by every lookup that started or
// joined it. It is safe for concurrent use. Waiting on a flight never
// affects the load: it runs to its end under the store's lifetime and
// Config.LoadTimeout whether anyone waits or not.
type Flight struct {
	key     string
	refresh bool
	// stale is the entry a refresh replaces; nil for the load of a missing
	// key. The flight resets its refresh state when the refresh fails.
	stale *item
	// arg is the detach func's result; written before the load starts.
	arg any

	done chan struct{}
	// entry and err are written once, before done is closed.
	entry Entry
	err   error

	// notifyMu guards notify and ended: the functions to call when the
	// flight ends (Notify), and whether it has.
	notifyMu sync.Mutex
	notify   []func()
	ended    bool
}

func newFlight(key string, refresh bool, stale *item) *Flight {
	return &Flight{key: key, refresh: refresh, stale: stale, done: make(chan struct{})}
}

// Done returns a channel that is closed when the load has ended.
func (f *Flight) Done() <-chan struct{} { return f.done }

// Notify registers fn to be called once when the flight ends, from the
// goroutine that ends it, right after Done is closed; fn must be cheap and
// must not block. It returns false, and registers nothing, when the flight
// has already ended. It lets a caller that waits for many flights learn
// of each as it ends without a goroutine per flight.
func (f *Flight) Notify(fn func()) bool {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	if f.ended {
		return false
	}
	f.notify = append(f.notify, fn)
	return true
}

// end closes Done and calls the registered Notify functions.
func (f *Flight) end() {
	close(f.done)
	f.notifyMu.Lock()
	f.ended = true
	fns := f.notify
	f.notify = nil
	f.notifyMu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Result returns the loaded entry or the load's error once Done is closed,
// and ErrPending before. The entry is delivered even when it was not stored
// (Entry.NoStore, or ristretto refused it). It must not be modified.
func (f *Flight) Result() (Entry, error) {
	select {
	case <-f.done:
		return f.entry, f.err
	default:
		return Entry{}, ErrPending
	}
}

// Wait waits for the load to end or for ctx to be done, whichever comes
// first, and returns Result or ctx's error. Giving up never cancels the
// load.
func (f *Flight) Wait(ctx context.Context) (Entry, error) {
	select {
	case <-f.done:
		return f.entry, f.err
	default:
	}
	select {
	case <-f.done:
		return f.entry, f.err
	case <-ctx.Done():
		return Entry{}, ctx.Err()
	}
}
