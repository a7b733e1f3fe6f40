package cachestore

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultMaxCost        = 256 << 20 // 256 MiB
	DefaultMaxLoads       = 256
	DefaultRefreshQueue   = 1024
	DefaultLoadQueue      = 4096
	DefaultRefreshWorkers = 8
	DefaultLoadTimeout    = 10 * time.Second
	DefaultBackoffMin     = time.Second
	DefaultBackoffMax     = 60 * time.Second
)

// Config configures a Store. The zero value is usable: every zero field
// takes the default named in its comment. Negative values are errors.
type Config struct {
	// MaxCost is the ristretto budget in bytes, the sum of Entry.Cost the
	// store keeps. Default 256 MiB.
	MaxCost int64
	// MaxLoads bounds the loads running at once, misses and refreshes
	// together. A miss beyond it waits in the load queue (LoadQueue); a
	// refresh beyond it waits in the refresh queue. Default 256.
	MaxLoads int
	// LoadQueue bounds the cold loads waiting for one of MaxLoads, taken
	// round-robin by the group of LookupIn. A miss beyond it is answered
	// Shed. Default 4096.
	LoadQueue int
	// RefreshQueue bounds the refreshes waiting for a worker. Beyond it a
	// refresh is shed (the stale entry is served as Stale) and reported to
	// the Observer. Default 1024.
	RefreshQueue int
	// RefreshWorkers is the number of goroutines that run queued
	// refreshes; they start in New and stop in Close. Default 8.
	RefreshWorkers int
	// LoadTimeout bounds one load: the Loader's context ends after it.
	// Default 10s.
	LoadTimeout time.Duration
	// BackoffMin is the first wait after a failed load before the key is
	// loaded again. Each further failure doubles it, up to BackoffMax; each
	// wait is drawn at random from [0.8·d, d] so that failing keys spread
	// out. Default 1s.
	BackoffMin time.Duration
	// BackoffMax caps the backoff. Must not be below BackoffMin. Default
	// 60s.
	BackoffMax time.Duration
	// RefreshAhead is the fraction of an entry's fresh lifetime, counted
	// back from FreshUntil, in which a lookup queues a refresh while still
	// answering Hit, so that an entry looked up often never goes stale. For
	// example 0.1 refreshes a 60s entry when a lookup sees it in its last
	// 6s. Must be in [0, 1). Default 0: off.
	RefreshAhead float64
}

// Config problems reported by New, joined with errors.Join.
var (
	ErrNegativeMaxCost        = errors.New("cachestore: MaxCost is negative")
	ErrNegativeMaxLoads       = errors.New("cachestore: MaxLoads is negative")
	ErrNegativeRefreshQueue   = errors.New("cachestore: RefreshQueue is negative")
	ErrNegativeLoadQueue      = errors.New("cachestore: LoadQueue is negative")
	ErrNegativeRefreshWorkers = errors.New("cachestore: RefreshWorkers is negative")
	ErrNegativeLoadTimeout    = errors.New("cachestore: LoadTimeout is negative")
	ErrBadBackoff             = errors.New("cachestore: BackoffMin and BackoffMax must be positive with BackoffMin <= BackoffMax")
	ErrBadRefreshAhead        = errors.New("cachestore: RefreshAhead must be in [0, 1)")
	ErrNilLoader              = errors.New("cachestore: Loader is nil")
)

// withDefaults returns cfg with its zero fields replaced by the defaults
// and every problem found, joined.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	if cfg.MaxCost < 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrNegativeMaxCost, cfg.MaxCost))
	} else if cfg.MaxCost == 0 {
		cfg.MaxCost = DefaultMaxCost
	}
	if cfg.MaxLoads < 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrNegativeMaxLoads, cfg.MaxLoads))
	} else if cfg.MaxLoads == 0 {
		cfg.MaxLoads = DefaultMaxLoads
	}
	if cfg.LoadQueue < 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrNegativeLoadQueue, cfg.LoadQueue))
	} else if cfg.LoadQueue == 0 {
		cfg.LoadQueue = DefaultLoadQueue
	}
	if cfg.RefreshQueue < 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrNegativeRefreshQueue, cfg.RefreshQueue))
	} else if cfg.RefreshQueue == 0 {
		cfg.RefreshQueue = DefaultRefreshQueue
	}
	if cfg.RefreshWorkers < 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrNegativeRefreshWorkers, cfg.RefreshWorkers))
	} else if cfg.RefreshWorkers == 0 {
		cfg.RefreshWorkers = DefaultRefreshWorkers
	}
	if cfg.LoadTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: %v", ErrNegativeLoadTimeout, cfg.LoadTimeout))
	} else if cfg.LoadTimeout == 0 {
		cfg.LoadTimeout = DefaultLoadTimeout
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	if cfg.BackoffMin < 0 || cfg.BackoffMax < 0 || cfg.BackoffMin > cfg.BackoffMax {
		errs = append(errs, fmt.Errorf("%w: %v, %v", ErrBadBackoff, cfg.BackoffMin, cfg.BackoffMax))
	}
	if !(cfg.RefreshAhead >= 0 && cfg.RefreshAhead < 1) { // also rejects NaN
		errs = append(errs, fmt.Errorf("%w: %v", ErrBadRefreshAhead, cfg.RefreshAhead))
	}
	return cfg, errors.Join(errs...)
}
