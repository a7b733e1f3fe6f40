package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"

	"fragcache/proxy"
)

// config is every setting of the command line: the proxy's, mapped onto
// proxy.Config, whose defaults (proxy.DefaultConfig) and validation
// (proxy.Config.Validate) are the only ones, and main's own (listeners,
// TLS, logging, shutdown, the demo), defaulted in newConfig and checked in
// check. It is filled once by loadConfig and read-only afterwards.
type config struct {
	// Proxy holds the proxy's settings; run adds the wiring (Logger,
	// Metrics, Version, and the demo's Upstream).
	Proxy proxy.Config

	Listen          string
	AdminListen     string
	TLSCert         string
	TLSKey          string
	ShutdownTimeout time.Duration
	DrainDelay      time.Duration
	Pprof           bool
	LogFormat       string
	ConfigFile      string
	Demo            bool
	ShowVersion     bool
	PurgeTokenFile  string

	// cert is the front listener's certificate, read from TLSCert and
	// TLSKey by check; nil without TLS.
	cert *tls.Certificate
	// purgeToken is the bearer token of POST /purge, from
	// FRAGCACHE_PURGE_TOKEN or read from PurgeTokenFile by check; nil:
	// purging is off. A secret.
	purgeToken []byte
	// warnings are problems that do not stop fragcache; run logs them.
	warnings []string

	opts      []*option
	ruleLines []int // the file's line of each fragment rule
}

// newConfig returns the configuration before any flag, variable or file:
// the proxy's defaults and main's own.
func newConfig() *config {
	c := &config{
		Proxy:           proxy.DefaultConfig(),
		Listen:          ":8080",
		AdminListen:     "127.0.0.1:9188",
		ShutdownTimeout: 15 * time.Second,
		DrainDelay:      5 * time.Second,
		LogFormat:       "json",
	}
	c.opts = c.options()
	return c
}

