package main

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// adminGet GETs path on fragcache's admin listener with Host host ("":
// the listener's address).
func adminGet(t *testing.T, fc *instance, path, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", fc.admin+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestAdminPageShowsTheCache: after traffic, the admin page lists the
// fragment groups and srcs with their figures and last error, the srcs in
// the form the page wrote them: never a cookie's or a query's value, a
// query, or a scope (rule 33). It is sent with its CSP and
// X-Frame-Options, and a foreign Host gets 421 on every path.
func TestAdminPageShowsTheCache(t *testing.T) {
	const cookieValue, queryValue = "alice-cookie-value-7f3a", "query-secret-value-91c2"
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`<esi:include src="/user/$(HTTP_COOKIE{uid})/cart?t=$(QUERY_STRING{t})"/>` +
			`<esi:include src="/w/orders"/><esi:include src="/broken?k=$(QUERY_STRING{t})">ph</esi:include>`),
		"/user/":    frag("CART", 0, "private, max-age=60"),
		"/w/orders": frag("ORDERS", 0, "max-age=60"),
		"/broken": func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "down", http.StatusBadGateway)
		},
	})
	cfg := writeConfig(t, "fragments:\n  - name: orders\n    match: /w/orders\n")
	fc := startFragcache(t, "--upstream", o.URL, "--esi-cookie", "uid", "--config", cfg, "--wait", "500ms")
	for range 3 {
		get(t, fc.front+"/page?t="+queryValue, "Cookie", "uid="+cookieValue)
	}
	get(t, fc.front+"/page?t="+queryValue)

	resp, page := adminGet(t, fc, "/", "")
	if resp.StatusCode != 200 {
		t.Fatalf("admin page: %d %s", resp.StatusCode, page)
	}
	if got := resp.Header.Get("Content-Security-Policy"); got != "default-src 'none'; style-src 'unsafe-inline'" {
		t.Errorf("Content-Security-Policy %q", got)
	}
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options %q", got)
	}
	for _, want := range []string{
		"version " + version, `<meta http-equiv="refresh"`, `id="l2">off<`,
		`<td class="src">/user/$(HTTP_COOKIE{uid})/cart</td><td>other</td><td class="num">4</td>`,
		// alice's three lookups (a miss, two hits), then an anonymous miss:
		// each scope is fetched once.
		`<td class="src">/w/orders</td><td>orders</td><td class="num">4</td><td class="num">50.0 %</td><td class="num">2</td>`,
		`<td class="src">/broken</td>`, `<td class="err">status 502</td>`,
		`<td>orders</td><td class="num">4</td><td class="num">50.0 %</td><td class="num">2</td>`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the admin page lacks %q", want)
		}
	}
	for _, bad := range []string{cookieValue, queryValue, "?t=", "k=", "uid=", "<script"} {
		if strings.Contains(page, bad) {
			t.Errorf("the admin page holds %q", bad)
		}
	}
	if m := regexp.MustCompile(`[0-9a-f]{32}`).FindString(page); m != "" {
		t.Errorf("the admin page holds %q, which looks like a scope", m)
	}
	t.Logf("admin page: %d bytes", len(page))

	// DNS rebinding: a Host that is not an IP literal, localhost or the
	// listener's own host gets 421, whatever the path.
	u, _ := url.Parse(fc.admin)
	_, port, _ := strings.Cut(u.Host, ":")
	for _, path := range []string{"/", "/metrics", "/livez"} {
		for host, want := range map[string]int{"evil.example:" + port: 421, "localhost:" + port: 200, "127.0.0.1:" + port: 200} {
			if resp, _ := adminGet(t, fc, path, host); resp.StatusCode != want {
				t.Errorf("GET %s with Host %s: %d, want %d", path, host, resp.StatusCode, want)
			}
		}
	}
}
