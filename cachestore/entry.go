package cachestore

import (
	"time"
)

// Entry is a value of type V held by the store, as a [Loader] returns it.
//
// An Entry is immutable once the Loader has returned it: neither the store
// nor any reader modifies it or anything Value points to. Readers receive
// copies of the struct that share what Value points to.
type Entry[V any] struct {
	// Value is the stored value, opaque to the store. It must not be
	// modified after the Loader returned it. A pointer type keeps the
	// copies that lookups hand out one word wide (the proxy stores a
	// pointer to its fragment record).
	Value V
	// Cost is the number of bytes the entry holds, charged against
	// Config.MaxCost. Zero or negative counts as 1.
	Cost int64
	// FreshUntil is the end of the entry's freshness. Lookups before it
	// answer Hit.
	FreshUntil time.Time
	// StaleUntil is the end of the entry's stale window: between FreshUntil
	// and StaleUntil lookups serve the entry while one refresh runs; after it
	// the entry is gone. A StaleUntil before FreshUntil is treated as
	// FreshUntil.
	StaleUntil time.Time
	// StoreKey, when not empty, stores the entry under this key instead of
	// the looked-up one (for example a per-user lookup whose response turned
	// out to be public is stored under the shared key). The flight's waiters
	// receive the entry either way, and an older entry under the looked-up
	// key is removed.
	StoreKey string
	// NoStore delivers the entry only to the waiters of the flight that
	// loaded it. Nothing is stored, an older entry under the looked-up key is
	// removed, and the looked-up key is remembered as uncacheable until
	// FreshUntil: lookups of it answer Bypass and start (or join) a load of
	// their own.
	NoStore bool
}

// Status says what a [Store.LookupIn] found and did.
type Status uint8

// The lookup outcomes. Their String forms are the lower-case names, usable
// as metric label values.
const (
	// Hit: a fresh entry is returned.
	Hit Status = iota
	// Updating: a stale entry is returned; a refresh of it is running or
	// queued.
	Updating
	// Stale: a stale entry is returned and no refresh runs, either because
	// the key is in backoff after a failed refresh or because the refresh
	// queue was full (the refresh is shed and reported to the Observer).
	Stale
	// Miss: nothing usable; a load was started or joined and Result.Flight
	// is non-nil.
	Miss
	// Bypass: the key is remembered as uncacheable; a load was started or
	// joined for this caller and Result.Flight is non-nil.
	Bypass
	// Failed: a load of the key failed recently and the key is in backoff,
	// with no stale copy to serve. Result.Err is the failure.
	Failed
	// Shed: nothing usable and no load could be started, because
	// Config.MaxLoads loads are running or the store is closed
	// (Result.Err is then ErrShed or ErrClosed). Result.Flight is nil.
	Shed
)

var statusNames = [...]string{
	Hit:      "hit",
	Updating: "updating",
	Stale:    "stale",
	Miss:     "miss",
	Bypass:   "bypass",
	Failed:   "failed",
	Shed:     "shed",
}

// String returns the status's lower-case name, such as "hit".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// Result is the answer of [Store.LookupIn] and [Store.Peek]. Its Entry
// shares Value with the stored entry and must not be modified.
type Result[V, A any] struct {
	// Status says what the lookup found and did.
	Status Status
	// Entry is the served entry for Hit, Updating and Stale; zero otherwise.
	Entry Entry[V]
	// Flight is the load to wait on for Miss and Bypass; nil otherwise.
	Flight *Flight[V, A]
	// Joined is true when Flight was already running: the lookup was
	// coalesced with an earlier one.
	Joined bool
	// Err is the recent failure for Failed, and ErrShed or ErrClosed for
	// Shed; nil otherwise.
	Err error
}
