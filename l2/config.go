package l2

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultPrefix          = "fragcache"
	DefaultTimeout         = 25 * time.Millisecond
	DefaultMaxBodySize     = 1 << 20 // 1 MiB, fragcache's --max-fragment-size default
	DefaultPurgeRetention  = 24*time.Hour + 10*time.Minute
	DefaultMaxPurgeRecords = 100_000
)

// Fixed limits of the format and the protocol.
const (
	// MaxTags is the most tags an entry carries: the 64 its upstream may
	// name (DESIGN rule 25) and up to 8 automatic ones, which do not count
	// toward those 64 (DESIGN rule 28: url, up to four path prefixes, the
	// fragment rule, all).
	MaxTags = 64 + 8
	// MaxKeySize is the longest full key l2 stores.
	MaxKeySize = 16 << 10
	// MaxPurgeTags is the most tags one Purge records.
	MaxPurgeTags = 4096
	// LockTTL is how long the fill lock lives without a renewal: a dead
	// holder blocks the others for at most this long.
	LockTTL = 3 * time.Second
	// renewEvery is how often a held lock is renewed.
	renewEvery = LockTTL / 3
	// maxPrefix is the longest Config.Prefix.
	maxPrefix = 64
)

// Config configures a Client. Only URL is required; every other zero field
// takes the default named in its comment. Negative values are errors.
type Config struct {
	// URL is the server: redis://[user:password@]host:port/db, or
	// rediss://… for TLS. Required. Never logged.
	URL string
	// Password, when set, replaces the password of URL (fragcache reads it
	// from FRAGCACHE_REDIS_PASSWORD). Never logged.
	Password string
	// Prefix starts every key and the channel name, so that deployments
	// can share one Redis: 1 to 64 bytes of letters, digits and "_.-{}".
	// Default "fragcache".
	Prefix string
	// Timeout bounds each Redis request (dial, write and read included):
	// beyond it the request fails with ErrTimeout and the breaker opens.
	// Default 25ms.
	Timeout time.Duration
	// MaxBodySize bounds the body of one entry: Lock.Set refuses a larger
	// one and the decoder rejects a stored one (result corrupt). Set it to
	// --max-fragment-size. Default 1 MiB.
	MaxBodySize int
	// PurgeRetention is how long a purge record is kept and the longest
	// an entry key lives in Redis (its TTL is capped to it), so that no
	// entry outlives a purge record that concerns it. Set it to 24h plus
	// --stale-ttl (DESIGN rule 27). Default 24h10m.
	PurgeRetention time.Duration
	// MaxPurgeRecords bounds the records one ReadPurges returns (the
	// newest); beyond it the snapshot says Truncated. Default 100 000.
	MaxPurgeRecords int
	// Observer receives request, breaker and lock-wait events. Default
	// nil: none.
	Observer Observer
	// Listener receives purge events and the state of the subscription.
	// Default nil: none.
	Listener Listener
	// Logger receives the breaker's and the subscription's state changes
	// (rare lines, never per request). Default nil: discard.
	Logger *slog.Logger
}

// Config problems reported by New, joined with errors.Join. None of them
// quotes the URL or the password.
var (
	ErrNoURL                = errors.New("l2: URL is empty")
	ErrBadURL               = errors.New("l2: URL is not a redis:// or rediss:// URL")
	ErrBadPrefix            = errors.New("l2: Prefix must be 1 to 64 bytes of letters, digits and _.-{}")
	ErrNegativeTimeout      = errors.New("l2: Timeout is negative")
	ErrNegativeMaxBodySize  = errors.New("l2: MaxBodySize is negative")
	ErrNegativeRetention    = errors.New("l2: PurgeRetention is negative")
	ErrNegativeMaxPurgeRecs = errors.New("l2: MaxPurgeRecords is negative")
	ErrShortRetention       = errors.New("l2: PurgeRetention must be longer than the lock TTL")
)

// withDefaults returns cfg with its zero fields replaced by the defaults,
// the go-redis options it means, and every problem found, joined.
func (cfg Config) withDefaults() (Config, *redis.Options, error) {
	var errs []error
	var opt *redis.Options
	if cfg.URL == "" {
		errs = append(errs, ErrNoURL)
	} else if u, err := url.Parse(cfg.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		errs = append(errs, ErrBadURL) // url.Parse's error quotes the URL: never pass it on
	} else if opt, err = redis.ParseURL(cfg.URL); err != nil {
		errs = append(errs, ErrBadURL)
		opt = nil
	}
	if opt != nil && cfg.Password != "" {
		opt.Password = cfg.Password
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	} else if !validPrefix(cfg.Prefix) {
		errs = append(errs, ErrBadPrefix)
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%w: %v", ErrNegativeTimeout, cfg.Timeout))
	} else if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBodySize < 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrNegativeMaxBodySize, cfg.MaxBodySize))
	} else if cfg.MaxBodySize == 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	switch {
	case cfg.PurgeRetention < 0:
		errs = append(errs, fmt.Errorf("%w: %v", ErrNegativeRetention, cfg.PurgeRetention))
	case cfg.PurgeRetention == 0:
		cfg.PurgeRetention = DefaultPurgeRetention
	case cfg.PurgeRetention <= LockTTL:
		errs = append(errs, fmt.Errorf("%w: %v", ErrShortRetention, cfg.PurgeRetention))
	}
	if cfg.MaxPurgeRecords < 0 {
		errs = append(errs, fmt.Errorf("%w: %d", ErrNegativeMaxPurgeRecs, cfg.MaxPurgeRecords))
	} else if cfg.MaxPurgeRecords == 0 {
		cfg.MaxPurgeRecords = DefaultMaxPurgeRecords
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Listener == nil {
		cfg.Listener = nopListener{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, nil, err
	}
	tuneOptions(opt, cfg.Timeout)
	return cfg, opt, nil
}

// tuneOptions makes go-redis fail within timeout and never on its own
// retry: no command retries, one dial attempt, every deadline at the
// operation timeout, client-side caching off, RESP2 (no HELLO, no push
// notifications), no CLIENT SETINFO on connect (ACL-limited users).
func tuneOptions(opt *redis.Options, timeout time.Duration) {
	opt.Protocol = 2
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	opt.DialTimeout = timeout
	opt.ReadTimeout = timeout
	opt.WriteTimeout = timeout
	opt.PoolTimeout = timeout
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	opt.ClientSideCacheConfig = nil
	opt.ClientSideCache = nil
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
}

func validPrefix(p string) bool {
	if len(p) == 0 || len(p) > maxPrefix {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_' || c == '.' || c == '-' || c == '{' || c == '}':
		default:
			return false
		}
	}
	return true
}
