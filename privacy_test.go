package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// whoFrag answers a fragment that names the cookie user of the request
// (or "anon"), with the given Cache-Control.
func whoFrag(cacheControl string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := "anon"
		if c, _ := r.Cookie("user"); c != nil {
			name = c.Value
		}
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", cacheControl)
		io.WriteString(w, "secret-"+name)
	}
}

// TestPrivateWinsOverSharedDirectives: a credentialed fragment answered
// `private` beside s-maxage, public or Surrogate-Control max-age is
// alice's alone (RFC 9111 section 5.2.2.7, DESIGN rule 15): never served
// to bob or to an anonymous visitor, and the page that holds it is
// private.
func TestPrivateWinsOverSharedDirectives(t *testing.T) {
	for _, cc := range []struct{ name, cacheControl, surrogate string }{
		{"private beside s-maxage", "private, s-maxage=60", ""},
		{"public beside private", "public, private, max-age=60", ""},
		{"private beside Surrogate-Control max-age", "private, max-age=60", "max-age=60"},
	} {
		t.Run(cc.name, func(t *testing.T) {
			o := newOrigin(t, map[string]http.HandlerFunc{
				"/": esiPage(`[<esi:include src="/acct">wait</esi:include>]`),
				"/acct": func(w http.ResponseWriter, r *http.Request) {
					if cc.surrogate != "" {
						w.Header().Set("Surrogate-Control", cc.surrogate)
					}
					whoFrag(cc.cacheControl)(w, r)
				},
			})
			fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
			resp, b := get(t, fc.front+"/", "Cookie", "user=alice")
			if b != "[secret-alice]" {
				t.Fatalf("alice got %q", b)
			}
			if got := resp.Header.Get("Cache-Control"); got != "private, no-store" {
				t.Errorf("alice's page Cache-Control %q, want private, no-store", got)
			}
			for _, who := range [][]string{{"Cookie", "user=bob"}, nil, {"Authorization", "Bearer x"}} {
				_, b := get(t, fc.front+"/", who...)
				if strings.Contains(b, "alice") {
					t.Errorf("%v got %q: alice's private fragment", who, b)
				}
			}
		})
	}
}

// TestPrivateAnswerToAnonymousNotShared: a private answer to an anonymous
// fetch is nobody's: not stored, so the next anonymous visitor triggers a
// fetch of its own, and it is never promoted to the shared key by a
// s-maxage beside it.
func TestPrivateAnswerToAnonymousNotShared(t *testing.T) {
	var n atomic.Int64
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/f">wait</esi:include>]`),
		"/f": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "private, s-maxage=60")
			fmt.Fprintf(w, "v%d", n.Add(1))
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	for i := 1; i <= 3; i++ {
		if _, b := get(t, fc.front+"/"); b != fmt.Sprintf("[v%d]", i) {
			t.Fatalf("view %d got %q: a private answer was kept", i, b)
		}
	}
	if _, b := get(t, fc.front+"/", "Cookie", "user=bob"); b == "[v3]" {
		t.Errorf("bob got the anonymous private answer %q", b)
	}
}

