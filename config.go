package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"go.yaml.in/yaml/v3"
)

// fragmentRule is one entry of the YAML fragments list.
type fragmentRule struct {
	Name  string
	Match string
	Share bool
	TTL   time.Duration
}

// config is every setting of the command line, validated. It is filled
// once by loadConfig and read-only afterwards.
type config struct {
	Listen           string
	Upstream         string
	AdminListen      string
	Wait             time.Duration
	FragmentTTL      time.Duration
	StaleTTL         time.Duration
	FetchTimeout     time.Duration
	CacheSize        int64
	AllowHost        []string
	ESICookie        []string
	MaxDepth         int
	MaxIncludes      int
	ESITrigger       string
	Demo             bool
	MaxWait          time.Duration
	UpstreamTimeout  time.Duration
	ReadTimeout      time.Duration
	MaxPageSize      int64
	MaxFragmentSize  int64
	MaxHeaderBytes   int64
	FetchConcurrency int
	FetchPerHost     int
	RefreshQueue     int
	ScopeSecret      string
	PublicHost       []string
	ScopeCookie      []string
	ShutdownTimeout  time.Duration
	DrainDelay       time.Duration
	AccessLog        bool
	Pprof            bool
	ConfigFile       string
	LogFormat        string
	Version          bool

	Fragments []fragmentRule
}

type optKind int

const (
	kString optKind = iota
	kDuration
	kSize
	kInt
	kBool
	kList
)

// option is one setting: its flag name, the help line, its default and
// where the parsed value goes. Its env name is FRAGCACHE_<UPPER_SNAKE> and
// its YAML key the snake_case of the flag name.
type option struct {
	name     string
	kind     optKind
	def      string
	help     string
	flagOnly bool // --demo, --version: no env, no YAML key
	noYAML   bool // --config: flag and env only
	target   any
}

