package proxy

import (
	"fmt"
	"fragcache/fragment"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"fragcache/metrics"
)

// newTestProxy builds a Proxy with default settings for the upstream
// app:8080, closed when the test ends.
func newTestProxy(t *testing.T) *Proxy {
	t.Helper()
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "test", Upstreams: []string{"app:8080"}})
	p, err := New(Config{Upstream: "http://app:8080", Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestNoUnlimitedDefaults checks that every timeout and size limit of the
// fasthttp server and clients that New builds is set: fasthttp reads a
// zero as "unlimited" (or as a default of its own) for each of them, and
// retries idempotent requests up to 5 times unless told otherwise.
func TestNoUnlimitedDefaults(t *testing.T) {
	p := newTestProxy(t)
	frag, _, err := p.fetch.client(&target{scheme: "http", addr: "cdn.example:80", label: "cdn.example"}, p.cfg.MaxFragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	// Each field must be positive: a zero is fasthttp's unlimited (or
	// its own) default.
	clientFields := []string{"ReadTimeout", "WriteTimeout", "MaxIdleConnDuration", "MaxConns",
		"MaxConnWaitTimeout", "MaxResponseBodySize", "ReadBufferSize", "WriteBufferSize"}
	tests := []struct {
		name   string
		v      any
		fields []string
	}{
		{"server", p.server, []string{"ReadTimeout", "WriteTimeout", "IdleTimeout", "MaxRequestBodySize",
			"ReadBufferSize", "WriteBufferSize", "Concurrency"}},
		{"page client", p.page, clientFields},
		{"fragment client", frag, clientFields},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := reflect.ValueOf(tc.v).Elem()
			for _, f := range tc.fields {
				fv := v.FieldByName(f)
				if !fv.IsValid() {
					t.Fatalf("%s has no field %s", tc.name, f)
				}
				if fv.Int() <= 0 {
					t.Errorf("%s.%s = %d, left at fasthttp's default", tc.name, f, fv.Int())
				}
			}
		})
	}
	for name, hc := range map[string]*struct {
		attempts    int
		retry, dial bool
	}{
		"page client":     {p.page.MaxIdemponentCallAttempts, p.page.RetryIfErr != nil, p.page.DialTimeout != nil},
		"fragment client": {frag.MaxIdemponentCallAttempts, frag.RetryIfErr != nil, frag.DialTimeout != nil},
	} {
		// One attempt plus at most the stale-connection retry, decided by
		// retryStaleConn, never fasthttp's "any idempotent request" rule.
		if hc.attempts < 1 || hc.attempts > maxAttempts || !hc.retry {
			t.Errorf("%s: MaxIdemponentCallAttempts %d, RetryIfErr set %v; want 1..%d with retryStaleConn", name, hc.attempts, hc.retry, maxAttempts)
		}
		if !hc.dial {
			t.Errorf("%s: no DialTimeout, so dials use fasthttp's default", name)
		}
	}
	if got, want := int64(frag.MaxResponseBodySize), p.cfg.MaxFragmentSize; got != want {
		t.Errorf("fragment client MaxResponseBodySize %d, want --max-fragment-size %d", got, want)
	}
	if p.server.MaxRequestBodySize != p.cfg.MaxRequestBodySize {
		t.Errorf("server MaxRequestBodySize %d, want %d", p.server.MaxRequestBodySize, p.cfg.MaxRequestBodySize)
	}
}

// TestURLHintsBoundedInBytes: the per-URL hints are kept outside the
// fragment cache, and the URLs are attacker-chosen (an include src with
// $(QUERY_STRING) and a fragment that answers public): long URLs must not
// add up to hundreds of MiB, and a hint set after the table filled up
// must still be kept (the table forgets its oldest, it does not freeze).
func TestURLHintsBoundedInBytes(t *testing.T) {
	u := newURLTable()
	long := strings.Repeat("q", 8<<10)
	for i := range 6_000 { // 48 MiB of URLs
		u.setShared(fmt.Sprintf("http://app:80/w?%d%s", i, long), true)
	}
	var kept int64
	for _, g := range []*generation[struct{}]{u.shared.cur.Load(), u.shared.prev.Load()} {
		g.m.Range(func(k, _ any) bool {
			kept += int64(len(k.(string)))
			return true
		})
	}
	if kept > 2*maxSharedBytes {
		t.Errorf("the hints keep %d bytes of URLs, want at most %d", kept, 2*maxSharedBytes)
	}
	if kept == 0 {
		t.Error("no hint was kept at all")
	}
	u.setShared("http://app:80/new", true)
	if !u.isShared("http://app:80/new") {
		t.Error("a hint set after the table filled up is not kept")
	}
	if u.isShared(fmt.Sprintf("http://app:80/w?%d%s", 0, long)) {
		t.Error("the oldest hint is still kept after 48 MiB of newer ones")
	}
}

// TestResolvedSrcsStartOverWhenFull: srcs built from request variables
// can fill the table of resolved srcs with ones never seen again; a src
// seen after that must still be resolved once, not on every page, and one
// in use survives the turnover.
func TestResolvedSrcsStartOverWhenFull(t *testing.T) {
	p := newTestProxy(t)
	page := func() string { return "/" }
	hot := p.live.Load().env.src.resolveSrc("/widgets/hot", page)
	for i := range 4*maxSrcs + 100 {
		p.live.Load().env.src.resolveSrc(fmt.Sprintf("/junk?%d", i), page)
		if i%1000 == 0 && p.live.Load().env.src.resolveSrc("/widgets/hot", page) != hot {
			t.Fatal("a src in use is resolved again")
		}
	}
	if n := p.live.Load().env.src.srcs.cur.Load().n.Load() + p.live.Load().env.src.srcs.prev.Load().n.Load(); n > 2*maxSrcs {
		t.Errorf("%d srcs kept, want at most %d", n, 2*maxSrcs)
	}
	first := p.live.Load().env.src.resolveSrc("/widgets/orders", page)
	if again := p.live.Load().env.src.resolveSrc("/widgets/orders", page); again != first {
		t.Error("a src seen after the table filled up is resolved again on every page")
	}
}

// TestTemplateKeepsResolutions: an include with a literal src keeps its
// resolution with its template, so a page whose srcs the table has
// forgotten (more distinct srcs in use than it holds) is not resolved
// again; after a reload the resolution is made again under the new
// configuration; a src with variables is resolved through the table as
// before.
func TestTemplateKeepsResolutions(t *testing.T) {
	p := newTestProxy(t)
	tpl, err := fragment.Parse([]byte(`<esi:include src="/widgets/a"/><esi:include src="/w/b?q=$(QUERY_STRING)"/>`), fragment.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var e fragment.Eval
	tpl.Evaluate(&fragment.RequestVars{Query: "x=1"}, &e)
	page := func() string { return "/" }
	lit, vars := &e.Includes[0], &e.Includes[1]
	sr := p.live.Load().env.src
	first := sr.resolveMemo(e.Memo(lit), lit.Src, page)
	if first.err != nil || first.t.uri != "/widgets/a" {
		t.Fatalf("resolution: %+v", first)
	}
	kept := func(sr *sources) int64 { return sr.srcs.cur.Load().n.Load() + sr.srcs.prev.Load().n.Load() }
	sr.srcs = newGenMap[*resolvedSrc](maxSrcs, maxSrcBytes) // the table forgot everything
	if again := sr.resolveMemo(e.Memo(lit), lit.Src, page); again != first {
		t.Error("a literal src is resolved again once the table forgot it")
	}
	if n := kept(sr); n != 0 {
		t.Errorf("the memo's hit went through the table (%d srcs kept)", n)
	}
	if e.Memo(vars) != nil {
		t.Fatal("a src with a variable has a memo")
	}
	sr.resolveMemo(e.Memo(vars), vars.Src, page)
	if n := kept(sr); n != 1 {
		t.Errorf("a src with a variable: %d srcs kept, want 1 (resolved through the table)", n)
	}

	if err := p.Reload(p.cfg); err != nil {
		t.Fatal(err)
	}
	next := p.live.Load().env.src
	if next == sr {
		t.Fatal("the reload kept the sources")
	}
	after := next.resolveMemo(e.Memo(lit), lit.Src, page)
	if after == first || kept(next) != 1 {
		t.Error("after a reload the template's resolution of the old configuration is used")
	}
	if again := next.resolveMemo(e.Memo(lit), lit.Src, page); again != after {
		t.Error("the resolution made after the reload is not kept")
	}
}
