package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTest(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := New(reg, Options{Version: "test", Fragments: []string{"weather", "weather"}, Upstreams: []string{"app:8080", "cdn"}})
	m.Prewarm()
	return m, reg
}

func TestLintClean(t *testing.T) {
	m, reg := newTest(t)
	m.Request("GET", 200).Inc()
	m.Purges[PurgeHard][PurgeKindPrefix].Inc()
	m.PurgeTagsDropped.Inc()
	m.Fragment("weather").Lookups[LookupHit].Inc()
	m.Upstream("cdn").Duration.Observe(0.1)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestFragmentClasses(t *testing.T) {
	m, reg := newTest(t)
	m.Fragment("weather").Lookups[LookupMiss].Inc()
	m.Fragment("unknown").Lookups[LookupMiss].Inc()
	m.Fragment("unknown").Fallbacks[FallbackAlt].Inc()
	want := `
# HELP fragcache_fragment_fallbacks_total Includes not rendered from their own src, by fragment and what was rendered instead.
# TYPE fragcache_fragment_fallbacks_total counter
fragcache_fragment_fallbacks_total{action="alt",fragment="other"} 1
fragcache_fragment_fallbacks_total{action="except",fragment="other"} 0
fragcache_fragment_fallbacks_total{action="placeholder",fragment="other"} 0
fragcache_fragment_fallbacks_total{action="removed",fragment="other"} 0
fragcache_fragment_fallbacks_total{action="alt",fragment="weather"} 0
fragcache_fragment_fallbacks_total{action="except",fragment="weather"} 0
fragcache_fragment_fallbacks_total{action="placeholder",fragment="weather"} 0
fragcache_fragment_fallbacks_total{action="removed",fragment="weather"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fragcache_fragment_fallbacks_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.Fragment("other").Lookups[LookupMiss]); got != 1 {
		t.Errorf("other misses = %v, want 1", got)
	}
	if m.Upstream("nowhere") != nil {
		t.Error("Upstream of an unknown name is not nil")
	}
}

func TestAdminHandler(t *testing.T) {
	_, reg := newTest(t)
	ready := true
	tests := []struct {
		name     string
		pprof    bool
		purge    bool
		ready    bool
		path     string
		wantCode int
		wantBody string
	}{
		{"metrics", false, false, true, "/metrics", 200, "fragcache_build_info"},
		{"livez", false, false, false, "/livez", 200, "ok"},
		{"readyz ready", false, false, true, "/readyz", 200, "ok"},
		{"readyz draining", false, false, false, "/readyz", 503, "draining"},
		{"healthz alias", false, false, false, "/healthz", 503, "draining"},
		{"pprof off", false, false, true, "/debug/pprof/", 404, ""},
		{"pprof on", true, false, true, "/debug/pprof/", 200, "goroutine"},
		{"purge off", false, false, true, "/purge", 404, ""},
		{"purge on", false, true, true, "/purge", 418, "the purge handler"},
	}
	purge := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "the purge handler")
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready = tc.ready
			o := AdminOptions{Gatherer: reg, Ready: func() bool { return ready }, Pprof: tc.pprof}
			if tc.purge {
				o.Purge = purge
			}
			srv := httptest.NewServer(NewAdminHandler(o))
			defer srv.Close()
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("GET %s = %d %.60q, want %d containing %q", tc.path, resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}

// SetFragments follows a reload of the fragment rules: a class no longer
// named loses its series, a restarted one starts at zero, a kept one keeps
// its counts, a new one gets series, and "other" is never touched.
func TestSetFragments(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Options{Version: "test", Fragments: []string{"news", "weather", "cart"}})
	for _, n := range []string{"news", "weather", "cart", "unnamed"} {
		m.Fragment(n).Lookups[LookupHit].Inc()
	}
	oldCart := m.Fragment("cart")
	m.SetFragments([]string{"weather", "cart", "headlines", OtherFragment}, []string{"cart", OtherFragment, "nowhere"})
	oldCart.Lookups[LookupHit].Inc() // a request still holding the old children
	m.Fragment("headlines").Lookups[LookupHit].Inc()

	want := `
# HELP fragcache_fragment_lookups_total Fragment lookups, by fragment and result (updating = stale served while a refresh runs).
# TYPE fragcache_fragment_lookups_total counter
`
	for _, c := range []struct {
		name string
		hits int
	}{{"cart", 0}, {"headlines", 1}, {"other", 1}, {"weather", 1}} {
		for _, r := range []string{"bypass", "hit", "miss", "stale", "updating"} {
			v := 0
			if r == "hit" {
				v = c.hits
			}
			want += fmt.Sprintf("fragcache_fragment_lookups_total{fragment=%q,result=%q} %d\n", c.name, r, v)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fragcache_fragment_lookups_total"); err != nil {
		t.Error(err)
	}
	if got := m.Fragment("news"); got != m.Fragment(OtherFragment) {
		t.Errorf("a removed class resolves to %q, want other", got.Name)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "fragment" && (l.GetValue() == "news" || l.GetValue() == "nowhere") {
					t.Errorf("%s still has a series for %q", mf.GetName(), l.GetValue())
				}
			}
		}
	}
}

// AddUpstreams gives a newly allowed host its series and keeps the others.
func TestAddUpstreams(t *testing.T) {
	m, _ := newTest(t)
	cdn := m.Upstream("cdn")
	m.AddUpstreams([]string{"cdn", "img:443"})
	if m.Upstream("cdn") != cdn {
		t.Error("AddUpstreams replaced the series of a known host")
	}
	if u := m.Upstream("img:443"); u == nil || u.Name != "img:443" {
		t.Errorf("Upstream(img:443) = %v after AddUpstreams, want its series", u)
	}
}