// TestAcceptLanguageIsKeyed: a legacy app that reflects Accept-Language
// into a fragment and sends no Vary must not let one anonymous visitor
// plant a value for every other (DESIGN rule 16): the fragment is fetched
// with the normalised value only and keyed on it, and the page says
// Vary: Accept-Language.
func TestAcceptLanguageIsKeyed(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/greet">wait</esi:include>]`),
		"/greet": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=60")
			io.WriteString(w, "lang="+r.Header.Get("Accept-Language"))
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	resp, b := get(t, fc.front+"/", "Accept-Language", `<script>alert(1)</script>, EN-gb;q=0.8, fr`)
	if b != "[lang=fr,en-gb]" {
		t.Errorf("the attacker's page %q, want the normalised value [lang=fr,en-gb]", b)
	}
	if v := resp.Header.Get("Vary"); !strings.Contains(v, "Accept-Language") {
		t.Errorf("page Vary %q lacks Accept-Language", v)
	}
	for _, tc := range []struct{ lang, want string }{
		{"", "[lang=]"},
		{"de", "[lang=de]"},
		{"fr, en-GB;q=0.8", "[lang=fr,en-gb]"},
	} {
		var hdr []string
		if tc.lang != "" {
			hdr = []string{"Accept-Language", tc.lang}
		}
		_, b := get(t, fc.front+"/", hdr...)
		if b != tc.want {
			t.Errorf("Accept-Language %q: got %q, want %q", tc.lang, b, tc.want)
		}
		if strings.Contains(b, "script") {
			t.Errorf("Accept-Language %q: the attacker's value reached another visitor: %q", tc.lang, b)
		}
	}
	for _, r := range o.requests("/greet") {
		if v := r.Header.Get("Accept-Language"); strings.ContainsAny(v, "<> ;") {
			t.Errorf("a fragment fetch carried the raw Accept-Language %q", v)
		}
	}
	// The same normalised language shares one copy: the attacker's value
	// normalises to the last one's.
	if n := o.count("/greet"); n != 3 {
		t.Errorf("%d fetches of /greet for 3 distinct normalised languages", n)
	}
}

// TestAcceptLanguageNormalisedWhole: the language a fragment is fetched
// with and keyed on is rule 16's over the whole field: every
// Accept-Language line (one list, RFC 9110 section 5.3), every range of a
// long list; a q that is not a number in [0, 1] is no preference, and an
// empty range is no range. The privacy soak found all four: the first line
// alone was read, the first 64 ranges decided, q=NaN was kept and sorted at
// random, and "ja, ," was sent and keyed as "ja,,".
func TestAcceptLanguageNormalisedWhole(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/greet">wait</esi:include>]`),
		"/greet": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=60")
			io.WriteString(w, "lang="+strings.Join(r.Header.Values("Accept-Language"), "|"))
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	for _, tc := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"two lines", []string{"ja", "de;q=0.5"}, "ja,de"},
		{"q=NaN", []string{"en;q=NaN, de;q=0.5"}, "de"},
		{"preferred range after 70 others", []string{strings.Repeat("xx-yy;q=0.1, ", 70) + "fr;q=0.9"}, "fr,xx-yy,xx-yy"},
		{"empty ranges", []string{"ja, ,;q=0.5,, de"}, "ja,de"},
	} {
		req, err := http.NewRequest("GET", fc.front+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range tc.lines {
			req.Header.Add("Accept-Language", l)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := string(b); got != "[lang="+tc.want+"]" {
			t.Errorf("%s: %q, want the fragment fetched with %q", tc.name, got, tc.want)
		}
	}
}

// TestPersonalisedPageIsPrivate: a page that a cookie, the user agent, the
// language or the referer shaped through esi:vars, esi:choose or a src is
// not a shared cache's to keep, whatever the upstream said (rule 7); a
// page shaped only by its query keeps the upstream's Cache-Control.
func TestPersonalisedPageIsPrivate(t *testing.T) {
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("Cache-Control", "public, max-age=600")
			io.WriteString(w, body)
		}
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/vars":   page(`<esi:vars>Hello $(HTTP_COOKIE{name})</esi:vars>`),
		"/choose": page(`<esi:choose><esi:when test="$(HTTP_COOKIE{name})=='bob'">B</esi:when><esi:otherwise>O</esi:otherwise></esi:choose>`),
		"/ua":     page(`<esi:vars>$(HTTP_USER_AGENT{os})</esi:vars>`),
		"/ref":    page(`<esi:vars>$(HTTP_REFERER)</esi:vars>`),
		"/src":    page(`<esi:include src="/w/$(HTTP_COOKIE{name})"/>`),
		"/query":  page(`<esi:vars>$(QUERY_STRING{tab})</esi:vars>`),
		"/w/":     frag("w", 0, "public, max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--esi-cookie", "name", "--wait", "1s")
	for _, path := range []string{"/vars", "/choose", "/ua", "/ref", "/src"} {
		resp, b := get(t, fc.front+path, "Cookie", "name=bob", "Referer", "http://x/", "User-Agent", "Mozilla (Windows)")
		if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
			t.Errorf("%s (%q): Cache-Control %q, want private, no-store", path, b, cc)
		}
	}
	resp, _ := get(t, fc.front+"/query?tab=x", "Cookie", "name=bob")
	if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "public") {
		t.Errorf("/query: Cache-Control %q, want the upstream's public", cc)
	}
}

