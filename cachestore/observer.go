package cachestore

import "time"

// Observer receives the events of a store whose loads take arguments of
// type A; fragcache's proxy implements it. Its methods are called synchronously from lookups, flights
// and ristretto's own goroutine, so they must be cheap, must not block, must
// not call back into the Store, and must be safe for concurrent use.
//
// key lets an implementation classify an event (fragcache's keys start with
// a fragment-class prefix); it must never become a metric label itself.
type Observer[A any] interface {
	// Lookup is called once per Store.Lookup with its outcome.
	Lookup(key string, s Status)
	// Coalesced is called when a lookup joins a load that is already
	// running instead of starting one.
	Coalesced(key string)
	// LoadDone is called when a load ends: refresh is true for background
	// refreshes, err is nil on success, d is the time the Loader took. A
	// recovered Loader panic is reported as an error.
	LoadDone(key string, refresh bool, err error, d time.Duration)
	// RefreshShed is called when a refresh is not queued because the
	// refresh queue is full.
	RefreshShed(key string)
	// RefreshQueueLen reports the number of queued refreshes whenever it
	// changes.
	RefreshQueueLen(n int)
	// LoadQueueLen reports the number of cold loads waiting for a load
	// slot whenever it changes.
	LoadQueueLen(n int)
	// Backoff is called when a load failed and key backs off until until;
	// arg is the load's, for naming what failed.
	Backoff(key string, arg A, err error, until time.Time)
	// LoadShed is called when a miss starts no load because the load queue
	// is full.
	LoadShed(key string)
	// SetRejected is called when ristretto's admission policy refused an
	// entry. The entry is still served from the store's side table for a
	// short while (see Store).
	SetRejected()
	// SetDropped is called when ristretto dropped a write because its
	// write buffer was full.
	SetDropped()
	// Evicted is called when ristretto evicted an entry of the given cost to
	// make room. Entries that reach their StaleUntil are not counted.
	Evicted(cost int64)
	// CostChanged reports the cost ristretto holds, in bytes, after a load
	// stored its result and after each eviction. It lags ristretto's
	// asynchronous writes; Store.Stats gives the current value on demand.
	CostChanged(total int64)
}

// nopObserver is the Observer used when New is given none.
type nopObserver[A any] struct{}

func (nopObserver[A]) Lookup(string, Status)                       {}
func (nopObserver[A]) Coalesced(string)                            {}
func (nopObserver[A]) LoadDone(string, bool, error, time.Duration) {}
func (nopObserver[A]) RefreshShed(string)                          {}
func (nopObserver[A]) RefreshQueueLen(int)                         {}
func (nopObserver[A]) LoadQueueLen(int)                            {}
func (nopObserver[A]) LoadShed(string)                             {}
func (nopObserver[A]) Backoff(string, A, error, time.Time)         {}
func (nopObserver[A]) SetRejected()                                {}
func (nopObserver[A]) SetDropped()                                 {}
func (nopObserver[A]) Evicted(int64)                               {}
func (nopObserver[A]) CostChanged(int64)                           {}
