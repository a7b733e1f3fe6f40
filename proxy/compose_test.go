package proxy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"fragcache/cachestore"
	"fragcache/fragment"
	"fragcache/metrics"
)

// fakeFetch answers a fragment load by its path: "fail" fails, "slowN"
// answers "N" after a second, a path with "esi" opts in to ESI with the
// body the test gave it, anything else answers its path's last element
// at once.
type fakeFetch struct{ bodies map[string]string }

func (f fakeFetch) Load(ctx context.Context, _ string, a *loadArg, _ bool) (fragEntry, error) {
	path := a.t.uri
	name := path[strings.LastIndexByte(path, '/')+1:]
	switch {
	case strings.HasPrefix(name, "fail"):
		return fragEntry{}, errors.New("status 500")
	case strings.HasPrefix(name, "slow"):
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return fragEntry{}, ctx.Err()
		}
		name = strings.TrimPrefix(name, "slow")
	}
	v := &fragRecord{body: []byte(name), fresh: time.Now().Add(time.Minute), serveScope: scopeShared}
	v.stale = v.fresh
	if b, ok := f.bodies[path]; ok {
		v.body = []byte(b)
		tpl, err := fragment.Parse(v.body, fragment.Limits{})
		if err != nil {
			return fragEntry{}, err
		}
		v.tpl, v.esi = tpl, true
	}
	return fragEntry{Value: v, Cost: 1, FreshUntil: v.fresh, StaleUntil: v.fresh}, nil
}

// newTestEnv builds a composition environment without a server: a real
// store over a fake fetch, and the upstream http://app.
func newTestEnv(t *testing.T, f fakeFetch, lim composeLimits) *composeEnv {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Upstream = "http://app"
	r, err := newReach(cfg.Upstream, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cachestore.New[*fragRecord, *loadArg](cachestore.Config{MaxCost: 1 << 20, MaxLoads: 64}, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{})
	fw := newForwarding(&cfg, r.base, nil)
	sc := newScoper([]byte("0123456789abcdef0123456789abcdef"), nil)
	return &composeEnv{store: st, src: newSources(r, &cfg, m, fw, newURLTable()), scopes: &sc, fw: fw, m: m, limits: lim}
}

// TestComposerDecisions is the table of what a composer renders for each
// fate of an include: filled in time, pending, failed with and without an
// alt, removed, an attempt's except, limits.
func TestComposerDecisions(t *testing.T) {
	lim := composeLimits{maxIncludes: 100, maxDepth: 3, wait: 300 * time.Millisecond, maxWait: 2 * time.Second, maxPageSize: 1 << 20}
	nested := map[string]string{"/esi": `(<esi:include src="/inner">i</esi:include>)`,
		"/deep": `<<esi:include src="/deep2">d</esi:include>>`, "/deep2": `<<esi:include src="/deep3">d</esi:include>>`,
		"/deep3": `<<esi:include src="/deep4">d</esi:include>>`}
	tests := []struct {
		name, page, want string
		outcomes         string // what the debug header says of each include, in page order
		lim              *composeLimits
		degraded         bool
	}{
		{name: "filled in time", page: `[<esi:include src="/a">p</esi:include>]`, want: `[a]`, outcomes: "miss"},
		{name: "pending past the wait", page: `[<esi:include src="/slowX">p</esi:include>]`, want: `[p]`, outcomes: "pending", degraded: true},
		{name: "timeout attribute waits longer", page: `[<esi:include src="/slowX" timeout="1500ms">p</esi:include>]`, want: `[X]`, outcomes: "miss"},
		{name: "short timeout attribute", page: `[<esi:include src="/slowX" timeout="10ms">p</esi:include>]`, want: `[p]`, outcomes: "pending", degraded: true},
		{name: "failed, no alt: placeholder", page: `[<esi:include src="/fail">p</esi:include>]`, want: `[p]`, outcomes: "failed", degraded: true},
		{name: "failed, alt renders", page: `[<esi:include src="/fail" alt="/b">p</esi:include>]`, want: `[b]`, outcomes: "alt", degraded: true},
		{name: "failed, alt fails too", page: `[<esi:include src="/fail" alt="/fail2">p</esi:include>]`, want: `[p]`, outcomes: "failed", degraded: true},
		{name: "failed, alt slow", page: `[<esi:include src="/fail" alt="/slowY">p</esi:include>]`, want: `[p]`, outcomes: "failed", degraded: true},
		{name: "not allowed host, alt renders", page: `[<esi:include src="http://evil.example/x" alt="/c">p</esi:include>]`, want: `[c]`, outcomes: "alt", degraded: true},
		{name: "onerror continue removes it", page: `[<esi:include src="/fail" onerror="continue"/>]`, want: `[]`, outcomes: "removed", degraded: true},
		{name: "attempt fails: except", page: `<esi:try><esi:attempt>A<esi:include src="/fail"/></esi:attempt><esi:except>E<esi:include src="/e"/></esi:except></esi:try>`, want: `Ee`, outcomes: "except miss", degraded: true},
		{name: "attempt holds", page: `<esi:try><esi:attempt>A<esi:include src="/ok"/></esi:attempt><esi:except>E</esi:except></esi:try>`, want: `Aok`, outcomes: "miss"},
		{name: "slow first does not hold up an alt", page: `[<esi:include src="/slowZ">s</esi:include>][<esi:include src="/fail" alt="/d">p</esi:include>]`, want: `[s][d]`, outcomes: "pending alt", degraded: true},
		{name: "nested include", page: `[<esi:include src="/esi">p</esi:include>]`, want: `[(inner)]`, outcomes: "miss miss"},
		{name: "depth limit", page: `<esi:include src="/deep">p</esi:include>`, want: `<<<d>>>`, outcomes: "miss miss miss depth", degraded: true},
		{name: "include limit", page: `<esi:include src="/a">1</esi:include><esi:include src="/b">2</esi:include>`, want: `a2`, outcomes: "miss limit",
			lim: &composeLimits{maxIncludes: 1, maxDepth: 3, wait: 300 * time.Millisecond, maxWait: 2 * time.Second, maxPageSize: 1 << 20}, degraded: true},
		{name: "loop cut", page: `<esi:include src="/loop">p</esi:include>`, want: `{p}`, outcomes: "miss loop", degraded: true},
	}
	nested["/loop"] = `{<esi:include src="/loop">p</esi:include>}`
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := lim
			if tc.lim != nil {
				l = *tc.lim
			}
			env := newTestEnv(t, fakeFetch{bodies: nested}, l)
			tpl, err := fragment.Parse([]byte(tc.page), fragment.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			var ctx fasthttp.RequestCtx
			ctx.Request.SetRequestURI("/page")
			ctx.Request.Header.SetHost("app")
			start := time.Now()
			c := newComposer(env, &ctx, 1)
			c.setDebug()
			out, ok := c.compose(tpl, nil)
			degraded := c.degraded
			var outcomes []string
			for _, n := range c.notes {
				outcomes = append(outcomes, n.out.String())
			}
			c.release()
			if took := time.Since(start); took > 900*time.Millisecond && !strings.Contains(tc.name, "longer") {
				t.Errorf("took %v; the page waits about its budget (300ms) at most", took)
			}
			if !ok || string(out) != tc.want {
				t.Errorf("page = %q (ok %v), want %q", out, ok, tc.want)
			}
			if degraded != tc.degraded {
				t.Errorf("degraded = %v, want %v", degraded, tc.degraded)
			}
			if got := strings.Join(outcomes, " "); got != tc.outcomes {
				t.Errorf("outcomes = %q, want %q", got, tc.outcomes)
			}
		})
	}
}