// TestOneVisitorCannotOpenTheBreaker: a fresh query value per request
// makes one fragment answer 500 every time; that backs off per fragment
// and never stops the healthy fragments of the same host (rule 9).
func TestOneVisitorCannotOpenTheBreaker(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/bad?x=$(QUERY_STRING{x})">B</esi:include>|<esi:include src="/good?v=$(QUERY_STRING{v})">G</esi:include>]`),
		"/bad": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", 500)
		},
		"/good": frag("ok", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s")
	for i := range 40 {
		get(t, fmt.Sprintf("%s/?x=%d", fc.front, i))
	}
	if n := o.count("/bad"); n < 30 {
		t.Fatalf("the attacker's fragment was fetched %d times, want a fetch per distinct value", n)
	}
	placeholders := 0
	for i := range 20 {
		if _, b := get(t, fmt.Sprintf("%s/?x=y%d&v=%d", fc.front, i, i)); !strings.Contains(b, "|ok]") {
			placeholders++
		}
	}
	if placeholders > 0 {
		t.Errorf("%d of 20 new visitors got the healthy fragment's placeholder after another visitor's 500s", placeholders)
	}
}

// TestHintTableForgets: 4 500 public fragment URLs with 8 KB query values
// (what one visitor can send in a minute) fill any fixed table of per-URL
// hints; a public fragment seen after that must still be cached.
func TestHintTableForgets(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":      esiPage(`[<esi:include src="/pub?q=$(QUERY_STRING{q})">P</esi:include>]`),
		"/new":   esiPage(`[<esi:include src="/fresh?pad=` + strings.Repeat("y", 8000) + `">P</esi:include>]`),
		"/pub":   frag("p", 0, "public, max-age=600"),
		"/fresh": frag("f", 0, "public, max-age=600"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--cache-size", "16MiB")
	long := strings.Repeat("z", 8000)
	for i := range 4500 {
		resp, err := client.Get(fmt.Sprintf("%s/?q=%d%s", fc.front, i, long))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, hdr := range [][]string{nil, {"Cookie", "user=alice"}, nil, {"Cookie", "user=bob"}} {
		if _, b := get(t, fc.front+"/new", hdr...); b != "[f]" {
			t.Fatalf("%v got %q", hdr, b)
		}
	}
	if n := o.count("/fresh"); n != 1 {
		t.Errorf("a public fragment was fetched %d times for 4 views after the hint table filled, want 1", n)
	}
}

// TestFailingURLsMemoryBounded: every distinct failing fragment URL is
// remembered for its backoff; 3 000 of them with 8 KB query values must
// not hold more than a bounded amount of heap (they did: 9-12 KiB each,
// still 70 s later).
func TestFailingURLsMemoryBounded(t *testing.T) {
	// An origin that keeps no record of its requests: the test measures
	// the heap of its own process.
	var bad atomic.Int64
	page := esiPage(`[<esi:include src="/bad?q=$(QUERY_STRING{q})">P</esi:include>]`)
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			bad.Add(1)
			http.Error(w, "no", http.StatusServiceUnavailable)
			return
		}
		page(w, r)
	}))
	t.Cleanup(o.Close)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--cache-size", "8MiB")
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	long := strings.Repeat("z", 8000)
	send := func(from, to int) {
		for i := from; i < to; i++ {
			resp, err := client.Get(fmt.Sprintf("%s/?q=%d%s", fc.front, i, long))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send(0, 500)
	base := heap()
	send(500, 3500)
	grew := int64(heap()) - int64(base)
	// 3 000 URLs of 8 KB are 24 MB; the failure memory is capped at
	// 8 MiB of keys (plus the backoff records).
	t.Logf("heap growth for 3 000 distinct failing 8 KB URLs: %.1f MiB", float64(grew)/(1<<20))
	if grew > 16<<20 {
		t.Errorf("heap grew %d MiB for 3 000 failing URLs, want it bounded (≤ 16 MiB)", grew>>20)
	}
	if n := bad.Load(); n < 3000 {
		t.Errorf("%d fetches: the failing URLs were not all tried", n)
	}
}

// TestComposedOutputCapped: a page whose includes would compose to more
// than --max-page-size renders placeholders for the includes that do not
// fit, and is served (rule 21).
func TestComposedOutputCapped(t *testing.T) {
	var page strings.Builder
	for range 200 {
		page.WriteString(`<esi:include src="/big">-</esi:include>`)
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":    esiPage(page.String()),
		"/big": frag(strings.Repeat("x", 6000), 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--max-page-size", "100KiB")
	resp, b := get(t, fc.front+"/")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if len(b) > 100<<10 {
		t.Errorf("composed page of %d bytes, want at most 100 KiB", len(b))
	}
	if !strings.Contains(b, strings.Repeat("x", 6000)) || !strings.Contains(b, "-") {
		t.Errorf("want some includes rendered and the rest as placeholders")
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
		t.Errorf("a cut page has Cache-Control %q", cc)
	}
	if m := metricsText(t, fc); !strings.Contains(m, `fragcache_esi_errors_total{reason="too_large"}`) {
		t.Error("no esi_errors{too_large} counted")
	}
}

// TestScopeCookie: with --scope-cookie, only the session cookie
// identifies a user: an analytics cookie that changes on every request no
// longer costs every logged-in page a fetch per fragment, and the
// fragment fetch carries only the scope cookies (DESIGN rules 2 and 17).
func TestScopeCookie(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/acct">wait</esi:include>]`),
		"/acct": func(w http.ResponseWriter, r *http.Request) {
			c, _ := r.Cookie("sid")
			v := "none"
			if c != nil {
				v = c.Value
			}
			w.Header().Set("Cache-Control", "max-age=60")
			io.WriteString(w, "acct-"+v)
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--scope-cookie", "sid")
	for i := range 5 {
		_, b := get(t, fc.front+"/", "Cookie", fmt.Sprintf("_ga=GA1.%d; sid=alice", i))
		if b != "[acct-alice]" {
			t.Fatalf("view %d: %q", i, b)
		}
	}
	if n := o.count("/acct"); n != 1 {
		t.Errorf("%d fetches for 5 views by one session with a rotating analytics cookie, want 1", n)
	}
	if _, b := get(t, fc.front+"/", "Cookie", "_ga=GA1.9; sid=bob"); b != "[acct-bob]" {
		t.Errorf("bob got %q", b)
	}
	for _, r := range o.requests("/acct") {
		if c := r.Header.Get("Cookie"); strings.Contains(c, "_ga") {
			t.Errorf("a fragment fetch carried the non-scope cookie: %q", c)
		}
	}
	// A request with only the analytics cookie is anonymous.
	if _, b := get(t, fc.front+"/", "Cookie", "_ga=GA1.7"); b != "[acct-none]" {
		t.Errorf("a visitor without the session cookie got %q", b)
	}
	if n := o.count("/acct"); n != 3 {
		t.Errorf("%d fetches, want 3 (alice, bob, anonymous)", n)
	}
	_ = time.Second
}

// TestLanguageFalseRule: a fragment rule with `language: false` is
// fetched without Accept-Language and kept once for every language.
func TestLanguageFalseRule(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="/w/x">wait</esi:include>]`),
		"/w/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=60")
			io.WriteString(w, "lang="+r.Header.Get("Accept-Language"))
		},
	})
	file := t.TempDir() + "/fragcache.yaml"
	if err := os.WriteFile(file, []byte("fragments:\n  - name: weather\n    match: /w/\n    language: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--config", file)
	for _, l := range []string{"de", "fr", ""} {
		if _, b := get(t, fc.front+"/page", "Accept-Language", l); b != "[lang=]" {
			t.Errorf("Accept-Language %q: %q, want the one copy fetched without a language", l, b)
		}
	}
	if n := o.count("/w/x"); n != 1 {
		t.Errorf("%d fetches for three languages, want 1", n)
	}
}
