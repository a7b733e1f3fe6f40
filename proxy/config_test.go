package proxy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fragcache/metrics"
)

// TestValidate lists every rule of Config.Validate: each case changes one
// setting of DefaultConfig and names the field (and list element) the
// error must be about. Validate is the only check of these settings;
// fragcache's command line maps its errors back to flags and file lines.
func TestValidate(t *testing.T) {
	rules := func(n int) []FragmentRule {
		var rs []FragmentRule
		for i := range n {
			rs = append(rs, FragmentRule{Name: fmt.Sprintf("r%d", i), Match: "/r"})
		}
		return rs
	}
	tests := []struct {
		name   string
		change func(*Config)
		field  string // "" = valid
		index  int
		msg    string
	}{
		{"defaults", func(*Config) {}, "", 0, ""},
		{"https upstream with port", func(c *Config) { c.Upstream = "https://app:8443/" }, "", 0, ""},
		{"no upstream", func(c *Config) { c.Upstream = "" }, "Upstream", -1, "is required"},
		{"upstream scheme", func(c *Config) { c.Upstream = "ftp://app" }, "Upstream", -1, "scheme must be http or https"},
		{"upstream path", func(c *Config) { c.Upstream = "http://app/app" }, "Upstream", -1, "no path"},
		{"upstream credentials", func(c *Config) { c.Upstream = "http://u:p@app" }, "Upstream", -1, "credentials"},
		{"upstream port", func(c *Config) { c.Upstream = "http://app:99999" }, "Upstream", -1, "bad port"},
		{"trigger", func(c *Config) { c.Trigger = 7 }, "Trigger", -1, "unknown trigger"},
		{"zero wait", func(c *Config) { c.Wait = 0 }, "", 0, ""},
		{"negative wait", func(c *Config) { c.Wait = -time.Second }, "Wait", -1, "must not be negative (got -1s)"},
		{"negative max wait", func(c *Config) { c.MaxWait = -1 }, "MaxWait", -1, "must not be negative"},
		{"stream budget not past the wait", func(c *Config) { c.StreamBudget = c.Wait }, "StreamBudget", -1, "more than the wait"},
		{"stream budget past the fetch timeout", func(c *Config) { c.StreamBudget = c.FetchTimeout + 1 }, "StreamBudget", -1, "at most the fetch timeout"},
		{"stream budget", func(c *Config) { c.StreamBudget = 3 * time.Second }, "", 0, ""},
		{"stream budget at the fetch timeout", func(c *Config) { c.StreamBudget = c.FetchTimeout }, "", 0, ""},
		{"negative stream budget", func(c *Config) { c.StreamBudget = -1 }, "StreamBudget", -1, "must be 0 (off)"},
		{"zero stale ttl", func(c *Config) { c.StaleTTL = 0 }, "", 0, ""},
		{"negative stale ttl", func(c *Config) { c.StaleTTL = -1 }, "StaleTTL", -1, "must not be negative"},
		{"zero fragment ttl", func(c *Config) { c.FragmentTTL = 0 }, "FragmentTTL", -1, "must be positive"},
		{"negative fetch timeout", func(c *Config) { c.FetchTimeout = -1 }, "FetchTimeout", -1, "must be positive"},
		{"zero upstream timeout", func(c *Config) { c.UpstreamTimeout = 0 }, "UpstreamTimeout", -1, "must be positive"},
		{"zero read timeout", func(c *Config) { c.ReadTimeout = 0 }, "ReadTimeout", -1, "must be positive"},
		{"small cache", func(c *Config) { c.CacheSize = 1 << 19 }, "CacheSize", -1, "must be at least 1MiB (got 512KiB)"},
		{"small page cap", func(c *Config) { c.MaxPageSize = 100 }, "MaxPageSize", -1, "must be at least 1KiB (got 100)"},
		{"small fragment cap", func(c *Config) { c.MaxFragmentSize = 0 }, "MaxFragmentSize", -1, "must be at least 1KiB"},
		{"small header buffer", func(c *Config) { c.MaxHeaderBytes = 1024 }, "MaxHeaderBytes", -1, "must be at least 4KiB"},
		{"huge header buffer", func(c *Config) { c.MaxHeaderBytes = 32 << 20 }, "MaxHeaderBytes", -1, "must be at most 16MiB"},
		{"zero request body cap", func(c *Config) { c.MaxRequestBodySize = 0 }, "MaxRequestBodySize", -1, "must be at least"},
		{"zero depth", func(c *Config) { c.MaxDepth = 0 }, "MaxDepth", -1, "must be at least 1 (got 0)"},
		{"zero includes", func(c *Config) { c.MaxIncludes = 0 }, "MaxIncludes", -1, "must be at least 1"},
		{"huge fetch concurrency", func(c *Config) { c.FetchConcurrency = 100_000_000 }, "FetchConcurrency", -1, "must be at most 1048576"},
		{"zero per host", func(c *Config) { c.FetchPerHost = 0 }, "FetchPerHost", -1, "must be at least 1"},
		{"huge refresh queue", func(c *Config) { c.RefreshQueue = 1 << 21 }, "RefreshQueue", -1, "must be at most"},
		{"large refresh queue", func(c *Config) { c.RefreshQueue = 1 << 20 }, "", 0, ""},
		{"zero fetch queue", func(c *Config) { c.FetchQueue = 0 }, "FetchQueue", -1, "must be at least 1"},
		{"huge fetch queue", func(c *Config) { c.FetchQueue = 1<<20 + 1 }, "FetchQueue", -1, "must be at most"},
		{"allow hosts", func(c *Config) { c.AllowHosts = []string{"cdn", "api:8443", "::1", "[::1]:80"} }, "", 0, ""},
		{"allow host URL", func(c *Config) { c.AllowHosts = []string{"cdn", "http://b"} }, "AllowHosts", 1, `"http://b": want host or host:port`},
		{"allow host port", func(c *Config) { c.AllowHosts = []string{"b:0"} }, "AllowHosts", 0, "bad port"},
		{"public host", func(c *Config) { c.PublicHosts = []string{"www.example", "a b"} }, "PublicHosts", 1, "not a host name"},
		{"esi cookie", func(c *Config) { c.ESICookies = []string{"a=b"} }, "ESICookies", 0, "not a cookie name"},
		{"scope cookies", func(c *Config) { c.ScopeCookies = []string{"sid", "__Host-s"} }, "", 0, ""},
		{"scope cookie", func(c *Config) { c.ScopeCookies = []string{"sid", "a;b"} }, "ScopeCookies", 1, `"a;b": not a cookie name`},
		{"trusted proxies", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"} }, "", 0, ""},
		{"trusted CIDR", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/33"} }, "TrustedProxies", 0, "not a CIDR"},
		{"trusted host bits", func(c *Config) { c.TrustedProxies = []string{"10.0.0.1/8"} }, "TrustedProxies", 0, "did you mean 10.0.0.0/8?"},
		{"trusted name", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "lb.internal"} }, "TrustedProxies", 1, "not an address or a CIDR"},
		{"preserve host", func(c *Config) { c.PreserveHost, c.PublicHosts = true, []string{"www.example"} }, "", 0, ""},
		{"preserve host alone", func(c *Config) { c.PreserveHost = true }, "PreserveHost", -1, "requires PublicHosts"},
		{"rules", func(c *Config) { c.Fragments = rules(50) }, "", 0, ""},
		{"too many rule names", func(c *Config) { c.Fragments = rules(51) }, "Fragments", -1, "at most 50 names (got 51)"},
		{"rule named other", func(c *Config) { c.Fragments = []FragmentRule{{Match: "/a"}, {Name: "other", Match: "/b"}} }, "Fragments", 1, "reserved"},
		{"rule without match", func(c *Config) { c.Fragments = []FragmentRule{{Name: "a", Match: "a"}} }, "Fragments", 0, "starting with /"},
		{"rule negative ttl", func(c *Config) { c.Fragments = []FragmentRule{{Match: "/a", TTL: -1}} }, "Fragments", 0, "ttl must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Upstream = "http://app:8080"
			tc.change(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a *FieldError", err)
			}
			if fe.Field != tc.field || fe.Index != tc.index || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("Validate() = %s[%d] %q, want %s[%d] containing %q", fe.Field, fe.Index, fe.Msg, tc.field, tc.index, tc.msg)
			}
		})
	}
}

