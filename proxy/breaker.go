package proxy

import (
	"sync"
	"time"

	"fragcache/metrics"
)

// Breaker settings: a host that fails breakerThreshold fetches in a row is
// not contacted for breakerMinOpen, doubling per failed probe up to
// breakerMaxOpen; then one probe fetch is let through (half-open).
const (
	breakerThreshold = 5
	breakerMinOpen   = time.Second
	breakerMaxOpen   = time.Minute
)

// breaker is the circuit breaker of one fragment host. It is safe for
// concurrent use.
type breaker struct {
	gauge interface{ Set(float64) } // nil when the host has no metrics label

	// mu protects the fields below.
	mu        sync.Mutex
	failures  int           // consecutive failures while closed
	state     int           // metrics.Breaker*
	openUntil time.Time     // end of the open period
	openFor   time.Duration // length of the last open period
	probing   bool          // a half-open probe is running
}

// allow reports whether a fetch may go to the host now and, when not, how
// long until it is worth asking again. In the half-open state exactly one
// caller gets true until it reports its outcome.
func (b *breaker) allow(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case metrics.BreakerClosed:
		return true, 0
	case metrics.BreakerOpen:
		if now.Before(b.openUntil) {
			return false, max(b.openUntil.Sub(now), breakerProbeWait)
		}
		b.setState(metrics.BreakerHalfOpen)
		b.probing = true
		return true, 0
	default: // half-open
		if b.probing {
			return false, breakerProbeWait
		}
		b.probing = true
		return true, 0
	}
}

// breakerProbeWait is how soon a fetch turned away while a probe runs
// asks again.
const breakerProbeWait = 100 * time.Millisecond

// errBreakerOpen fails fetches to a host whose circuit breaker is open. It
// tells the store when to try again (cachestore.RetryAfter), so a refusal
// does not lengthen the fragment's own backoff: the host's recovery is
// the breaker's to judge.
type errBreakerOpen struct{ wait time.Duration }

func (e errBreakerOpen) Error() string {
	return "circuit breaker open for the fragment host"
}

func (e errBreakerOpen) RetryAfter() time.Duration { return e.wait }

// record reports the outcome of an allowed fetch; hostFailure is true for
// failures that say the host is unwell (connection errors, timeouts, 5xx).
func (b *breaker) record(now time.Time, hostFailure bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !hostFailure {
		b.failures = 0
		b.probing = false
		b.openFor = 0
		b.setState(metrics.BreakerClosed)
		return
	}
	switch b.state {
	case metrics.BreakerClosed:
		b.failures++
		if b.failures < breakerThreshold {
			return
		}
		b.openFor = breakerMinOpen
	case metrics.BreakerHalfOpen:
		b.openFor = min(max(2*b.openFor, breakerMinOpen), breakerMaxOpen)
	default:
		return // a fetch that started before the breaker opened
	}
	b.probing = false
	b.failures = 0
	b.openUntil = now.Add(b.openFor)
	b.setState(metrics.BreakerOpen)
}

func (b *breaker) setState(s int) {
	b.state = s
	if b.gauge != nil {
		b.gauge.Set(float64(s))
	}
}
