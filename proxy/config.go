package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
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
	// NoStream keeps matching fragments out of streamed fills: a page
	// sends their placeholder as it would without --stream-budget (YAML
	// `stream: false`).
	NoStream bool
}

// Config configures a Proxy. Zero durations, sizes and counts take the
// defaults named on each field (DefaultConfig holds them all), except
// Wait, MaxWait and StaleTTL, whose zero means what their docs say.
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
	// cache. Zero: never wait. DefaultConfig: 50ms.
	Wait time.Duration
	// MaxWait caps an include's timeout attribute. Zero: an include's
	// timeout never makes the page wait (fragcache's --max-wait 0).
	// DefaultConfig: 1s.
	MaxWait time.Duration
	// FragmentTTL is the freshness when a fragment response sets none;
	// default 60s.
	FragmentTTL time.Duration
	// StaleTTL is how long a stale copy may be served while refreshing;
	// zero means never serve stale. DefaultConfig: 10m.
	StaleTTL time.Duration
	// FetchTimeout limits one fragment fetch; default 10s.
	FetchTimeout time.Duration
	// StreamBudget, when positive, keeps a page with pending includes
	// open this long (counted from the start of its wait) to stream the
	// fragments that arrive (DESIGN.md, precise rules 29 to 31). Zero,
	// the default, is off. It must be more than Wait and at most
	// FetchTimeout.
	StreamBudget time.Duration
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

	// Redis, when set, is the shared L2 every replica reads and fills:
	// redis://[user:password@]host:port/db or rediss://… (DESIGN "Beyond
	// one machine"). Empty: no L2, nothing changes. It is never logged.
	Redis string
	// RedisPassword, when set, replaces the password of Redis (fragcache
	// reads it from FRAGCACHE_REDIS_PASSWORD only). A secret.
	RedisPassword string
	// RedisPrefix starts every Redis key and the event channel, so that
	// deployments can share one Redis. DefaultConfig: "fragcache".
	RedisPrefix string
	// RedisTimeout bounds each Redis request; beyond it the L2 is skipped
	// and its breaker opens. DefaultConfig: 25ms.
	RedisTimeout time.Duration

	// DebugToken, when set (at least 16 bytes), is the token of the
	// Fragcache-Debug request header: a request that carries it gets a
	// Server-Timing entry per include (DESIGN "Seeing what happened").
	// Empty: debugging is off. A secret.
	DebugToken []byte
	// MarkOutcomes wraps each of a page's own includes in an element
	// whose data-fc-outcome names the include's outcome. fragcache sets it
	// for its embedded demo app only (--demo, rule 34).
	MarkOutcomes bool

	// AccessLog writes one line per request to Logger. DefaultConfig:
	// true.
	AccessLog bool
	// Logger receives the access log and operational messages; default
	// discards.
	Logger *slog.Logger
	// Metrics receives every measurement; required.
	Metrics *metrics.Metrics
	// Version is sent in the fragment fetches' User-Agent.
	Version string
}

// DefaultConfig returns the settings fragcache runs with when nothing is
// configured: every default of every field, in this one place. New gives
// a zero field the value DefaultConfig has, except for the fields whose
// zero means something (Wait, MaxWait, StaleTTL, AccessLog, PreserveHost):
// those keep it. Upstream, Logger, Metrics and Version are left empty.
func DefaultConfig() Config {
	return Config{
		Trigger:            TriggerSurrogate,
		Wait:               50 * time.Millisecond,
		MaxWait:            time.Second,
		FragmentTTL:        60 * time.Second,
		StaleTTL:           10 * time.Minute,
		FetchTimeout:       10 * time.Second,
		UpstreamTimeout:    30 * time.Second,
		ReadTimeout:        30 * time.Second,
		CacheSize:          256 << 20,
		MaxPageSize:        10 << 20,
		MaxFragmentSize:    1 << 20,
		MaxHeaderBytes:     64 << 10,
		MaxRequestBodySize: 1 << 30,
		MaxDepth:           5,
		MaxIncludes:        256,
		FetchConcurrency:   256,
		FetchPerHost:       64,
		RefreshQueue:       1024,
		FetchQueue:         4096,
		RedisPrefix:        "fragcache",
		RedisTimeout:       25 * time.Millisecond,
		AccessLog:          true,
	}
}