func (o *option) env() string {
	return "FRAGCACHE_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

func (o *option) yamlKey() string { return strings.ReplaceAll(o.name, "-", "_") }

// set parses raw into the option's target. Lists take comma-separated
// values and append when appendList is true (repeated flags).
func (o *option) set(raw string, appendList bool) error {
	switch o.kind {
	case kString:
		*o.target.(*string) = raw
	case kDuration:
		d, err := parseDuration(raw)
		if err != nil {
			return err
		}
		*o.target.(*time.Duration) = d
	case kSize:
		n, err := parseSize(raw)
		if err != nil {
			return err
		}
		*o.target.(*int64) = n
	case kInt:
		n, err := strconv.Atoi(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", raw)
		}
		*o.target.(*int) = n
	case kBool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		*o.target.(*bool) = b
	case kList:
		p := o.target.(*[]string)
		if !appendList {
			*p = nil
		}
		for _, v := range strings.Split(raw, ",") {
			if v = strings.TrimSpace(v); v != "" {
				*p = append(*p, v)
			}
		}
	}
	return nil
}

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

func (c *config) options() []*option {
	return []*option{
		{name: "listen", kind: kString, def: ":8080", help: "front listener", target: &c.Listen},
		{name: "upstream", kind: kString, help: "the legacy app's base URL, scheme://host[:port] (required unless --demo)", target: &c.Upstream},
		{name: "admin-listen", kind: kString, def: "127.0.0.1:9188", help: "admin listener: /metrics, /livez, /readyz, /healthz, /debug/pprof with --pprof; loopback unless set (the deploy kit sets :9188)", target: &c.AdminListen},
		{name: "wait", kind: kDuration, def: "50ms", help: "longest a page waits for fragments that are not in the cache; 0 = never", target: &c.Wait},
		{name: "fragment-ttl", kind: kDuration, def: "60s", help: "freshness when the fragment response sets none", target: &c.FragmentTTL},
		{name: "stale-ttl", kind: kDuration, def: "10m", help: "how long a stale copy may still be served while refreshing", target: &c.StaleTTL},
		{name: "fetch-timeout", kind: kDuration, def: "10s", help: "limit for one background fetch", target: &c.FetchTimeout},
		{name: "cache-size", kind: kSize, def: "256MiB", help: "fragment cache budget", target: &c.CacheSize},
		{name: "allow-host", kind: kList, help: "extra hosts fragment URLs may reach: host (any port) or host:port; repeatable", target: &c.AllowHost},
		{name: "esi-cookie", kind: kList, help: "cookie names that $(HTTP_COOKIE{name}) may expand; repeatable", target: &c.ESICookie},
		{name: "max-depth", kind: kInt, def: "5", help: "nesting limit for fragments that include fragments", target: &c.MaxDepth},
		{name: "max-includes", kind: kInt, def: "256", help: "includes processed per page; the rest get their placeholder", target: &c.MaxIncludes},
		{name: "esi-trigger", kind: kString, def: "surrogate", help: "surrogate: only responses with Surrogate-Control content=\"ESI/1.0\"; html: every text/html response", target: &c.ESITrigger},
		{name: "demo", kind: kBool, def: "false", help: "start the embedded slow demo app and proxy it", flagOnly: true, target: &c.Demo},
		{name: "max-wait", kind: kDuration, def: "1s", help: "cap on an include's timeout attribute", target: &c.MaxWait},
		{name: "upstream-timeout", kind: kDuration, def: "30s", help: "page request to the upstream: time to response headers, then 504", target: &c.UpstreamTimeout},
		{name: "read-timeout", kind: kDuration, def: "30s", help: "time a client has to send a whole request (headers and body); slower clients are cut", target: &c.ReadTimeout},
		{name: "max-page-size", kind: kSize, def: "10MiB", help: "decoded size cap of an opted-in page; over it: 502", target: &c.MaxPageSize},
		{name: "max-fragment-size", kind: kSize, def: "1MiB", help: "decoded size cap of a fragment; over it the fetch fails", target: &c.MaxFragmentSize},
		{name: "max-header-bytes", kind: kSize, def: "64KiB", help: "request and upstream response header buffers", target: &c.MaxHeaderBytes},
		{name: "fetch-concurrency", kind: kInt, def: "256", help: "fragment loads at once; beyond it lookups are shed (placeholder)", target: &c.FetchConcurrency},
		{name: "fetch-per-host", kind: kInt, def: "64", help: "connections per fragment host", target: &c.FetchPerHost},
		{name: "refresh-queue", kind: kInt, def: "1024", help: "pending background refreshes; beyond it refreshes are shed and counted", target: &c.RefreshQueue},
		{name: "scope-secret", kind: kString, help: "HMAC key of user scopes (default: random per process); set it when replicas must agree", target: &c.ScopeSecret},
		{name: "public-host", kind: kList, help: "hosts fragcache serves; $(HTTP_HOST) comes from here (default: the upstream's host); repeatable", target: &c.PublicHost},
		{name: "scope-cookie", kind: kList, help: "cookies that identify a user for scopes and are sent to fragments (default: every cookie); repeatable", target: &c.ScopeCookie},
		{name: "shutdown-timeout", kind: kDuration, def: "15s", help: "SIGTERM: time for in-flight requests before exit", target: &c.ShutdownTimeout},
		{name: "drain-delay", kind: kDuration, def: "5s", help: "SIGTERM: /readyz answers 503 this long before the listener closes", target: &c.DrainDelay},
		{name: "access-log", kind: kBool, def: "true", help: "one JSON line per request with its fragment counts", target: &c.AccessLog},
		{name: "pprof", kind: kBool, def: "false", help: "/debug/pprof on the admin listener", target: &c.Pprof},
		{name: "config", kind: kString, help: "YAML file with the same settings in snake_case and the fragments list", noYAML: true, target: &c.ConfigFile},
		{name: "log-format", kind: kString, def: "json", help: "json or text", target: &c.LogFormat},
		{name: "version", kind: kBool, def: "false", help: "print the version and exit", flagOnly: true, target: &c.Version},
	}
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
func (f flagValue) IsBoolFlag() bool { return f.opt.kind == kBool }

// errUsage marks configuration errors: main exits 2 on them.
var errUsage = errors.New("invalid configuration")

// errHelp is returned when -h or --help was asked for.
var errHelp = flag.ErrHelp

// loadConfig reads flags, then the environment through getenv, then the
// YAML file, and applies them with the precedence flag > env > file >
// default. Every problem is reported at once, joined, and wrapped in
// errUsage.
func loadConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	opts := c.options()
	fs := flag.NewFlagSet("fragcache", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	given := map[string]*[]string{}
	for _, o := range opts {
		vals := new([]string)
		given[o.name] = vals
		fs.Var(flagValue{o, vals}, o.name, o.help)
	}
	fs.Usage = func() { printUsage(stderr, opts) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr, opts)
			return nil, errHelp
		}
		return nil, fmt.Errorf("%w: %v (see --help)", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q (see --help)", errUsage, fs.Arg(0))
	}

	var errs []error
	for _, o := range opts {
		if o.def != "" || o.kind == kList {
			if err := o.set(o.def, false); err != nil {
				panic("default of --" + o.name + ": " + err.Error())
			}
		}
	}

	// The config file's name comes from the flag, else the env.
	file := ""
	if v := *given["config"]; len(v) > 0 {
		file = v[len(v)-1]
	} else {
		file = getenv("FRAGCACHE_CONFIG")
	}
	if file != "" {
		errs = append(errs, c.loadYAML(file, opts)...)
	}
	for _, o := range opts {
		if o.flagOnly {
			continue
		}
		if v := getenv(o.env()); v != "" {
			if err := o.set(v, false); err != nil {
				errs = append(errs, fmt.Errorf("env %s: %w", o.env(), err))
			}
		}
	}
	for _, o := range opts {
		vals := *given[o.name]
		for i, v := range vals {
			if err := o.set(v, i > 0); err != nil {
				errs = append(errs, fmt.Errorf("flag --%s: %w", o.name, err))
			}
		}
	}
	c.ConfigFile = file
	if c.Version {
		return c, nil // --version needs nothing else
	}
	if len(errs) == 0 {
		errs = c.validate()
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w:\n%w", errUsage, errors.Join(errs...))
	}
	return c, nil
}

func printUsage(w io.Writer, opts []*option) {
	fmt.Fprintf(w, "Usage: fragcache [flags]\n       fragcache demo --listen ADDR\n       fragcache healthcheck\n\n")
	fmt.Fprintf(w, "Every flag is also an env var FRAGCACHE_<NAME> and a snake_case key of the --config YAML file.\n\n")
	for _, o := range opts {
		env := o.env()
		if o.flagOnly {
			env = "(flag only)"
		}
		def := o.def
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%-18s %s\n      %s (default %s)\n", o.name, env, o.help, def)
	}
}

// loadYAML applies the file's settings. Unknown keys are errors that name
// their line.
func (c *config) loadYAML(file string, opts []*option) []error {
	data, err := os.ReadFile(file)
	if err != nil {
		return []error{fmt.Errorf("config: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return []error{fmt.Errorf("config %s: %w", file, err)}
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("config %s:%d: the top level must be a mapping of settings", file, root.Line)}
	}
	byKey := map[string]*option{}
	for _, o := range opts {
		if !o.flagOnly && !o.noYAML {
			byKey[o.yamlKey()] = o
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
			errs = append(errs, fmt.Errorf("%s: unknown key %q", at, k.Value))
			continue
		}
		switch {
		case v.Kind == yaml.SequenceNode && o.kind == kList:
			*o.target.(*[]string) = nil
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					errs = append(errs, fmt.Errorf("config %s:%d: %s: list items must be plain values", file, item.Line, k.Value))
					continue
				}
				_ = o.set(item.Value, true)
			}
		case v.Kind == yaml.ScalarNode:
			if err := o.set(v.Value, false); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %w", at, k.Value, err))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: %s must be a single value", at, k.Value))
		}
	}
	return errs
}

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
		var r fragmentRule
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
				b, err := strconv.ParseBool(v.Value)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: fragments.share: %q is not true or false", at, v.Value))
				}
				r.Share = b
			case "ttl":
				d, err := parseDuration(v.Value)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: fragments.ttl: %w", at, err))
				}
				r.TTL = d
			default:
				errs = append(errs, fmt.Errorf("%s: unknown key %q in a fragment rule", at, k.Value))
			}
		}
		if r.Match == "" || !strings.HasPrefix(r.Match, "/") {
			errs = append(errs, fmt.Errorf("config %s:%d: a fragment rule needs match: a path prefix starting with /", file, item.Line))
		}
		c.Fragments = append(c.Fragments, r)
	}
	return errs
}