// options is the table of every setting: flag name, help line, where the
// value goes and, for proxy settings, the proxy.Config field whose
// validation errors it answers for. The default shown by --help is the
// target's value in newConfig unless def says it in words.
func (c *config) options() []*option {
	p := &c.Proxy
	return []*option{
		{name: "listen", help: "front listener", val: strVal{&c.Listen}},
		{name: "upstream", help: "the legacy app, scheme://host[:port]", def: "required unless --demo",
			val: strVal{&p.Upstream}, field: "Upstream"},
		{name: "admin-listen", help: "the admin page /, /metrics, /livez, /readyz, /healthz; /debug/pprof with --pprof (the deploy kit sets :9188)", val: strVal{&c.AdminListen}},
		{name: "wait", help: "longest a page waits for fragments not in the cache; 0 = never",
			val: durVal{&p.Wait}, field: "Wait", live: true},
		{name: "fragment-ttl", help: "freshness when the fragment response sets none",
			val: durVal{&p.FragmentTTL}, field: "FragmentTTL", live: true},
		{name: "stale-ttl", help: "how long a stale copy may be served while refreshing",
			val: durVal{&p.StaleTTL}, field: "StaleTTL", live: true},
		{name: "fetch-timeout", help: "limit for one background fetch", val: durVal{&p.FetchTimeout}, field: "FetchTimeout"},
		{name: "stream-budget", help: "how long a page stays open to stream fragments still pending after the wait; 0 = off",
			def: "0 (--demo: 4s)", val: durVal{&p.StreamBudget}, field: "StreamBudget", live: true},
		{name: "cache-size", help: "fragment cache budget", val: sizeVal[int64]{&p.CacheSize}, field: "CacheSize", live: true},
		{name: "allow-host", help: "extra hosts fragment URLs may reach: host (any port) or host:port; repeatable",
			val: listVal{&p.AllowHosts}, field: "AllowHosts", live: true},
		{name: "esi-cookie", help: "cookie names $(HTTP_COOKIE{name}) may expand; repeatable",
			val: listVal{&p.ESICookies}, field: "ESICookies", live: true},
		{name: "max-depth", help: "nesting limit of fragments that include fragments", val: intVal{&p.MaxDepth}, field: "MaxDepth", live: true},
		{name: "max-includes", help: "includes processed per page; the rest get their placeholder",
			val: intVal{&p.MaxIncludes}, field: "MaxIncludes", live: true},
		{name: "esi-trigger", help: `surrogate: only responses with Surrogate-Control: content="ESI/1.0"; html: every text/html response`,
			val: triggerVal{&p.Trigger}, field: "Trigger"},
		{name: "demo", help: "run the embedded slow demo app and proxy it", val: boolVal{&c.Demo}, flagOnly: true},
		{name: "max-wait", help: "cap on an include's timeout attribute", val: durVal{&p.MaxWait}, field: "MaxWait", live: true},
		{name: "upstream-timeout", help: "page request: time to response headers (then 504) and longest pause while streaming",
			val: durVal{&p.UpstreamTimeout}, field: "UpstreamTimeout"},
		{name: "read-timeout", help: "time a client has to send a whole request; slower clients (slowloris) are cut",
			val: durVal{&p.ReadTimeout}, field: "ReadTimeout"},
		{name: "max-page-size", help: "decoded size cap of an opted-in page (over it: 502) and of the composed output",
			val: sizeVal[int64]{&p.MaxPageSize}, field: "MaxPageSize", live: true},
		{name: "max-fragment-size", help: "decoded size cap of a fragment; over it the fetch fails",
			val: sizeVal[int64]{&p.MaxFragmentSize}, field: "MaxFragmentSize", live: true},
		{name: "max-header-bytes", help: "request and upstream response header buffers (431 beyond)",
			val: sizeVal[int]{&p.MaxHeaderBytes}, field: "MaxHeaderBytes"},
		{name: "fetch-concurrency", help: "fragment loads at once; beyond it loads wait in the fetch queue",
			val: intVal{&p.FetchConcurrency}, field: "FetchConcurrency"},
		{name: "fetch-per-host", help: "connections per fragment host", val: intVal{&p.FetchPerHost}, field: "FetchPerHost"},
		{name: "refresh-queue", help: "pending background refreshes; beyond it refreshes are shed and counted",
			val: intVal{&p.RefreshQueue}, field: "RefreshQueue"},
		{name: "scope-secret", help: "HMAC key of user scopes; set it when replicas must agree (prefer the environment variable)",
			def: "random per process", val: bytesVal{&p.ScopeSecret}, field: "ScopeSecret", secret: true},
		{name: "public-host", help: "hosts fragcache serves; $(HTTP_HOST) comes from here; repeatable",
			def: "the upstream's host", val: listVal{&p.PublicHosts}, field: "PublicHosts"},
		{name: "shutdown-timeout", help: "SIGTERM: time for in-flight requests before exit", val: durVal{&c.ShutdownTimeout}},
		{name: "drain-delay", help: "SIGTERM: /readyz answers 503 this long before the listener closes", val: durVal{&c.DrainDelay}},
		{name: "access-log", help: "one log line per request with its fragment counts", val: boolVal{&p.AccessLog}, field: "AccessLog"},
		{name: "pprof", help: "/debug/pprof on the admin listener", val: boolVal{&c.Pprof}},
		{name: "config", help: "the YAML file (unknown keys are an error, with their line); re-read on SIGHUP",
			val: strVal{&c.ConfigFile}, noYAML: true},
		{name: "log-format", help: "json or text", val: choiceVal{&c.LogFormat, []string{"json", "text"}}},
		{name: "version", help: "print the version (also in fragcache_build_info)", val: boolVal{&c.ShowVersion}, flagOnly: true},
		{name: "fetch-queue", help: "cold loads waiting for one of --fetch-concurrency; beyond it they are shed",
			val: intVal{&p.FetchQueue}, field: "FetchQueue"},
		{name: "scope-cookie", help: "cookies that identify a user for scopes and are sent to fragments; repeatable",
			def: "every cookie", val: listVal{&p.ScopeCookies}, field: "ScopeCookies"},
		{name: "trusted-proxy", help: "client CIDRs or addresses whose X-Forwarded-For/-Proto/-Host are kept; repeatable",
			val: listVal{&p.TrustedProxies}, field: "TrustedProxies"},
		{name: "preserve-host", help: "send the client's Host to the upstream instead of the upstream's host; needs --public-host",
			val: boolVal{&p.PreserveHost}, field: "PreserveHost"},
		{name: "redis", help: "shared L2 for every replica: redis://[user:password@]host:port/db or rediss://; password also from FRAGCACHE_REDIS_PASSWORD",
			def: "off", val: strVal{&p.Redis}, field: "Redis"},
		{name: "redis-prefix", help: "prefix of every Redis key and the event channel (deployments sharing one Redis)",
			val: strVal{&p.RedisPrefix}, field: "RedisPrefix"},
		{name: "redis-timeout", help: "limit for one Redis request; beyond it the L2 is skipped and its breaker opens",
			val: durVal{&p.RedisTimeout}, field: "RedisTimeout"},
		{name: "debug-token", help: "token of the Fragcache-Debug request header that adds per-include Server-Timing; at least 16 bytes (prefer the environment variable)",
			def: "none", val: bytesVal{&p.DebugToken}, field: "DebugToken", secret: true},
		{name: "purge-token-file", help: "file holding the bearer token of POST /purge on the admin listener (at least 16 bytes); without a token purging is off; re-read on SIGHUP",
			def: "none; or env FRAGCACHE_PURGE_TOKEN", val: strVal{&c.PurgeTokenFile}, live: true},
		{name: "tls-cert", help: "PEM certificate chain: serve the front listener over TLS; reloaded on SIGHUP",
			val: strVal{&c.TLSCert}, live: true},
		{name: "tls-key", help: "PEM private key of --tls-cert; reloaded on SIGHUP", val: strVal{&c.TLSKey}, live: true},
	}
}

