package l2

import "time"

// Op names the kind of one Redis request, the op label of
// fragcache_l2_requests_total and fragcache_l2_request_duration_seconds.
type Op uint8

// The ops. A lock renewal counts as OpLock; reading the purge set counts as
// OpGet; the breaker's own probes are not counted. Events are published
// inside the unlock and purge scripts, so DESIGN rule 38's op=publish has
// no request of its own.
const (
	OpGet    Op = iota // Client.Get, the peek of a waiter, Client.ReadPurges
	OpSet              // Lock.Set
	OpLock             // taking and renewing the fill lock
	OpUnlock           // Lock.Release (with its hint and its event)
	OpPurge            // Client.Purge
	NumOps             // the number of ops, for arrays indexed by Op
)

var opNames = [NumOps]string{"get", "set", "lock", "unlock", "purge"}

// String returns the op's label value.
func (o Op) String() string {
	if o < NumOps {
		return opNames[o]
	}
	return "unknown"
}

// Result is the outcome of one Redis request, the result label of
// fragcache_l2_requests_total.
type Result uint8

// The results. Hit, Stale, Miss and Corrupt are the answers of a get;
// every other op that Redis answered is OK (a lock that someone else holds
// and a write the purge fence refused are OK too: Redis answered).
const (
	ResultOK          Result = iota // the request succeeded (ops other than get)
	ResultHit                       // a fresh entry
	ResultStale                     // an entry past its fresh-until, before its stale-until
	ResultMiss                      // no entry, or one past its stale-until
	ResultCorrupt                   // a value the decoder rejected; treated as missing
	ResultError                     // Redis or the connection answered with an error
	ResultTimeout                   // no answer within Config.Timeout
	ResultBreakerOpen               // not sent: the breaker holds Redis for down
	NumResults                      // the number of results, for arrays indexed by Result
)

var resultNames = [NumResults]string{"ok", "hit", "stale", "miss", "corrupt", "error", "timeout", "breaker_open"}

// String returns the result's label value.
func (r Result) String() string {
	if r < NumResults {
		return resultNames[r]
	}
	return "unknown"
}

// WaitResult is how a wait for another process's fill lock ended, the
// result label of fragcache_l2_lock_waits_total.
type WaitResult uint8

// The wait results.
const (
	// WaitFilled: the holder finished with an answer, stored (Filled) or
	// uncacheable (Bypassed).
	WaitFilled WaitResult = iota
	// WaitFailed: the holder's fetch failed and it recorded a backoff.
	WaitFailed
	// WaitExpired: the holder went away (its lock expired or it abandoned
	// it) and this caller took the lock over.
	WaitExpired
	// WaitTimeout: the caller's context ended, or Redis failed, before any
	// of the above.
	WaitTimeout
	// NumWaitResults is the number of wait results.
	NumWaitResults
)

var waitNames = [NumWaitResults]string{"filled", "failed", "expired", "timeout"}

// String returns the wait result's label value.
func (w WaitResult) String() string {
	if w < NumWaitResults {
		return waitNames[w]
	}
	return "unknown"
}

// Observer receives the client's events; fragcache's metrics package
// implements it. Its methods are called synchronously from the callers'
// goroutines and from the client's own, so they must be cheap, must not
// block, must not call back into the Client, and must be safe for
// concurrent use.
type Observer interface {
	// Request is called once per Redis request with its op, its result
	// and the time it took (0 for ResultBreakerOpen).
	Request(op Op, r Result, d time.Duration)
	// Up reports the breaker's state: true once a probe reached Redis,
	// false once a request failed or timed out and the breaker opened. New
	// reports false first; the first successful probe reports true.
	Up(up bool)
	// LockWait is called once per Client.Acquire that had to wait for
	// another holder, with how the wait ended.
	LockWait(r WaitResult)
}

// nopObserver is the Observer used when Config.Observer is nil.
type nopObserver struct{}

func (nopObserver) Request(Op, Result, time.Duration) {}
func (nopObserver) Up(bool)                           {}
func (nopObserver) LockWait(WaitResult)               {}
