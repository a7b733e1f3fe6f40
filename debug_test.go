package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// debugToken is the --debug-token of these tests.
const debugToken = "debug-token-0123456789abcdef"

// timingEntry is one entry of a Server-Timing header.
type timingEntry struct {
	name, desc string
	dur        float64 // -1 without a dur
}

var timingRE = regexp.MustCompile(`^([A-Za-z0-9_-]+)(?:;desc="((?:[^"\\]|\\.)*)")?(?:;dur=([0-9.]+))?$`)

// parseServerTiming splits a Server-Timing value as fragcache writes it.
func parseServerTiming(t *testing.T, v string) []timingEntry {
	t.Helper()
	var out []timingEntry
	for _, e := range strings.Split(v, ", ") {
		m := timingRE.FindStringSubmatch(e)
		if m == nil {
			t.Fatalf("Server-Timing entry %q is malformed (in %q)", e, v)
		}
		te := timingEntry{name: m[1], desc: m[2], dur: -1}
		if m[3] != "" {
			te.dur, _ = strconv.ParseFloat(m[3], 64)
		}
		out = append(out, te)
	}
	return out
}

// writeConfig writes a YAML configuration file for one test.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "fragcache.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestDebugServerTiming: with the token, a composed page says what became
// of each include, in page order (DESIGN "Seeing what happened", rule
// 32): hit, miss filled in time, pending, failed with alt, except (and
// the except's own include, looked up within the page's wait), removed,
// a rule's name. Without the token,
// or with a wrong one, nothing of it is sent, and Fragcache-Debug never
// reaches the upstream or a fragment host.
func TestDebugServerTiming(t *testing.T) {
	fail := func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }
	page := `<html><body>` +
		`<esi:include src="/f/hit"/>` +
		`<esi:include src="/f/miss?user=42"/>` +
		`<esi:include src="/f/slow" timeout="200ms">wait</esi:include>` +
		`<esi:include src="/f/fail" alt="/f/alt"/>` +
		`<esi:try><esi:attempt><esi:include src="/f/fail2"/></esi:attempt><esi:except><esi:include src="/f/exc"/></esi:except></esi:try>` +
		`<esi:include src="/f/fail3" onerror="continue"/>` +
		`<esi:include src="/w/named"/>` +
		`</body></html>`
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/warm": esiPage(`<esi:include src="/f/hit"/>`),
		"/page": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Server-Timing", `app;dur=12.5`)
			esiPage(page)(w, r)
		},
		"/f/hit":   frag("HIT", 0, "max-age=60"),
		"/f/miss":  frag("MISS", 0, "max-age=60"),
		"/f/slow":  frag("SLOW", 3*time.Second, "max-age=60"),
		"/f/fail":  fail,
		"/f/fail2": fail,
		"/f/fail3": fail,
		"/f/alt":   frag("ALT", 0, "max-age=60"),
		"/f/exc":   frag("EXC", 0, "max-age=60"),
		"/w/named": frag("NAMED", 0, "max-age=60"),
	})
	cfg := writeConfig(t, "fragments:\n  - name: widgets\n    match: /w/\n")
	// Without a token, and with one (a flag: the tests run fragcache
	// with an empty environment).
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "500ms", "--config", cfg)
	fc2 := startFragcache(t, "--upstream", o.URL, "--wait", "500ms", "--config", cfg, "--debug-token", debugToken)

	// The warm-up page puts /f/hit in the cache.
	if resp, _ := get(t, fc2.front+"/warm"); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d", resp.StatusCode)
	}
	eventually(t, "/f/hit cached", func() bool {
		resp, _ := get(t, fc2.front+"/warm")
		return !strings.Contains(resp.Header.Get("Cache-Control"), "no-store")
	})

	start := time.Now()
	resp, body := get(t, fc2.front+"/page", "Fragcache-Debug", debugToken)
	took := time.Since(start)
	if !strings.Contains(body, "HIT") || !strings.Contains(body, "wait") || !strings.Contains(body, "ALT") || !strings.Contains(body, "EXC") {
		t.Fatalf("page %q", body)
	}
	st := resp.Header.Values("Server-Timing")
	if len(st) != 1 {
		t.Fatalf("Server-Timing headers: %q, want one", st)
	}
	entries := parseServerTiming(t, st[0])
	want := []timingEntry{
		{name: "app", dur: 12.5},
		{name: "fc-1", desc: "/f/hit hit"},
		{name: "fc-2", desc: "/f/miss miss"},
		{name: "fc-3", desc: "/f/slow pending"},
		{name: "fc-4", desc: "/f/fail alt"},
		{name: "fc-5", desc: "/f/fail2 except"},
		{name: "fc-6", desc: "/f/exc miss"},
		{name: "fc-7", desc: "/f/fail3 removed"},
		{name: "fc-8", desc: "widgets miss"},
	}
	if len(entries) != len(want) {
		t.Fatalf("Server-Timing %q: %d entries, want %d", st[0], len(entries), len(want))
	}
	for i, w := range want {
		if e := entries[i]; e.name != w.name || e.desc != w.desc || (i == 0 && e.dur != w.dur) || (i > 0 && e.dur < 0) {
			t.Errorf("entry %d = %+v, want %+v (header %q)", i, e, w, st[0])
		}
	}
	if d := entries[1].dur; d > 50 {
		t.Errorf("the hit waited %.1f ms; it was in the cache", d)
	}
	if d := entries[3].dur; d < 190 || d > float64(took.Milliseconds())+1 {
		t.Errorf("the pending include waited %.1f ms, want about its 200 ms timeout (page took %v)", d, took)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
		t.Errorf("a debug answer says Cache-Control %q, want private, no-store", cc)
	}
	t.Logf("Server-Timing: %s", st[0])

	// Without the token, with a wrong one, with the token's prefix, and
	// on a server without a token: only the upstream's entry.
	for _, c := range []struct {
		name string
		fc   *instance
		hdr  []string
	}{
		{"no header", fc2, nil},
		{"wrong token", fc2, []string{"Fragcache-Debug", "debug-token-0123456789abcdeX"}},
		{"token prefix", fc2, []string{"Fragcache-Debug", debugToken[:16]}},
		{"token longer", fc2, []string{"Fragcache-Debug", debugToken + "0"}},
		{"server without a token", fc, []string{"Fragcache-Debug", debugToken}},
	} {
		resp, _ := get(t, c.fc.front+"/page", c.hdr...)
		if got := resp.Header.Values("Server-Timing"); len(got) != 1 || got[0] != "app;dur=12.5" {
			t.Errorf("%s: Server-Timing %q, want only the upstream's", c.name, got)
		}
		resp, _ = get(t, c.fc.front+"/warm", c.hdr...)
		if got := resp.Header.Values("Server-Timing"); len(got) != 0 {
			t.Errorf("%s: Server-Timing %q on a page whose upstream sent none", c.name, got)
		}
	}
	// A page whose includes are all cached keeps its cacheability, but
	// not when it is a debug answer.
	resp, _ = get(t, fc2.front+"/warm")
	if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "max-age=") {
		t.Errorf("a cached page without the token says Cache-Control %q", cc)
	}
	resp, _ = get(t, fc2.front+"/warm", "Fragcache-Debug", debugToken)
	if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
		t.Errorf("the same page with the token says Cache-Control %q", cc)
	}
	if got := resp.Header.Get("Server-Timing"); !strings.HasPrefix(got, `fc-1;desc="/f/hit hit";dur=`) {
		t.Errorf("Server-Timing %q", got)
	}

	// Fragcache-Debug never leaves fragcache (rule 32).
	checked := 0
	for _, p := range []string{"/warm", "/page", "/f/hit", "/f/miss", "/f/slow", "/f/fail", "/f/alt", "/f/fail2", "/f/exc", "/f/fail3", "/w/named"} {
		reqs := o.requests(p)
		if len(reqs) == 0 {
			t.Errorf("%s was never requested", p)
		}
		for _, r := range reqs {
			checked++
			if v, ok := r.Header["Fragcache-Debug"]; ok {
				t.Errorf("a request for %s carried Fragcache-Debug %q", p, v)
			}
		}
	}
	t.Logf("%d requests to the origin (pages and fragments), none with Fragcache-Debug", checked)
}