// option is one setting. Its env name is FRAGCACHE_<UPPER_SNAKE> and its
// YAML key the snake_case of the flag name.
type option struct {
	name  string
	help  string
	val   value
	def   string // the default in words, shown instead of the value
	field string // the proxy.Config field it sets; "" for main's own

	flagOnly bool // --demo, --version: no env, no YAML key
	noYAML   bool // --config: flag and env only
	secret   bool // never shown: <redacted> in errors, no default in --help
	live     bool // applied by SIGHUP; every other change needs a restart

	from   valueSource // where the value came from
	failed bool        // a value given for it did not parse
}

func (o *option) env() string {
	return "FRAGCACHE_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

func (o *option) yamlKey() string { return strings.ReplaceAll(o.name, "-", "_") }

// defaultText is the default as --help and README show it.
func (o *option) defaultText() string {
	if o.def != "" {
		return o.def
	}
	if s := o.val.String(); s != "" {
		return s
	}
	return "none"
}

type sourceKind int

const (
	fromDefault sourceKind = iota
	fromFile
	fromEnv
	fromFlag
)

// valueSource says where an option's value came from, so that an error names
// the flag, the environment variable or the file and line to fix.
type valueSource struct {
	kind  sourceKind
	file  string
	line  int
	items []int // the line of each item of a list written as a YAML sequence
}

// where names the source of the option's value, or of its list item i
// (-1: the whole value): "flag --wait", "env FRAGCACHE_WAIT" or
// "config fragcache.yaml:12: wait".
func (o *option) where(item int) string {
	switch o.from.kind {
	case fromFlag:
		return "flag --" + o.name
	case fromEnv:
		return "env " + o.env()
	case fromFile:
		line := o.from.line
		if item >= 0 && item < len(o.from.items) {
			line = o.from.items[item]
		}
		return fmt.Sprintf("config %s:%d: %s", o.from.file, line, o.yamlKey())
	}
	return "--" + o.name
}

// value is the parsed form of one option, written through to its target.
type value interface {
	// set parses raw into the target; lists take comma-separated values
	// and append when appendList is true (repeated flags, YAML items).
	set(raw string, appendList bool) error
	// String is the value as --help shows it and a reload compares it.
	String() string
}

type strVal struct{ p *string }

func (v strVal) set(raw string, _ bool) error { *v.p = raw; return nil }
func (v strVal) String() string               { return *v.p }

type bytesVal struct{ p *[]byte }

func (v bytesVal) set(raw string, _ bool) error { *v.p = []byte(raw); return nil }
func (v bytesVal) String() string               { return string(*v.p) }

type choiceVal struct {
	p       *string
	choices []string
}

func (v choiceVal) set(raw string, _ bool) error {
	for _, c := range v.choices {
		if raw == c {
			*v.p = raw
			return nil
		}
	}
	return fmt.Errorf("must be %s (got %q)", strings.Join(v.choices, " or "), raw)
}
func (v choiceVal) String() string { return *v.p }

type triggerVal struct{ p *proxy.Trigger }

func (v triggerVal) set(raw string, _ bool) error {
	switch raw {
	case "surrogate":
		*v.p = proxy.TriggerSurrogate
	case "html":
		*v.p = proxy.TriggerHTML
	default:
		return fmt.Errorf("must be surrogate or html (got %q)", raw)
	}
	return nil
}

func (v triggerVal) String() string {
	if *v.p == proxy.TriggerHTML {
		return "html"
	}
	return "surrogate"
}

type durVal struct{ p *time.Duration }

func (v durVal) set(raw string, _ bool) error {
	d, err := parseDuration(raw)
	if err != nil {
		return err
	}
	*v.p = d
	return nil
}
func (v durVal) String() string { return formatDuration(*v.p) }

type sizeVal[T int | int64] struct{ p *T }

func (v sizeVal[T]) set(raw string, _ bool) error {
	n, err := parseSize(raw)
	if err != nil {
		return err
	}
	*v.p = T(n)
	return nil
}
func (v sizeVal[T]) String() string { return formatSize(int64(*v.p)) }

type intVal struct{ p *int }

func (v intVal) set(raw string, _ bool) error {
	n, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", raw)
	}
	*v.p = n
	return nil
}
func (v intVal) String() string { return strconv.Itoa(*v.p) }

