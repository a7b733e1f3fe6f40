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
func (s *Store[V, A]) backoff(n int) time.Duration {
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

// sideEntryBytes is what one record of the failure and uncacheable maps
// costs beyond its key: the map slot, the record and the error it keeps.
const sideEntryBytes = 160

// sideBytes bounds each of the failure and uncacheable maps: keys are
// chosen by visitors (a src built from a query value) and up to 8 KiB
// long. A map over it first drops its expired records, then arbitrary
// live ones until it is at three quarters of it: forgetting a record
// costs one early retry of that key, never the cache. The two maps hold
// at most 2 × sideBytes outside the budget (Config.MaxCost, or the last
// SetMaxCost).
func (s *Store[V, A]) sideBytes() int64 { return max(1<<20, s.maxCost.Load()/32) }

func (s *Store[V, A]) delFail(key string) {
	if _, ok := s.fails[key]; ok {
		delete(s.fails, key)
		s.failBytes -= int64(len(key)) + sideEntryBytes
	}
}

func (s *Store[V, A]) delBypass(key string) {
	if _, ok := s.bypass[key]; ok {
		delete(s.bypass, key)
		s.bypassBytes -= int64(len(key)) + sideEntryBytes
	}
}

// rememberFailure records a failed load of key at now and returns the end
// of its backoff. Guarded by s.mu.
func (s *Store[V, A]) rememberFailure(key string, err error, now int64) int64 {
	f := s.fails[key]
	if f == nil {
		size := int64(len(key)) + sideEntryBytes
		if len(s.fails) >= s.failSweep || s.failBytes+size > s.sideBytes() {
			for k, v := range s.fails {
				// Keep a key's count for BackoffMax after its backoff
				// ended, so that the next failure doubles the wait.
				if now >= v.until+int64(s.cfg.BackoffMax) {
					s.delFail(k)
				}
			}
			for k := range s.fails {
				if s.failBytes+size <= s.sideBytes()*3/4 {
					break
				}
				s.delFail(k)
			}
			s.failSweep = max(minSweep, 2*len(s.fails))
		}
		f = &failure{}
		s.fails[key] = f
		s.failBytes += size
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
func (s *Store[V, A]) rememberBypass(key string, until, now int64) {
	if until <= now {
		s.delBypass(key)
		return
	}
	if _, ok := s.bypass[key]; ok {
		s.bypass[key] = until
		return
	}
	size := int64(len(key)) + sideEntryBytes
	if len(s.bypass) >= s.bypassSweep || s.bypassBytes+size > s.sideBytes() {
		for k, v := range s.bypass {
			if now >= v {
				s.delBypass(k)
			}
		}
		for k := range s.bypass {
			if s.bypassBytes+size <= s.sideBytes()*3/4 {
				break
			}
			s.delBypass(k)
		}
		s.bypassSweep = max(minSweep, 2*len(s.bypass))
	}
	s.bypass[key] = until
	s.bypassBytes += size
}
