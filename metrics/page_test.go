package metrics

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestQuantile(t *testing.T) {
	bounds := []float64{0.1, 1, 10}
	for _, c := range []struct {
		q      float64
		counts []uint64
		want   float64
	}{
		{0.5, []uint64{0, 0, 0, 0}, math.NaN()},
		{0.5, []uint64{10, 0, 0, 0}, 0.05},
		{0.5, []uint64{0, 10, 0, 0}, 0.55},
		{0.99, []uint64{99, 1, 0, 0}, 0.1},
		{0.99, []uint64{50, 0, 0, 50}, 10}, // in +Inf: the last bound
		{0.5, []uint64{1, 1, 1, 1}, 1},
	} {
		got := Quantile(c.q, bounds, c.counts)
		if math.IsNaN(c.want) != math.IsNaN(got) || !math.IsNaN(c.want) && math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Quantile(%v, %v) = %v, want %v", c.q, c.counts, got, c.want)
		}
	}
}

// The admin listener serves only requests for an IP literal, localhost
// or its own listen host (rule 33): a name an attacker made resolve to
// it (DNS rebinding) gets 421, on every path.
func TestAdminHostGuard(t *testing.T) {
	for _, c := range []struct {
		host, own string
		ok        bool
	}{
		{"127.0.0.1:9188", "", true},
		{"10.1.2.3:9188", "", true},
		{"[::1]:9188", "", true},
		{"[fe80::1%25eth0]:9188", "", true},
		{"::1", "", true},
		{"localhost:9188", "", true},
		{"LOCALHOST", "", true},
		{"localhost.", "", true},
		{"", "", true},
		{"fragcache:9188", "fragcache", true},
		{"admin.internal:9188", "admin.internal", true},
		{"evil.example:9188", "", false},
		{"evil.example:9188", "admin.internal", false},
		{"localhost.evil.example", "", false},
		{"127.0.0.1.evil.example", "", false},
		{"fragcache:9188", "", false},
	} {
		if got := adminHostAllowed(c.host, c.own); got != c.ok {
			t.Errorf("adminHostAllowed(%q, own %q) = %v, want %v", c.host, c.own, got, c.ok)
		}
	}
	h := NewAdminHandler(AdminOptions{Gatherer: prometheus.NewRegistry(), ListenHost: "admin.internal"})
	for _, path := range []string{"/", "/metrics", "/livez", "/readyz"} {
		for host, want := range map[string]int{"evil.example": 421, "127.0.0.1:9188": 200, "admin.internal:9188": 200} {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", path, nil)
			req.Host = host
			h.ServeHTTP(rec, req)
			if rec.Code != want {
				t.Errorf("GET %s with Host %s: %d, want %d", path, host, rec.Code, want)
			}
		}
	}
}

// The admin page: self-contained, read-only, framed by nobody, with the
// state read from the registry and the proxy's activity.
func TestAdminPage(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, Options{Version: "1.2.3", Fragments: []string{"orders", "idle"}, Upstreams: []string{"app:8080", "cdn"}})
	orders := m.Fragment("orders")
	for range 9 {
		orders.Lookups[LookupHit].Inc()
	}
	orders.Lookups[LookupMiss].Inc()
	orders.FetchTime.Observe(0.02)
	orders.FetchTime.Observe(0.3)
	m.Upstream("cdn").Breaker.Set(BreakerOpen)
	m.CacheCost.Set(3 << 20)
	m.CacheMaxCost.Set(256 << 20)
	at := time.Now().Add(-90 * time.Second)
	h := NewAdminHandler(AdminOptions{Gatherer: reg, Version: "1.2.3", Started: time.Now().Add(-2 * time.Hour),
		Activity: func() Activity {
			return Activity{L2: "down",
				Srcs: []SrcActivity{{Src: "/user/$(HTTP_COOKIE{uid})/cart", Fragment: "orders", Lookups: 4, Hits: 1, Fetches: 3,
					FetchP50: 0.012, FetchP99: 1.5, LastError: LastError{What: "status 503", At: at}}},
				LastErrors: map[string]LastError{"orders": {What: "timeout", At: at}},
			}
		}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	for k, want := range map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
		"X-Frame-Options":         "DENY",
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-store",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`, "version 1.2.3", "up 2 h 0 min",
		`id="l2">down<`, "Breaker cdn: <span class=\"state state-open\">open</span>",
		"Breaker app:8080: <span class=\"state state-closed\">closed</span>", "3.0 MiB of 256.0 MiB",
		"<td>orders</td><td class=\"num\">10</td><td class=\"num\">90.0 %</td><td class=\"num\">2</td>",
		`<td class="err">timeout</td><td>1 min 30 s ago`,
		`<td class="src">/user/$(HTTP_COOKIE{uid})/cart</td><td>orders</td><td class="num">4</td><td class="num low">25.0 %</td>`,
		`<td class="num">12 ms</td><td class="num">1.50 s</td><td class="err">status 503</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, "<td>idle</td>") {
		t.Error("a group never looked up is listed")
	}
	for _, bad := range []string{"<script", "<form", "<iframe", "src=", "http://", "https://", "<link"} {
		if strings.Contains(body, bad) {
			t.Errorf("the page holds %q: it must be read-only and self-contained", bad)
		}
	}
	if resp, _ := http.Post(srv.URL+"/", "text/plain", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / answered %d, want 405", resp.StatusCode)
	}
}