type boolVal struct{ p *bool }

func (v boolVal) set(raw string, _ bool) error {
	switch strings.ToLower(strings.TrimSpace(raw)) {
	case "on", "yes":
		*v.p = true
		return nil
	case "off", "no":
		*v.p = false
		return nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(raw))
	if err != nil {
		return fmt.Errorf("%q is not true or false (on or off)", raw)
	}
	*v.p = b
	return nil
}

func (v boolVal) String() string {
	if *v.p {
		return "on"
	}
	return "off"
}

type listVal struct{ p *[]string }

func (v listVal) set(raw string, appendList bool) error {
	if !appendList {
		*v.p = nil
	}
	for _, s := range strings.Split(raw, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*v.p = append(*v.p, s)
		}
	}
	return nil
}
func (v listVal) String() string { return strings.Join(*v.p, ",") }

func parseDuration(raw string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(raw))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 250ms or 1m", raw)
	}
	return d, nil
}

// parseSize reads IEC and SI sizes: 256MiB is 2^28 bytes, 256MB 256e6.
func parseSize(raw string) (int64, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(raw))
	if err != nil || n > 1<<62 {
		return 0, fmt.Errorf("%q is not a size such as 256MiB or 10MB", raw)
	}
	return int64(n), nil
}

// formatDuration writes d in the one unit that holds it exactly, as an
// operator would write it: 50ms, 30s, 60s, 10m, 24h.
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0 && d >= 2*time.Minute:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// formatSize writes n bytes in the largest IEC unit that holds it
// exactly: 256MiB, 64KiB, 1000.
func formatSize(n int64) string {
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

// flagValue collects the raw strings given for one flag.
type flagValue struct {
	opt  *option
	vals *[]string
}

func (f flagValue) String() string { return "" }
func (f flagValue) Set(s string) error {
	*f.vals = append(*f.vals, s)
	return nil
}
func (f flagValue) IsBoolFlag() bool { _, ok := f.opt.val.(boolVal); return ok }

// errUsage marks configuration errors: main exits 2 on them.
var errUsage = errors.New("invalid configuration")

// errHelp is returned when -h or --help was asked for.
var errHelp = flag.ErrHelp

// loadConfig reads flags, then the environment through getenv, then the
// YAML file, and applies them with the precedence flag > env > file >
// default. environ, the process's KEY=value list, is only looked at for
// FRAGCACHE_* variables that match no setting, which become warnings.
// Every problem is reported at once, joined, and wrapped in errUsage;
// each names where its value came from. -h and --help return errHelp and
// print nothing: the caller prints the usage.
func loadConfig(args []string, getenv func(string) string, environ []string) (*config, error) {
	c := newConfig()
	fs := flag.NewFlagSet("fragcache", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // the flag package would print it on every error
	given := map[*option]*[]string{}
	for _, o := range c.opts {
		vals := new([]string)
		given[o] = vals
		fs.Var(flagValue{o, vals}, o.name, o.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, fmt.Errorf("%w: %s", errUsage, flagError(err, c.opts))
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q (see --help)", errUsage, fs.Arg(0))
	}

	var errs []error
	// Env-only secrets (DESIGN rule 24).
	c.Proxy.RedisPassword = getenv("FRAGCACHE_REDIS_PASSWORD")
	if tok := getenv(purgeTokenEnv); tok != "" {
		c.purgeToken = []byte(tok)
	}
	// The config file's name comes from the flag, else the env.
	file := getenv("FRAGCACHE_CONFIG")
	if v := *given[c.opt("config")]; len(v) > 0 {
		file = v[len(v)-1]
	}
	if file != "" {
		errs = append(errs, c.loadYAML(file)...)
	}
	for _, o := range c.opts {
		if o.flagOnly {
			continue
		}
		if v := getenv(o.env()); v != "" {
			if err := o.val.set(v, false); err != nil {
				o.failed = true
				errs = append(errs, fmt.Errorf("env %s: %w", o.env(), o.redact(err)))
				continue
			}
			o.from = valueSource{kind: fromEnv}
		}
	}
	for _, o := range c.opts {
		vals := *given[o]
		for i, v := range vals {
			if err := o.val.set(v, i > 0); err != nil {
				o.failed = true
				errs = append(errs, fmt.Errorf("flag --%s: %w", o.name, o.redact(err)))
				continue
			}
			o.from = valueSource{kind: fromFlag}
		}
		if o.secret && len(vals) > 0 {
			c.warnings = append(c.warnings, fmt.Sprintf("--%s on the command line is visible to every user of the machine; set %s instead", o.name, o.env()))
		}
	}
	c.ConfigFile = file
	if o := c.opt("stream-budget"); c.Demo && o.from.kind == fromDefault &&
		c.Proxy.Wait < demoStreamBudget && c.Proxy.FetchTimeout >= demoStreamBudget {
		// The demo's first view fills in by itself (DESIGN rule 34); an
		// explicit --stream-budget, variable or file key wins, and so
		// does a --wait or --fetch-timeout the budget would not fit.
		c.Proxy.StreamBudget = demoStreamBudget
	}
	c.warnings = append(c.warnings, unknownEnv(environ, c.opts)...)
	if c.ShowVersion {
		return c, nil // --version needs nothing else
	}
	errs = append(errs, c.check()...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n%w", errUsage, errors.Join(errs...))
	}
	return c, nil
}

// redact keeps a secret's value out of a parse error. No parser of a
// secret quotes its input today; this keeps it so.
func (o *option) redact(err error) error {
	if o.secret {
		return errors.New("<redacted> is not a valid value")
	}
	return err
}

// optByKey returns the option whose YAML key (as changed names it) is
// key.
func (c *config) optByKey(key string) *option {
	return c.opt(strings.ReplaceAll(key, "_", "-"))
}

func (c *config) opt(name string) *option {
	for _, o := range c.opts {
		if o.name == name {
			return o
		}
	}
	panic("no option --" + name)
}

// flagError turns the flag package's error into one line: an unknown
// flag gets the nearest known one as a suggestion.
func flagError(err error, opts []*option) string {
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
	if !ok {
		return err.Error() + " (see --help)"
	}
	names := make([]string, len(opts))
	for i, o := range opts {
		names[i] = o.name
	}
	msg := "unknown flag --" + name
	if s := nearest(name, names); s != "" {
		return msg + " (did you mean --" + s + "?)"
	}
	return msg + " (see --help)"
}

// notSettings are FRAGCACHE_* variables that are read but are no setting
// of the server, so no warning names them: the secrets that have an
// environment form only (DESIGN rule 24) and the variables of the
// repository's tests, CI and deploy checks.
var notSettings = map[string]bool{
	"FRAGCACHE_REDIS_PASSWORD":   true,
	"FRAGCACHE_PURGE_TOKEN":      true,
	"FRAGCACHE_REQUIRE_EXTERNAL": true,
	"FRAGCACHE_SOAK":             true,
	"FRAGCACHE_PRIVACY_SOAK":     true,
	"FRAGCACHE_CLUSTER_FIGURES":  true,
	"FRAGCACHE_PURGE_FIGURES":    true,
	"FRAGCACHE_BIN":              true,
	"FRAGCACHE_GOTOOLCHAIN":      true,
	"FRAGCACHE_SCREENSHOTS":      true,
}

// unknownEnv names each FRAGCACHE_* variable of environ that matches no
// setting, with the nearest one that does. Values are never shown.
func unknownEnv(environ []string, opts []*option) []string {
	known := map[string]*option{}
	var envs []string
	for _, o := range opts {
		known[o.env()] = o
		if !o.flagOnly {
			envs = append(envs, o.env())
		}
	}
	var warns []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "FRAGCACHE_") || notSettings[name] || strings.HasPrefix(name, "FRAGCACHE_SOAK_") {
			continue
		}
		o, ok := known[name]
		switch {
		case ok && !o.flagOnly:
			continue
		case ok:
			warns = append(warns, fmt.Sprintf("environment variable %s matches no setting: --%s is a flag only", name, o.name))
		default:
			msg := fmt.Sprintf("environment variable %s matches no setting", name)
			if s := nearest(name, envs); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			warns = append(warns, msg)
		}
	}
	sort.Strings(warns)
	return warns
}

// printUsage writes the usage once: the command forms and every option
// with its environment variable and default.
func printUsage(w io.Writer, opts []*option) {
	fmt.Fprintf(w, "Usage: fragcache [flags]\n       fragcache demo --listen ADDR\n       fragcache healthcheck [--admin-listen ADDR] [--timeout 2s]\n")
	fmt.Fprintf(w, "       fragcache purge [--tag T] [--url U] [--prefix P] [--hard] [--admin-listen ADDR] [--purge-token-file F]\n\n")
	fmt.Fprintf(w, "Every flag is also an env var FRAGCACHE_<NAME> and a snake_case key of the --config YAML file;\n")
	fmt.Fprintf(w, "precedence: flag > env > file > default. SIGHUP re-reads them: a setting marked \"reload: live\"\n")
	fmt.Fprintf(w, "(and the fragment rules) applies to new requests at once; other changes are logged and take\n")
	fmt.Fprintf(w, "effect on restart.\n\n")
	for _, o := range opts {
		env := o.env()
		if o.flagOnly {
			env = "(flag only)"
		}
		def := "default " + o.defaultText()
		if strings.HasPrefix(o.def, "required") {
			def = o.def
		}
		if o.live {
			def += "; reload: live"
		}
		fmt.Fprintf(w, "  --%-18s %s\n      %s (%s)\n", o.name, env, o.help, def)
	}
}

// loadYAML applies the file's settings and records their lines. Unknown
// keys are errors that name their line and the nearest known key.
func (c *config) loadYAML(file string) []error {
	data, err := os.ReadFile(file)
	if err != nil {
		return []error{fmt.Errorf("config: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// The parser says "yaml: line 3: …": name the file and line the
		// way every other error of the file does.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if n, text, ok := strings.Cut(rest, ": "); ok {
				if _, err := strconv.Atoi(n); err == nil {
					return []error{fmt.Errorf("config %s:%s: %s", file, n, text)}
				}
			}
		}
		return []error{fmt.Errorf("config %s: %s", file, msg)}
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("config %s:%d: the top level must be a mapping of settings", file, root.Line)}
	}
	byKey := map[string]*option{}
	keys := []string{"fragments"}
	for _, o := range c.opts {
		if !o.flagOnly && !o.noYAML {
			byKey[o.yamlKey()] = o
			keys = append(keys, o.yamlKey())
		}
	}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		at := fmt.Sprintf("config %s:%d", file, k.Line)
		if k.Value == "fragments" {
			errs = append(errs, c.loadRules(file, v)...)
			continue
		}
		o, ok := byKey[k.Value]
		if !ok {
			msg := fmt.Sprintf("%s: unknown key %q", at, k.Value)
			if s := nearest(k.Value, keys); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		from := valueSource{kind: fromFile, file: file, line: k.Line}
		_, isList := o.val.(listVal)
		switch {
		case v.Kind == yaml.SequenceNode && isList:
			_ = o.val.set("", false)
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					errs = append(errs, fmt.Errorf("config %s:%d: %s: list items must be plain values", file, item.Line, k.Value))
					continue
				}
				before := len(*o.val.(listVal).p)
				_ = o.val.set(item.Value, true)
				for range len(*o.val.(listVal).p) - before {
					from.items = append(from.items, item.Line)
				}
			}
			o.from = from
		case v.Kind == yaml.ScalarNode:
			if err := o.val.set(v.Value, false); err != nil {
				o.failed = true
				errs = append(errs, fmt.Errorf("%s: %s: %w", at, k.Value, o.redact(err)))
				continue
			}
			o.from = from
		default:
			errs = append(errs, fmt.Errorf("%s: %s must be a single value", at, k.Value))
		}
	}
	return errs
}

