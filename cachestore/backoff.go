package cachestore

import (
	"errors"
	"math/rand/v2"
	"time"
)

// RetryAfter may be implemented by an error a Loader returns (also when
// wrapped): the key's next load may start RetryAfter from now, and the
// failure does not lengthen the key's backoff. A loader returns it when
// the load was refused without being tried, for example by a circuit
// breaker that already backs off the whole host.
type RetryAfter interface {
	RetryAfter() time.Duration
}

// failure is the memory of a key whose loads fail. Guarded by Store.mu.
type failure struct {
	n     int   // consecutive failures
	until int64 // end of the backoff, nanoseconds since Store.epoch
	err   error // the last failure
}

// backoff returns the wait after the n-th consecutive failure (n >= 1):
// BackoffMin doubled n-1 times, capped at BackoffMax, then shortened by a
// random amount of up to a fifth so that keys failing together spread out.
func (s *Store) backoff(n int) time.Duration {
	d := s.cfg.BackoffMin
	for i := 1; i < n && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	if j := int64(d / 5); j > 0 {
		d -= time.Duration(rand.Int64N(j + 1))
	}
	return d
}

// sweepThreshold bounds the maps of failures and uncacheable keys: when one
// reaches its threshold, its expired keys are removed and the threshold is
// set to twice what remains (at least minSweep), so the work is amortised
// and a map never holds more than twice its live keys plus minSweep.
const minSweep = 1024

// rememberFailure records a failed load of key at now and returns the end
// of its backoff. Guarded by s.mu.
func (s *Store) rememberFailure(key string, err error, now int64) int64 {
	f := s.fails[key]
	if f == nil {
		if len(s.fails) >= s.failSweep {
			for k, v := range s.fails {
				// Keep a key's count for BackoffMax after its backoff
				// ended, so that the next failure doubles the wait.
				if now >= v.until+int64(s.cfg.BackoffMax) {
					delete(s.fails, k)
				}
			}
			s.failSweep = max(minSweep, 2*len(s.fails))
		}
		f = &failure{}
		s.fails[key] = f
	} else if now >= f.until+int64(s.cfg.BackoffMax) {
		f.n = 0 // the key recovered long ago: start over
	}
	f.err = err
	var ra RetryAfter
	if errors.As(err, &ra) {
		f.until = now + int64(max(ra.RetryAfter(), 0))
		return f.until
	}
	f.n++
	f.until = now + int64(s.backoff(f.n))
	return f.until
}

// rememberBypass records key as uncacheable until until. Guarded by s.mu.
func (s *Store) rememberBypass(key string, until, now int64) {
	if until <= now {
		delete(s.bypass, key)
		return
	}
	if _, ok := s.bypass[key]; !ok && len(s.bypass) >= s.bypassSweep {
		for k, v := range s.bypass {
			if now >= v {
				delete(s.bypass, k)
			}
		}
		s.bypassSweep = max(minSweep, 2*len(s.bypass))
	}
	s.bypass[key] = until
}