// TestDebugPassthrough: an answer that was not composed says why, with
// the token only.
func TestDebugPassthrough(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/plain": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Cache-Control", "max-age=60")
			fmt.Fprint(w, `<p>not opted in <esi:include src="/x"/></p>`)
		},
		"/noesi": esiPage(`<p>opted in, no ESI</p>`),
		"/page":  esiPage(`<esi:include src="/f"/>`),
		"/json": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{}`)
		},
		"/f": frag("F", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--debug-token", debugToken)
	for _, c := range []struct{ method, path, reason string }{
		{"GET", "/plain", "not-opted-in"},
		{"GET", "/noesi", "no-esi"},
		{"GET", "/json", "not-html"},
		{"HEAD", "/page", "head"},
	} {
		for _, token := range []bool{true, false} {
			req, _ := http.NewRequest(c.method, fc.front+c.path, nil)
			if token {
				req.Header.Set("Fragcache-Debug", debugToken)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("Server-Timing")
			want := ""
			if token {
				want = `fc-page;desc="passthrough ` + c.reason + `"`
			}
			if got != want {
				t.Errorf("%s %s (token %v): Server-Timing %q, want %q", c.method, c.path, token, got, want)
			}
			if cc := resp.Header.Get("Cache-Control"); token && cc != "private, no-store" {
				t.Errorf("%s %s: a debug answer says Cache-Control %q", c.method, c.path, cc)
			}
		}
	}
	resp, _ := get(t, fc.front+"/plain")
	if cc := resp.Header.Get("Cache-Control"); cc != "max-age=60" {
		t.Errorf("a passthrough without the token says Cache-Control %q, want the upstream's", cc)
	}
}

// TestDebugHeaderBounded: a page with 300 includes gets at most 1 KiB of
// entries, the first ones in page order, then one fc-more that counts the
// rest by outcome.
func TestDebugHeaderBounded(t *testing.T) {
	var page strings.Builder
	for i := range 300 {
		fmt.Fprintf(&page, `<esi:include src="/many/%d"/>`, i)
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page":  esiPage(page.String()),
		"/many/": frag("x", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--max-includes", "1000", "--debug-token", debugToken)
	resp, _ := get(t, fc.front+"/page", "Fragcache-Debug", debugToken)
	st := resp.Header.Get("Server-Timing")
	if len(st) > 1024 {
		t.Errorf("Server-Timing is %d bytes, want at most 1024", len(st))
	}
	entries := parseServerTiming(t, st)
	last := entries[len(entries)-1]
	if last.name != "fc-more" {
		t.Fatalf("no fc-more entry at the end of %q", st)
	}
	listed := entries[:len(entries)-1]
	for i, e := range listed {
		if e.name != fmt.Sprintf("fc-%d", i+1) || !strings.HasPrefix(e.desc, fmt.Sprintf("/many/%d ", i)) {
			t.Fatalf("entry %d is %+v", i+1, e)
		}
	}
	m := regexp.MustCompile(`^(\d+) more: ((?:[a-z_]+=\d+,?)+)$`).FindStringSubmatch(last.desc)
	if m == nil {
		t.Fatalf("fc-more desc %q", last.desc)
	}
	n, _ := strconv.Atoi(m[1])
	sum := 0
	for _, kv := range strings.Split(m[2], ",") {
		k, _ := strconv.Atoi(kv[strings.IndexByte(kv, '=')+1:])
		sum += k
	}
	if n+len(listed) != 300 || sum != n {
		t.Errorf("%d listed + %d more (counted %d), want 300 in all: %q", len(listed), n, sum, last.desc)
	}
	t.Logf("%d bytes: %d entries listed, fc-more %q", len(st), len(listed), last.desc)
}

// TestDebugTokenConfig: the token is a secret (rule 24): at least 16
// bytes, never shown in an error or --help, warned about as a flag.
func TestDebugTokenConfig(t *testing.T) {
	const short = "short-secret"
	_, err := loadConfig([]string{"--upstream", "http://a:1"}, envOf(map[string]string{"FRAGCACHE_DEBUG_TOKEN": short}), nil)
	if err == nil || !strings.Contains(err.Error(), "env FRAGCACHE_DEBUG_TOKEN: must be at least 16 bytes") || strings.Contains(err.Error(), short) {
		t.Errorf("a short token: %v", err)
	}
	c, err := loadConfig([]string{"--upstream", "http://a:1"}, envOf(map[string]string{"FRAGCACHE_DEBUG_TOKEN": debugToken}), nil)
	if err != nil || string(c.Proxy.DebugToken) != debugToken || len(c.warnings) != 0 {
		t.Errorf("from the environment: %v, %q, warnings %q", err, c.Proxy.DebugToken, c.warnings)
	}
	c, err = loadConfig([]string{"--upstream", "http://a:1", "--debug-token", debugToken}, envOf(nil), nil)
	if err != nil || !strings.Contains(strings.Join(c.warnings, "\n"), "set FRAGCACHE_DEBUG_TOKEN instead") {
		t.Errorf("as a flag: %v, warnings %q", err, c.warnings)
	}
	if strings.Contains(strings.Join(c.warnings, "\n"), debugToken) {
		t.Error("a warning shows the token")
	}
}