// loadRules reads the fragments list. The rules' own checks are the
// proxy's (proxy.Config.Validate); check maps them back to these lines.
func (c *config) loadRules(file string, n *yaml.Node) []error {
	if n.Kind != yaml.SequenceNode {
		return []error{fmt.Errorf("config %s:%d: fragments must be a list", file, n.Line)}
	}
	var errs []error
	for _, item := range n.Content {
		if item.Kind != yaml.MappingNode {
			errs = append(errs, fmt.Errorf("config %s:%d: each fragment rule must be a mapping", file, item.Line))
			continue
		}
		var r proxy.FragmentRule
		for i := 0; i+1 < len(item.Content); i += 2 {
			k, v := item.Content[i], item.Content[i+1]
			at := fmt.Sprintf("config %s:%d", file, k.Line)
			if v.Kind != yaml.ScalarNode {
				errs = append(errs, fmt.Errorf("%s: fragments.%s must be a single value", at, k.Value))
				continue
			}
			switch k.Value {
			case "name":
				r.Name = v.Value
			case "match":
				r.Match = v.Value
			case "share":
				if err := (boolVal{&r.Share}).set(v.Value, false); err != nil {
					errs = append(errs, fmt.Errorf("%s: fragments.share: %w", at, err))
				}
			case "ttl":
				if err := (durVal{&r.TTL}).set(v.Value, false); err != nil {
					errs = append(errs, fmt.Errorf("%s: fragments.ttl: %w", at, err))
				}
			case "language":
				lang := true
				if err := (boolVal{&lang}).set(v.Value, false); err != nil {
					errs = append(errs, fmt.Errorf("%s: fragments.language: %w", at, err))
				}
				r.NoLanguage = !lang
			case "stream":
				stream := true
				if err := (boolVal{&stream}).set(v.Value, false); err != nil {
					errs = append(errs, fmt.Errorf("%s: fragments.stream: %w", at, err))
				}
				r.NoStream = !stream
			default:
				msg := fmt.Sprintf("%s: unknown key %q in a fragment rule", at, k.Value)
				if s := nearest(k.Value, []string{"name", "match", "share", "ttl", "language", "stream"}); s != "" {
					msg += " (did you mean " + s + "?)"
				}
				errs = append(errs, errors.New(msg))
			}
		}
		c.Proxy.Fragments = append(c.Proxy.Fragments, r)
		c.ruleLines = append(c.ruleLines, item.Line)
	}
	return errs
}