// setDefaults gives every zero field that has a default DefaultConfig's
// value. Negative values are left for Validate to refuse.
func (c *Config) setDefaults() {
	d := DefaultConfig()
	dur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	dur(&c.FragmentTTL, d.FragmentTTL)
	dur(&c.FetchTimeout, d.FetchTimeout)
	dur(&c.UpstreamTimeout, d.UpstreamTimeout)
	dur(&c.ReadTimeout, d.ReadTimeout)
	dur(&c.RedisTimeout, d.RedisTimeout)
	if c.RedisPrefix == "" {
		c.RedisPrefix = d.RedisPrefix
	}
	size := func(p *int64, v int64) {
		if *p == 0 {
			*p = v
		}
	}
	size(&c.CacheSize, d.CacheSize)
	size(&c.MaxPageSize, d.MaxPageSize)
	size(&c.MaxFragmentSize, d.MaxFragmentSize)
	count := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	count(&c.MaxHeaderBytes, d.MaxHeaderBytes)
	count(&c.MaxRequestBodySize, d.MaxRequestBodySize)
	count(&c.MaxDepth, d.MaxDepth)
	count(&c.MaxIncludes, d.MaxIncludes)
	count(&c.FetchConcurrency, d.FetchConcurrency)
	count(&c.FetchPerHost, d.FetchPerHost)
	count(&c.RefreshQueue, d.RefreshQueue)
	count(&c.FetchQueue, d.FetchQueue)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

// validate is New's check: the settings, and the wiring New needs.
func (c *Config) validate() error {
	err := c.Validate()
	if c.Metrics == nil {
		err = errors.Join(err, errors.New("proxy: Metrics is required"))
	}
	return err
}

// FieldError is one problem with one setting of a Config, as Validate
// reports it. Msg never holds the value of a secret (ScopeSecret).
type FieldError struct {
	// Field is the name of the Config field, such as "Wait" or
	// "AllowHosts".
	Field string
	// Index is the element of a list field (AllowHosts, Fragments, …)
	// at fault, or -1 when the field as a whole is.
	Index int
	// Msg says what is wrong, with the value when it is not a secret.
	Msg string
}

func (e *FieldError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("proxy: %s[%d]: %s", e.Field, e.Index, e.Msg)
	}
	return "proxy: " + e.Field + ": " + e.Msg
}

// Limits of Validate that more than one field shares.
const (
	// maxCount caps the counts that size an allocation made when the
	// Proxy starts (queues, semaphores): a typo of a few zeros must be
	// an error, not an out-of-memory crash.
	maxCount = 1 << 20
	// maxRuleNames bounds the values of the fragment metrics label.
	maxRuleNames = 50
	// minDebugToken is the shortest DebugToken.
	minDebugToken = 16
)

// Validate reports every setting of c that is out of range, each as a
// *FieldError, joined. It checks c as it will run and applies no
// defaults: a zero where New would put a default is refused too, so
// validate DefaultConfig with changes (fragcache's command line does), or
// leave it to New, which fills the defaults first. Logger, Metrics and
// Version are not settings and are not checked.
//
// It is one flat list of checks, a few lines per field, on purpose: every
// rule about a setting is found in this one place.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, i int, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Index: i, Msg: fmt.Sprintf(format, a...)})
	}

	if c.Upstream == "" {
		bad("Upstream", -1, "is required")
	} else if err := checkUpstream(c.Upstream); err != nil {
		bad("Upstream", -1, "%v", err)
	}
	if c.Trigger != TriggerSurrogate && c.Trigger != TriggerHTML {
		bad("Trigger", -1, "unknown trigger %d", c.Trigger)
	}
	if c.Redis != "" {
		if err := checkRedis(c.Redis); err != nil {
			bad("Redis", -1, "%v", err)
		}
	}
	if !validRedisPrefix(c.RedisPrefix) {
		bad("RedisPrefix", -1, "%q: 1 to 64 bytes of letters, digits and _.-{}", c.RedisPrefix)
	}

	for _, d := range []struct {
		field  string
		v      time.Duration
		zeroOK bool
	}{
		{"Wait", c.Wait, true}, {"MaxWait", c.MaxWait, true}, {"StaleTTL", c.StaleTTL, true},
		{"FragmentTTL", c.FragmentTTL, false}, {"FetchTimeout", c.FetchTimeout, false},
		{"UpstreamTimeout", c.UpstreamTimeout, false}, {"ReadTimeout", c.ReadTimeout, false},
		{"RedisTimeout", c.RedisTimeout, false},
	} {
		switch {
		case d.zeroOK && d.v < 0:
			bad(d.field, -1, "must not be negative (got %s)", d.v)
		case !d.zeroOK && d.v <= 0:
			bad(d.field, -1, "must be positive (got %s)", d.v)
		}
	}

	if c.StreamBudget < 0 || c.StreamBudget > 0 && (c.StreamBudget <= c.Wait || c.StreamBudget > c.FetchTimeout) {
		bad("StreamBudget", -1, "must be 0 (off) or more than the wait (%s) and at most the fetch timeout (%s) (got %s)",
			c.Wait, c.FetchTimeout, c.StreamBudget)
	}

	for _, s := range []struct {
		field    string
		v        int64
		min, max int64
	}{
		{"CacheSize", c.CacheSize, 1 << 20, 1 << 62},
		{"MaxPageSize", c.MaxPageSize, 1 << 10, 1 << 62},
		{"MaxFragmentSize", c.MaxFragmentSize, 1 << 10, 1 << 62},
		{"MaxHeaderBytes", int64(c.MaxHeaderBytes), 4 << 10, 16 << 20},
		{"MaxRequestBodySize", int64(c.MaxRequestBodySize), 1, 1 << 62},
	} {
		if s.v < s.min {
			bad(s.field, -1, "must be at least %s (got %s)", sizeString(s.min), sizeString(s.v))
		} else if s.v > s.max {
			bad(s.field, -1, "must be at most %s (got %s)", sizeString(s.max), sizeString(s.v))
		}
	}

	for _, n := range []struct {
		field string
		v     int
	}{
		{"MaxDepth", c.MaxDepth}, {"MaxIncludes", c.MaxIncludes}, {"FetchConcurrency", c.FetchConcurrency},
		{"FetchPerHost", c.FetchPerHost}, {"RefreshQueue", c.RefreshQueue}, {"FetchQueue", c.FetchQueue},
	} {
		if n.v < 1 {
			bad(n.field, -1, "must be at least 1 (got %d)", n.v)
		} else if n.v > maxCount {
			bad(n.field, -1, "must be at most %d (got %d)", maxCount, n.v)
		}
	}

	for i, h := range c.AllowHosts {
		if err := checkHostEntry(h); err != nil {
			bad("AllowHosts", i, "%q: %v", h, err)
		}
	}
	for i, h := range c.PublicHosts {
		if h == "" || strings.ContainsAny(h, "/ \t\r\n@") {
			bad("PublicHosts", i, "%q: not a host name", h)
		}
	}
	for _, l := range []struct {
		field string
		names []string
	}{{"ESICookies", c.ESICookies}, {"ScopeCookies", c.ScopeCookies}} {
		for i, ck := range l.names {
			if ck == "" || strings.ContainsAny(ck, "=; \t\r\n,") {
				bad(l.field, i, "%q: not a cookie name", ck)
			}
		}
	}
	for i, tp := range c.TrustedProxies {
		if _, err := parseTrusted(tp); err != nil {
			bad("TrustedProxies", i, "%q: %v", tp, err)
		}
	}
	if _, err := parseTrustedList(c.TrustedProxies); err != nil {
		bad("TrustedProxies", -1, "%v", err)
	}
	if n := len(c.DebugToken); n > 0 && n < minDebugToken {
		bad("DebugToken", -1, "must be at least %d bytes", minDebugToken)
	}
	if c.PreserveHost && len(c.PublicHosts) == 0 {
		bad("PreserveHost", -1, "requires PublicHosts: the client's Host must be one that fragcache serves")
	}

	names := map[string]bool{}
	for i, r := range c.Fragments {
		if r.Name != "" {
			names[r.Name] = true
		}
		if r.Name == metrics.OtherFragment {
			bad("Fragments", i, "the name %q is reserved for unnamed fragments", r.Name)
		}
		if !strings.HasPrefix(r.Match, "/") {
			bad("Fragments", i, "a rule needs match: a path prefix starting with / (got %q)", r.Match)
		}
		if r.TTL < 0 {
			bad("Fragments", i, "ttl must not be negative (got %s)", r.TTL)
		}
	}
	if len(names) > maxRuleNames {
		bad("Fragments", -1, "at most %d names (got %d)", maxRuleNames, len(names))
	}
	return errors.Join(errs...)
}