// maxRuleNames bounds the fragment label's values.
const maxRuleNames = 50

func (c *config) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	switch {
	case c.Demo && c.Upstream != "":
		bad("--demo and --upstream exclude each other: the demo is its own upstream")
	case !c.Demo && c.Upstream == "":
		bad("--upstream is required (or --demo)")
	case c.Upstream != "":
		if err := checkUpstream(c.Upstream); err != nil {
			bad("--upstream: %v", err)
		}
	}
	for _, a := range []struct{ name, addr string }{{"listen", c.Listen}, {"admin-listen", c.AdminListen}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad("--%s: %q is not host:port", a.name, a.addr)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"wait", c.Wait, 0}, {"max-wait", c.MaxWait, 0}, {"stale-ttl", c.StaleTTL, 0},
		{"drain-delay", c.DrainDelay, 0},
		{"fragment-ttl", c.FragmentTTL, 1}, {"fetch-timeout", c.FetchTimeout, 1},
		{"upstream-timeout", c.UpstreamTimeout, 1}, {"shutdown-timeout", c.ShutdownTimeout, 1},
		{"read-timeout", c.ReadTimeout, 1},
	} {
		if d.v < d.min {
			if d.min == 0 {
				bad("--%s must not be negative (got %s)", d.name, d.v)
			} else {
				bad("--%s must be positive (got %s)", d.name, d.v)
			}
		}
	}
	for _, s := range []struct {
		name string
		v    int64
		min  int64
	}{
		{"cache-size", c.CacheSize, 1 << 20}, {"max-page-size", c.MaxPageSize, 1024},
		{"max-fragment-size", c.MaxFragmentSize, 1024}, {"max-header-bytes", c.MaxHeaderBytes, 4096},
	} {
		if s.v < s.min {
			bad("--%s must be at least %s (got %s)", s.name, humanize.IBytes(uint64(s.min)), humanize.IBytes(uint64(max(s.v, 0))))
		}
	}
	const maxCount = 1 << 20
	if c.MaxHeaderBytes > 16<<20 {
		bad("--max-header-bytes must be at most 16MiB")
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"max-depth", c.MaxDepth}, {"max-includes", c.MaxIncludes}, {"fetch-concurrency", c.FetchConcurrency},
		{"fetch-per-host", c.FetchPerHost}, {"refresh-queue", c.RefreshQueue},
	} {
		if n.v < 1 {
			bad("--%s must be at least 1 (got %d)", n.name, n.v)
		}
		// Queues and semaphores are allocated at their full size when
		// fragcache starts: a typo of a few zeros must be an error, not
		// an out-of-memory crash.
		if n.v > maxCount {
			bad("--%s must be at most %d (got %d)", n.name, maxCount, n.v)
		}
	}
	if c.ESITrigger != "surrogate" && c.ESITrigger != "html" {
		bad("--esi-trigger must be surrogate or html (got %q)", c.ESITrigger)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("--log-format must be json or text (got %q)", c.LogFormat)
	}
	for _, h := range c.AllowHost {
		if err := checkHostEntry(h); err != nil {
			bad("--allow-host %q: %v", h, err)
		}
	}
	for _, h := range c.PublicHost {
		if strings.ContainsAny(h, "/ \t\r\n@") {
			bad("--public-host %q: not a host name", h)
		}
	}
	for _, ck := range c.ESICookie {
		if strings.ContainsAny(ck, "=; \t\r\n,") {
			bad("--esi-cookie %q: not a cookie name", ck)
		}
	}
	names := map[string]bool{}
	for _, r := range c.Fragments {
		if r.Name != "" {
			names[r.Name] = true
		}
		if r.Name == "other" {
			bad("fragments: the name \"other\" is reserved for unnamed fragments")
		}
		if r.TTL < 0 {
			bad("fragments %q: ttl must not be negative", r.Name)
		}
	}
	if len(names) > maxRuleNames {
		bad("fragments: at most %d names (got %d)", maxRuleNames, len(names))
	}
	return errs
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