// check validates the assembled configuration: main's own settings here,
// the proxy's by proxy.Config.Validate, whose errors are given the source
// of the value they are about. It loads the TLS certificate.
func (c *config) check() []error {
	var errs []error
	bad := func(o *option, format string, a ...any) {
		if !o.failed { // its parse error was reported already
			errs = append(errs, fmt.Errorf("%s: "+format, append([]any{o.where(-1)}, a...)...))
		}
	}

	up := c.opt("upstream")
	switch {
	case c.Demo && c.Proxy.Upstream != "":
		bad(up, "--demo and --upstream exclude each other: the demo is its own upstream")
	case !c.Demo && c.Proxy.Upstream == "":
		errs = append(errs, errors.New("--upstream is required (or --demo)"))
	}
	for _, name := range []string{"listen", "admin-listen"} {
		o := c.opt(name)
		if _, _, err := net.SplitHostPort(o.val.String()); err != nil {
			bad(o, "%q is not host:port", o.val.String())
		}
	}
	if c.ShutdownTimeout <= 0 {
		bad(c.opt("shutdown-timeout"), "must be positive (got %s)", c.ShutdownTimeout)
	}
	if c.DrainDelay < 0 {
		bad(c.opt("drain-delay"), "must not be negative (got %s)", c.DrainDelay)
	}
	switch cert, key := c.opt("tls-cert"), c.opt("tls-key"); {
	case c.TLSCert == "" && c.TLSKey == "":
	case c.TLSCert == "":
		bad(key, "needs --tls-cert as well")
	case c.TLSKey == "":
		bad(cert, "needs --tls-key as well")
	default:
		crt, err := loadCertificate(c.TLSCert, c.TLSKey)
		if err != nil {
			bad(cert, "%v", err)
		}
		c.cert = crt
	}

	if err := c.loadPurgeToken(); err != nil {
		errs = append(errs, err)
	}

	// The proxy's rules are the proxy's. An upstream that is missing was
	// reported above (or is the demo's, known only when it runs).
	pc := c.Proxy
	if pc.Upstream == "" {
		pc.Upstream = "http://127.0.0.1"
	}
	byField := map[string]*option{}
	for _, o := range c.opts {
		if o.field != "" {
			byField[o.field] = o
		}
	}
	for _, err := range unjoin(pc.Validate()) {
		var fe *proxy.FieldError
		if !errors.As(err, &fe) {
			errs = append(errs, err)
			continue
		}
		if fe.Field == "Fragments" {
			errs = append(errs, fmt.Errorf("%s: fragments: %s", c.ruleWhere(fe.Index), fe.Msg))
			continue
		}
		o := byField[fe.Field]
		switch {
		case o == nil:
			errs = append(errs, err)
		case !o.failed:
			errs = append(errs, fmt.Errorf("%s: %s", o.where(fe.Index), flagNames(fe.Msg, byField)))
		}
	}
	return errs
}

