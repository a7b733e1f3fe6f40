package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"fragcache/metrics"
)

// Trigger decides which responses have their ESI tags executed.
type Trigger int

const (
	// TriggerSurrogate executes ESI only in responses that carry
	// Surrogate-Control: content="ESI/1.0".
	TriggerSurrogate Trigger = iota
	// TriggerHTML executes ESI in every text/html response.
	TriggerHTML
)

// FragmentRule names fragments under a path prefix of the upstream for
// metrics, and may mark them shared.
type FragmentRule struct {
	// Name is the metrics label; "" counts as "other".
	Name string
	// Match is a path prefix on the upstream, such as /widgets/weather.
	Match string
	// Share fetches matching fragments without the client's credentials
	// and keeps one copy for everyone.
	Share bool
	// TTL, when positive, overrides every other freshness source.
	TTL time.Duration
	// NoLanguage fetches matching fragments without Accept-Language and
	// keeps one copy for every language (YAML `language: false`).
	NoLanguage bool
}

// Config configures a Proxy. Zero durations and sizes take the defaults
// named on each field, except Wait, where zero means "never wait".
type Config struct {
	// Upstream is the legacy app's base URL, scheme://host[:port].
	Upstream string
	// AllowHosts are the other hosts fragment URLs may reach: "host" (any
	// port) or "host:port".
	AllowHosts []string
	// PublicHosts are the hosts fragcache serves; $(HTTP_HOST) is the
	// request's Host when listed, else the first. Default: the upstream's
	// host.
	PublicHosts []string
	// ESICookies are the cookie names $(HTTP_COOKIE{name}) may expand.
	ESICookies []string
	// Trigger decides which responses are composed.
	Trigger Trigger
	// Fragments are the operator's fragment rules, first match wins.
	Fragments []FragmentRule

	// Wait is the longest a page waits for fragments that are not in the
	// cache. Zero: never wait.
	Wait time.Duration
	// MaxWait caps an include's timeout attribute. Zero: an include's
	// timeout never makes the page wait (fragcache's --max-wait 0).
	MaxWait time.Duration
	// FragmentTTL is the freshness when a fragment response sets none;
	// default 60s.
	FragmentTTL time.Duration
	// StaleTTL is how long a stale copy may be served while refreshing;
	// zero means never serve stale.
	StaleTTL time.Duration
	// FetchTimeout limits one fragment fetch; default 10s.
	FetchTimeout time.Duration
	// UpstreamTimeout limits the wait for a page's response headers and
	// for every later read of its body; default 30s.
	UpstreamTimeout time.Duration
	// ReadTimeout is the time a client has to send a whole request,
	// headers and body (slowloris defence); default 30s.
	ReadTimeout time.Duration

	// CacheSize is the fragment cache's budget in bytes; default 256 MiB.
	CacheSize int64
	// MaxPageSize caps an opted-in page's decoded size; default 10 MiB.
	MaxPageSize int64
	// MaxFragmentSize caps a fragment's decoded size; default 1 MiB.
	MaxFragmentSize int64
	// MaxHeaderBytes sizes request and upstream response header buffers;
	// default 64 KiB.
	MaxHeaderBytes int
	// MaxRequestBodySize caps request bodies; default 1 GiB. Bodies are
	// streamed to the upstream, never held whole.
	MaxRequestBodySize int

	// MaxDepth limits nesting of fragments that include fragments;
	// default 5.
	MaxDepth int
	// MaxIncludes limits includes processed per page; default 256.
	MaxIncludes int
	// FetchConcurrency limits fragment loads at once; default 256.
	FetchConcurrency int
	// FetchPerHost limits connections per fragment host; default 64.
	FetchPerHost int
	// RefreshQueue bounds pending background refreshes; default 1024.
	RefreshQueue int

	// FetchQueue bounds the cold loads waiting for one of
	// FetchConcurrency; beyond it they are shed. Default 4096.
	FetchQueue int

	// ScopeSecret keys the HMAC of user scopes. Default: random per
	// process.
	ScopeSecret []byte
	// ScopeCookies, when set, are the only cookies that identify a user:
	// the scope is the HMAC over Authorization and these cookies, and
	// fragment fetches to the upstream carry only them (DESIGN rule 2).
	// Empty: every cookie counts.
	ScopeCookies []string

	// TrustedProxies are client CIDRs (or single addresses) whose
	// X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Forwarded and
	// X-Real-IP are kept (DESIGN rules 12 and 18).
	TrustedProxies []string
	// PreserveHost sends the client's Host to the upstream instead of the
	// upstream's host; it requires PublicHosts.
	PreserveHost bool

	// AccessLog writes one line per request to Logger.
	AccessLog bool
	// Logger receives the access log and operational messages; default
	// discards.
	Logger *slog.Logger
	// Metrics receives every measurement; required.
	Metrics *metrics.Metrics
	// Version is sent in the fragment fetches' User-Agent.
	Version string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.FragmentTTL, 60*time.Second)
	def(&c.FetchTimeout, 10*time.Second)
	def(&c.UpstreamTimeout, 30*time.Second)
	def(&c.ReadTimeout, 30*time.Second)
	defi64 := func(p *int64, v int64) {
		if *p <= 0 {
			*p = v
		}
	}
	defi64(&c.CacheSize, 256<<20)
	defi64(&c.MaxPageSize, 10<<20)
	defi64(&c.MaxFragmentSize, 1<<20)
	defi := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defi(&c.MaxHeaderBytes, 64<<10)
	defi(&c.MaxRequestBodySize, 1<<30)
	defi(&c.MaxDepth, 5)
	defi(&c.MaxIncludes, 256)
	defi(&c.FetchConcurrency, 256)
	defi(&c.FetchPerHost, 64)
	defi(&c.RefreshQueue, 1024)
	defi(&c.FetchQueue, 4096)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Upstream == "" {
		errs = append(errs, errors.New("proxy: Upstream is required"))
	}
	if c.Metrics == nil {
		errs = append(errs, errors.New("proxy: Metrics is required"))
	}
	if c.Wait < 0 {
		errs = append(errs, fmt.Errorf("proxy: Wait must not be negative (got %s)", c.Wait))
	}
	if c.MaxWait < 0 {
		errs = append(errs, fmt.Errorf("proxy: MaxWait must not be negative (got %s)", c.MaxWait))
	}
	if c.StaleTTL < 0 {
		errs = append(errs, fmt.Errorf("proxy: StaleTTL must not be negative (got %s)", c.StaleTTL))
	}
	if _, err := parseTrusted(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("proxy: TrustedProxies: %w", err))
	}
	if c.PreserveHost && len(c.PublicHosts) == 0 {
		errs = append(errs, errors.New("proxy: PreserveHost requires PublicHosts"))
	}
	return errors.Join(errs...)
}
