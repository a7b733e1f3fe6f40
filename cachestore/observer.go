package cachestore

import "time"

// Observer receives the events of a store whose loads take arguments of
// type A; fragcache's proxy implements it with its metrics and its backoff
// log. Lookups, coalescing and load outcomes are not among them: the
// caller sees those in each Result and in its Loader, where it knows what
// it looked up. Its methods are called synchronously from lookups, flights
// and ristretto's own goroutine, so they must be cheap, must not block,
// must not call back into the Store, and must be safe for concurrent use.
type Observer[A any] interface {
	// RefreshShed is called when a refresh is not queued because the
	// refresh queue is full.
	RefreshShed()
	// RefreshQueueLen reports the number of queued refreshes whenever it
	// changes.
	RefreshQueueLen(n int)
	// LoadQueueLen reports the number of cold loads waiting for a load
	// slot whenever it changes.
	LoadQueueLen(n int)
	// LoadShed is called when a miss starts no load because the load queue
	// is full.
	LoadShed()
	// Backoff is called when a load failed and its key backs off until
	// until; arg is the load's, for naming what failed. A Loader panic is
	// reported as a *PanicError; a load that Close cancelled is not a
	// failure and is not reported.
	Backoff(arg A, err error, until time.Time)
	// SetRejected is called when ristretto's admission policy refused an
	// entry. The entry is still served from the store's side table for a
	// short while (see Store).
	SetRejected()
	// SetDropped is called when ristretto dropped a write because its
	// write buffer was full.
	SetDropped()
	// Evicted is called when ristretto evicted an entry to make room.
	// Entries that reach their StaleUntil are not counted.
	Evicted()
	// CostChanged reports the cost ristretto holds, in bytes, after a load
	// stored its result and after each eviction. It lags ristretto's
	// asynchronous writes.
	CostChanged(total int64)
}

// nopObserver is the Observer used when New is given none.
type nopObserver[A any] struct{}

func (nopObserver[A]) RefreshShed()                {}
func (nopObserver[A]) RefreshQueueLen(int)         {}
func (nopObserver[A]) LoadQueueLen(int)            {}
func (nopObserver[A]) LoadShed()                   {}
func (nopObserver[A]) Backoff(A, error, time.Time) {}
func (nopObserver[A]) SetRejected()                {}
func (nopObserver[A]) SetDropped()                 {}
func (nopObserver[A]) Evicted()                    {}
func (nopObserver[A]) CostChanged(int64)           {}