// purgeTokenEnv is the environment form of the purge token (DESIGN rule
// 24: env only).
const purgeTokenEnv = "FRAGCACHE_PURGE_TOKEN"

// minTokenLen is the shortest token accepted (DESIGN rule 24).
const minTokenLen = 16

// loadPurgeToken reads the purge token from --purge-token-file, or checks
// the one FRAGCACHE_PURGE_TOKEN gave; both at once is an error. The
// token's value never appears in an error.
func (c *config) loadPurgeToken() error {
	o := c.opt("purge-token-file")
	switch {
	case c.PurgeTokenFile != "" && c.purgeToken != nil:
		return fmt.Errorf("%s: %s is set as well: give the purge token one way", o.where(-1), purgeTokenEnv)
	case c.PurgeTokenFile != "":
		tok, err := readTokenFile(c.PurgeTokenFile)
		if err != nil {
			return fmt.Errorf("%s: %w", o.where(-1), err)
		}
		c.purgeToken = tok
	case c.purgeToken != nil && len(bytes.TrimSpace(c.purgeToken)) < minTokenLen:
		return fmt.Errorf("env %s: <redacted> is shorter than %d bytes", purgeTokenEnv, minTokenLen)
	case c.purgeToken != nil:
		c.purgeToken = bytes.TrimSpace(c.purgeToken)
	}
	return nil
}