// checkUpstream accepts scheme://host[:port] with http or https and no
// path, query or credentials.
func checkUpstream(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: the scheme must be http or https", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q has no host", raw)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not carry credentials", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must be scheme://host[:port] with no path", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port", raw)
		}
	}
	return nil
}

// checkRedis accepts a Redis URL. Its messages never quote the URL, which
// may carry a password.
func checkRedis(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return errors.New("is not a URL")
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return errors.New("the scheme must be redis or rediss")
	case u.Hostname() == "":
		return errors.New("has no host")
	}
	return nil
}

// validRedisPrefix is l2's rule for key prefixes.
func validRedisPrefix(p string) bool {
	if len(p) == 0 || len(p) > 64 {
		return false
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("_.-{}", r):
		default:
			return false
		}
	}
	return true
}

// checkHostEntry accepts an AllowHosts entry: host (any port) or
// host:port.
func checkHostEntry(h string) error {
	if h == "" || strings.ContainsAny(h, "/ \t\r\n@?#") {
		return errors.New("want host or host:port")
	}
	host := h
	if strings.Contains(h, ":") {
		hh, p, err := net.SplitHostPort(h)
		if err != nil {
			if strings.Count(h, ":") > 1 && !strings.Contains(h, "[") { // bare IPv6
				return nil
			}
			return errors.New("want host or host:port")
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("bad port")
		}
		host = hh
	}
	if host == "" {
		return errors.New("empty host")
	}
	return nil
}

// parseTrusted reads a TrustedProxies entry: a CIDR (10.0.0.0/8,
// fd00::/8) or a single address (10.0.0.1, ::1), which is its /32 or
// /128. A CIDR with host bits set (10.0.0.1/8) is refused: it is most
// likely a typo for an address or for a narrower range.
func parseTrusted(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errors.New("not a CIDR such as 10.0.0.0/8")
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("has bits set past its /%d (did you mean %s?)", p.Bits(), p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("not an address or a CIDR such as 10.0.0.0/8")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// sizeString writes n bytes as the largest IEC unit that holds it
// exactly: 1MiB, 64KiB, 1000.
func sizeString(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}