// TestValidateReportsEverything checks that every problem comes back at
// once, one FieldError each.
func TestValidateReportsEverything(t *testing.T) {
	c := DefaultConfig()
	c.Wait, c.MaxDepth, c.AllowHosts = -1, 0, []string{"a b"}
	var fields []string
	for _, err := range err2list(c.Validate()) {
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("%v is not a *FieldError", err)
		}
		fields = append(fields, fe.Field)
	}
	if got, want := strings.Join(fields, " "), "Upstream Wait MaxDepth AllowHosts"; got != want {
		t.Errorf("fields at fault = %s, want %s", got, want)
	}
}

func err2list(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// New fills zero settings with DefaultConfig's values, keeps the zeros
// that mean something, and refuses negative values instead of replacing
// them with a default.
func TestNewDefaults(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "test", Upstreams: []string{"app:8080"}})
	p, err := New(Config{Upstream: "http://app:8080", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	d := DefaultConfig()
	got := p.cfg
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"FragmentTTL", got.FragmentTTL, d.FragmentTTL},
		{"FetchTimeout", got.FetchTimeout, d.FetchTimeout},
		{"CacheSize", got.CacheSize, d.CacheSize},
		{"MaxHeaderBytes", got.MaxHeaderBytes, d.MaxHeaderBytes},
		{"FetchQueue", got.FetchQueue, d.FetchQueue},
		{"Wait (zero means never)", got.Wait, time.Duration(0)},
		{"StaleTTL (zero means never)", got.StaleTTL, time.Duration(0)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	m2 := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "test", Upstreams: []string{"app:8080"}})
	if p, err := New(Config{Upstream: "http://app:8080", Metrics: m2, FragmentTTL: -time.Second}); err == nil {
		p.Close()
		t.Error("New accepted FragmentTTL -1s")
	}
	if _, err := New(Config{Upstream: "http://app:8080"}); err == nil || !strings.Contains(err.Error(), "Metrics is required") {
		t.Errorf("New without Metrics = %v", err)
	}
}