// readTokenFile reads a token file: its content with surrounding white
// space trimmed, at least minTokenLen bytes.
func readTokenFile(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err // names the file, never its content
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < minTokenLen {
		return nil, fmt.Errorf("%s holds %d bytes, a token needs at least %d", file, len(tok), minTokenLen)
	}
	return tok, nil
}

// flagNames writes the proxy.Config field names in msg, outside its
// quoted values, as the flags that set them: "requires PublicHosts"
// becomes "requires --public-host".
func flagNames(msg string, byField map[string]*option) string {
	parts := strings.Split(msg, `"`)
	for i := 0; i < len(parts); i += 2 {
		words := strings.Split(parts[i], " ")
		for j, w := range words {
			word := strings.TrimRight(w, ":,;.")
			if o := byField[word]; o != nil {
				words[j] = "--" + o.name + w[len(word):]
			}
		}
		parts[i] = strings.Join(words, " ")
	}
	return strings.Join(parts, `"`)
}

// ruleWhere names the file and line of fragment rule i (-1: the list).
func (c *config) ruleWhere(i int) string {
	switch {
	case i >= 0 && i < len(c.ruleLines):
		return fmt.Sprintf("config %s:%d", c.ConfigFile, c.ruleLines[i])
	case len(c.ruleLines) > 0:
		return fmt.Sprintf("config %s:%d", c.ConfigFile, c.ruleLines[0])
	}
	return "config " + c.ConfigFile
}

// unjoin lists the errors errors.Join put together.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// loadCertificate reads a PEM certificate chain and its key.
func loadCertificate(certFile, keyFile string) (*tls.Certificate, error) {
	crt, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &crt, nil
}

// changed lists the settings whose values differ between c and next, by
// their YAML key (flag name for flag-only settings), "fragments" for the
// rules. Secrets are compared, never shown.
func (c *config) changed(next *config) []string {
	var keys []string
	for i, o := range c.opts {
		if o.val.String() != next.opts[i].val.String() {
			keys = append(keys, o.yamlKey())
		}
	}
	if !slices.Equal(c.Proxy.Fragments, next.Proxy.Fragments) {
		keys = append(keys, "fragments")
	}
	return keys
}

// nearest returns the candidate closest to s, compared without case, when
// it is close enough to be a typo of it; else "".
func nearest(s string, candidates []string) string {
	s = strings.ToLower(s)
	best, bestD := "", 1+len(s)/4
	if bestD > 3 {
		bestD = 3
	}
	bestD++ // the largest distance still taken, plus one
	for _, c := range candidates {
		if d := editDistance(s, strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours cost 1 each.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
