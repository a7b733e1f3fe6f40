package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// canaryServer counts the connections it accepts: a host fragcache must
// never contact.
func canaryServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "CANARY")
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

// rawExchange sends raw bytes on a new connection and returns the first
// response's status line and whether the server closed the connection
// after it.
func rawExchange(t *testing.T, addr, raw string) (status string, closed bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// A closed connection reads EOF; an open one times out.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = br.ReadByte()
	return resp.Status, err == io.EOF
}

func TestRequestSmugglingRefused(t *testing.T) {
	var upstreamHits atomic.Int64
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			upstreamHits.Add(1)
			io.WriteString(w, "ok")
		},
	})
	fc := startFragcache(t, "--upstream", o.URL)
	addr := strings.TrimPrefix(fc.front, "http://")
	tests := []struct{ name, raw string }{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"duplicate CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-Long: a\r\n b\r\n\r\n"},
		{"bare LF", "GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := upstreamHits.Load()
			status, closed := rawExchange(t, addr, tc.raw)
			if !strings.HasPrefix(status, "400") {
				t.Errorf("status %q, want 400", status)
			}
			if !closed {
				t.Error("the connection stayed open after a refused request")
			}
			if upstreamHits.Load() != before {
				t.Error("the refused request reached the upstream")
			}
		})
	}
	status, closed := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if !strings.HasPrefix(status, "200") || closed {
		t.Errorf("a clean request: %q closed=%v, want 200 on a kept-alive connection", status, closed)
	}
	status, _ = rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("a", 80<<10)+"\r\n\r\n")
	if !strings.HasPrefix(status, "431") {
		t.Errorf("huge header: %q, want 431", status)
	}
}

func TestESIInjectionAndReach(t *testing.T) {
	canary, conns := canaryServer(t)
	canaryHost := strings.TrimPrefix(canary.URL, "http://")
	_, canaryPort, _ := net.SplitHostPort(canaryHost)
	o := newOrigin(t, map[string]http.HandlerFunc{
		// Not opted in: its tags are inert even with a hostile src.
		"/comments": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, `<p>user text: <esi:include src="`+canary.URL+`/steal"/></p>`)
		},
		"/page": esiPage(`[<esi:include src="http://$(HTTP_HOST)/x">v1</esi:include>]` +
			`[<esi:include src="/q/$(QUERY_STRING{u})">v2</esi:include>]` +
			`[<esi:include src="http://127.0.0.2:` + canaryPort + `/x">v3</esi:include>]` +
			`[<esi:include src="http://[::1]:` + canaryPort + `/x">v4</esi:include>]` +
			`[<esi:include src="http://169.254.169.254/latest/meta-data/">v5</esi:include>]` +
			`[<esi:include src="/redirect">v6</esi:include>]` +
			`[<esi:include src="/q/$(HTTP_COOKIE{session})">v7</esi:include>]`),
		"/redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, canary.URL+"/redirected", http.StatusFound)
		},
		"/q/": func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "path=%s", r.URL.EscapedPath())
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--public-host", canaryHost)
	_, body := get(t, fc.front+"/comments")
	if !strings.Contains(body, "<esi:include") {
		t.Errorf("a page that did not opt in was changed: %q", body)
	}
	_, body = get(t, fc.front+"/page?u="+strings.ReplaceAll("//"+canaryHost+"/x", "/", "%2F"), "Cookie", "session=abc")
	for _, v := range []string{"[v1]", "[v3]", "[v4]", "[v5]", "[v6]"} {
		if !strings.Contains(body, v) {
			t.Errorf("body %q lacks the placeholder %s of a forbidden include", body, v)
		}
	}
	if !strings.Contains(body, "path=/q/%2F%2F"+canaryHost) {
		t.Errorf("a variable did not stay inside the path: %q", body)
	}
	if !strings.Contains(body, "[path=/q/]") {
		t.Errorf("an unlisted cookie did not expand as unset: %q", body)
	}
	if strings.Contains(body, "abc") {
		t.Errorf("a cookie not listed in --esi-cookie was expanded: %q", body)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the canary host got %d connections", n)
	}
	if strings.Contains(body, "CANARY") {
		t.Error("a redirect was followed")
	}
}

func TestResourceLimits(t *testing.T) {
	// 1 GiB of zeros in about 1 MiB: one gzip member of 1 MiB of zeros,
	// repeated; gzip readers decode concatenated members as one stream.
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	bomb := bytes.Repeat(member.Bytes(), 1024)
	many := strings.Repeat(`<esi:include src="/n"/>`, 10_000)
	var fragFetches atomic.Int64
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/bomb": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(bomb)
		},
		"/many": esiPage(many),
		"/n": func(w http.ResponseWriter, r *http.Request) {
			fragFetches.Add(1)
			io.WriteString(w, "n")
		},
		"/distinct": esiPage(func() string {
			var b strings.Builder
			for i := 0; i < 1000; i++ {
				fmt.Fprintf(&b, `<esi:include src="/d%d"/>`, i)
			}
			return b.String()
		}()),
		"/huge-frag-page": esiPage(`[<esi:include src="/huge">cut</esi:include>]`),
		"/huge": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(100<<20))
			buf := make([]byte, 1<<20)
			for i := 0; i < 100; i++ {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		},
		"/capped": esiPage(`<esi:include src="/slow" timeout="60s">p</esi:include>`),
		"/slow": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--max-wait", "200ms", "--max-includes", "256")

	resp, _ := get(t, fc.front+"/bomb")
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("gzip bomb page: %d, want 502", resp.StatusCode)
	}
	resp, body := get(t, fc.front+"/many")
	if resp.StatusCode != 200 || body != strings.Repeat("n", 256) {
		t.Errorf("10 000 includes: %d, %d rendered (%.40q), want 200 and the first 256 (--max-includes)", resp.StatusCode, len(body), body)
	}
	if n := fragFetches.Load(); n != 1 {
		t.Errorf("the same src 10 000 times was fetched %d times, want 1", n)
	}
	get(t, fc.front+"/distinct")
	fetched := 0
	for i := 0; i < 1000; i++ {
		fetched += o.count(fmt.Sprintf("/d%d", i))
	}
	if fetched > 256 {
		t.Errorf("%d distinct includes fetched for one page, want at most --max-includes (256)", fetched)
	}
	_, body = get(t, fc.front+"/huge-frag-page")
	if body != "[cut]" {
		t.Errorf("100 MiB fragment: %q, want the placeholder", body)
	}
	start := time.Now()
	get(t, fc.front+"/capped")
	if took := time.Since(start); took > 200*time.Millisecond+time.Second {
		t.Errorf("timeout=60s with --max-wait 200ms took %v", took)
	}
	_, m := get(t, fc.admin+"/metrics")
	for _, want := range []string{`fragcache_esi_errors_total{reason="too_large"} 1`, `result="too_large"`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestSlowlorisIsCut(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{"/": frag("ok", 0, "")})
	fc := startFragcache(t, "--upstream", o.URL, "--read-timeout", "500ms")
	addr := strings.TrimPrefix(fc.front, "http://")
	const slow = 20
	conns := make([]net.Conn, 0, slow)
	for i := 0; i < slow; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n") // and never the rest
		conns = append(conns, c)
	}
	start := time.Now()
	for i := 0; i < 10; i++ { // normal traffic continues meanwhile
		if resp, body := get(t, fc.front+"/"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("a normal request during the attack: %d %q", resp.StatusCode, body)
		}
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(c) // returns once the server closes
		if err != nil {
			t.Fatalf("slow connection %d was not closed by the server: %v", i, err)
		}
	}
	if took := time.Since(start); took > 500*time.Millisecond+3*time.Second {
		t.Errorf("slow connections were cut after %v, want about --read-timeout (500ms)", took)
	}
}

// TestSharedHintFlightStaysWithItsUser: once a URL answered public, every
// user looks up its shared key. When that key has no copy left, the first
// user's lookup starts a fetch with its credentials, and lookups of other
// users join that flight. If the answer turns private, it belongs to the
// first user only: the users who joined must not render it.
func TestSharedHintFlightStaysWithItsUser(t *testing.T) {
	var calls atomic.Int64
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/acct">wait</esi:include>]`),
		"/acct": func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				w.Header().Set("Cache-Control", "public, max-age=1")
				io.WriteString(w, "public-v1")
				return
			}
			select {
			case <-time.After(400 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
			name := "anon"
			if c, _ := r.Cookie("user"); c != nil {
				name = c.Value
			}
			w.Header().Set("Cache-Control", "private, max-age=60")
			io.WriteString(w, "secret-"+name)
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--stale-ttl", "0s")
	if _, b := get(t, fc.front+"/"); b != "[public-v1]" {
		t.Fatalf("first view %q, want [public-v1]", b)
	}
	time.Sleep(1200 * time.Millisecond) // the shared copy expires, nothing stale is left

	bodies := make(map[string]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	view := func(who string, hdr ...string) {
		defer wg.Done()
		_, b := get(t, fc.front+"/", hdr...)
		mu.Lock()
		bodies[who] = b
		mu.Unlock()
	}
	wg.Add(1)
	go view("alice", "Cookie", "user=alice")
	time.Sleep(100 * time.Millisecond) // alice's fetch is running
	wg.Add(2)
	go view("bob", "Cookie", "user=bob")
	go view("anon")
	wg.Wait()
	if b := bodies["alice"]; b != "[secret-alice]" {
		t.Errorf("alice got %q, want [secret-alice]", b)
	}
	for _, who := range []string{"bob", "anon"} {
		if strings.Contains(bodies[who], "secret-alice") {
			t.Errorf("%s got %q: alice's private fragment", who, bodies[who])
		}
	}
	eventually(t, "bob gets its own copy", func() bool {
		_, b := get(t, fc.front+"/", "Cookie", "user=bob")
		return b == "[secret-bob]"
	})
}

// TestEveryCookieLineCounts: a request may carry its cookies on more than
// one Cookie line (an HTTP/2 front end that splits them and forwards them
// unjoined). The user scope must cover exactly the cookies the fragment
// fetch carries, all of them: two users who share only their first line
// must not share fragments.
func TestEveryCookieLineCounts(t *testing.T) {
	me := func(w http.ResponseWriter, r *http.Request) {
		name := "nobody"
		if c, _ := r.Cookie("session"); c != nil {
			name = c.Value
		}
		w.Header().Set("Cache-Control", "private, max-age=60")
		io.WriteString(w, "hello "+name)
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		// The cookie variable makes fasthttp collect every Cookie line.
		"/":      esiPage(`[<esi:include src="/me"/>][<esi:include src="/me2?l=$(HTTP_COOKIE{lang})"/>]`),
		"/plain": esiPage(`[<esi:include src="/me3"/>]`),
		"/me":    me,
		"/me2":   me,
		"/me3":   me,
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--esi-cookie", "lang")
	view := func(path, session string) string {
		req, err := http.NewRequest("GET", fc.front+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["Cookie"] = []string{"lang=en", "session=" + session}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if b := view("/", "alice"); b != "[hello alice][hello alice]" {
		t.Errorf("alice: %q, want [hello alice][hello alice]", b)
	}
	if b := view("/", "bob"); b != "[hello bob][hello bob]" {
		t.Errorf("bob: %q, want [hello bob][hello bob]", b)
	}
	if b := view("/plain", "carol"); b != "[hello carol]" {
		t.Errorf("carol: %q, want [hello carol] (the fetch must carry every cookie)", b)
	}
}

// A request fasthttp refuses after reading its request line must not put
// the method it named into a metric label: every distinct method would be
// a new series.
func TestRefusedRequestMethodLabelBounded(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{"/": frag("ok", 0, "")})
	fc := startFragcache(t, "--upstream", o.URL)
	addr := strings.TrimPrefix(fc.front, "http://")
	for i := range 3 {
		raw := fmt.Sprintf("RANDOM%d / HTTP/1.1\r\nHost: a b\r\n\r\n", i)
		if status, _ := rawExchange(t, addr, raw); !strings.HasPrefix(status, "400") {
			t.Fatalf("bad Host: status %q, want 400", status)
		}
	}
	m := metricsText(t, fc)
	if strings.Contains(m, `method="RANDOM`) {
		t.Errorf("a client-chosen method became a label value:\n%s", grepLines(m, "fragcache_http_requests_total"))
	}
	if !strings.Contains(m, `fragcache_http_requests_total{code="400",method="other"} 3`) {
		t.Errorf("refused requests not counted under method=\"other\":\n%s", grepLines(m, "fragcache_http_requests_total{code=\"400\""))
	}
}

// TestAdminListensOnLoopbackByDefault: /metrics and pprof are not for the
// public network, so without --admin-listen the admin listener binds
// loopback only; the deploy kit sets :9188 where a scraper needs it.
func TestAdminListensOnLoopbackByDefault(t *testing.T) {
	cfg, err := loadConfig([]string{"--upstream", "http://app:8080"}, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AdminListen != "127.0.0.1:9188" {
		t.Errorf("default --admin-listen %q, want 127.0.0.1:9188", cfg.AdminListen)
	}
}

// TestParseErrorLogsHoldNoCredentials: fasthttp's messages about a request
// or an upstream answer it could not parse quote the raw head by default,
// cookies and tokens included, and fragcache logs them. With
// SecureErrorLogMessage on the server and the clients they say what failed
// and how long the buffer was, never its contents.
func TestParseErrorLogsHoldNoCredentials(t *testing.T) {
	const clientSecret, upstreamSecret = "client-session-3f9a", "upstream-session-77c1"
	rec := newHeadRecorder(t, func(head string) string {
		if requestTarget(head) == "/bad-value" {
			// A control byte in the credential itself: fasthttp quotes the
			// value it refuses, whatever SecureErrorLogMessage says.
			return "HTTP/1.1 200 OK\r\nSet-Cookie: session=" + upstreamSecret + "\x01\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
		}
		// A NUL in a header name: fasthttp's client refuses the answer.
		return "HTTP/1.1 200 OK\r\nSet-Cookie: session=" + upstreamSecret + "\r\nX-Bro\x00ken: v\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
	})
	fc := startFragcache(t, "--upstream", "http://"+rec.addr)
	addr := strings.TrimPrefix(fc.front, "http://")

	// fasthttp's server refuses both requests: a NUL in a header name, a
	// control byte in the Cookie value.
	for _, bad := range []string{"X-Bro\x00ken: v\r\n", "Cookie: other=" + clientSecret + "\x01\r\n"} {
		head, _ := rawRoundTrip(t, addr, "GET / HTTP/1.1\r\nHost: shop.test\r\nCookie: session="+clientSecret+
			"\r\nAuthorization: Bearer "+clientSecret+"\r\n"+bad+"Connection: close\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 400 ") {
			t.Errorf("a request with %q: %q, want 400", bad, head)
		}
	}
	for _, path := range []string{"/page", "/bad-value"} {
		head, _ := rawRoundTrip(t, addr, "GET "+path+" HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 502 ") {
			t.Errorf("%s, an upstream answer fasthttp refuses: %q, want 502", path, head)
		}
	}
	eventually(t, "the four failures are logged", func() bool {
		l := fc.log.String()
		return strings.Count(l, "error when serving connection") == 2 && strings.Count(l, "upstream request failed")+strings.Count(l, "malformed upstream response") >= 2
	})
	l := fc.log.String()
	t.Logf("the failures as logged:\n%s", grepLines(l, "error"))
	for _, secret := range []string{clientSecret, upstreamSecret} {
		if strings.Contains(l, secret) {
			t.Errorf("the log holds the credential %q:\n%s", secret, l)
		}
	}
}

// headerLines returns the header lines of a raw head whose name is name
// (case-insensitively).
func headerLines(head, name string) []string {
	var out []string
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if k, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			out = append(out, l)
		}
	}
	return out
}

// TestForwardingHygiene checks the page request the upstream receives
// from a client that is no trusted proxy (DESIGN rule 12), byte for byte:
// X-Forwarded-For, -Proto and -Host are fragcache's own, replacing every
// line the client sent; the client's other forwarding headers, the URL and
// method rewrites and header names with an underscore are dropped; the
// request goes out as HTTP/1.1 in origin form, and userinfo never becomes
// an Authorization. Each of these lets a visitor choose what the app
// believes about the client address, scheme, host, URL or method.
func TestForwardingHygiene(t *testing.T) {
	rec := newHeadRecorder(t, func(string) string {
		return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", "page")
	})
	fc := startFragcache(t, "--upstream", "http://"+rec.addr)
	addr := strings.TrimPrefix(fc.front, "http://")
	req := func(line, headers string) string {
		return line + "\r\nHost: shop.test\r\n" + headers + "Connection: close\r\n\r\n"
	}
	dropped := []string{"Forwarded", "X-Real-IP", "True-Client-IP", "X-Client-IP", "X-Cluster-Client-IP",
		"X-Forwarded-Port", "X-Forwarded-Scheme", "X-Forwarded-Ssl", "X-Forwarded-Prefix", "X-Forwarded-Server",
		"X-Url-Scheme", "Front-End-Https", "X-Host", "X-Original-Host"}
	var forwarding strings.Builder
	for _, h := range dropped {
		forwarding.WriteString(h + ": https://evil.test/;for=203.0.113.9\r\n")
	}
	tests := []struct {
		name, raw   string
		requestLine string   // the upstream's request line; "" = GET /h HTTP/1.1
		want        []string // header lines the upstream must get, each exactly once by name
		absent      []string // header names it must not get
	}{
		{
			name: "X-Forwarded-For, -Proto and -Host replaced, every line of them",
			raw: req("GET /h HTTP/1.1", "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.1\r\n"+
				"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Forwarded-Host: evil.test\r\n"),
			want: []string{"X-Forwarded-For: 127.0.0.1", "X-Forwarded-Proto: http", "X-Forwarded-Host: shop.test"},
		},
		{
			name:   "the client's other forwarding headers dropped",
			raw:    req("GET /h HTTP/1.1", forwarding.String()),
			want:   []string{"X-Forwarded-For: 127.0.0.1"},
			absent: dropped,
		},
		{
			name: "URL and method rewrites dropped",
			raw: req("GET /h HTTP/1.1", "X-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-HTTP-Method-Override: DELETE\r\n"+
				"X-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\n"),
			absent: []string{"X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"},
		},
		{
			// CGI, PHP, Rack and WSGI read X_Forwarded_For as X-Forwarded-For.
			name:   "header names with an underscore dropped",
			raw:    req("GET /h HTTP/1.1", "X_Forwarded_For: 203.0.113.9\r\nX_Real_IP: 203.0.113.9\r\nCustom_Header: v\r\nX-Custom: kept\r\n"),
			want:   []string{"X-Custom: kept", "X-Forwarded-For: 127.0.0.1"},
			absent: []string{"X_Forwarded_For", "X_Real_IP", "Custom_Header"},
		},
		{
			name:        "HTTP/1.0 goes out as HTTP/1.1",
			raw:         "GET /old HTTP/1.0\r\nHost: shop.test\r\n\r\n",
			requestLine: "GET /old HTTP/1.1",
		},
		{
			name:        "absolute form: origin form upstream, the userinfo nowhere",
			raw:         req("GET http://user:secret@shop.test/p?q=1 HTTP/1.1", ""),
			requestLine: "GET /p?q=1 HTTP/1.1",
			absent:      []string{"Authorization"},
		},
		{
			// fasthttp reads such a path as a host and a shorter path.
			name:        "a path that looks like an authority, byte for byte",
			raw:         req("GET //user:secret@evil.test/x?u=http://y HTTP/1.1", ""),
			requestLine: "GET //user:secret@evil.test/x?u=http://y HTTP/1.1",
			absent:      []string{"Authorization"},
		},
		{
			name:        "a #fragment cut off, as before",
			raw:         req("GET /p?q=1#/../admin HTTP/1.1", ""),
			requestLine: "GET /p?q=1 HTTP/1.1",
		},
		{
			name:   "no User-Agent the client did not send",
			raw:    req("GET /h HTTP/1.1", ""),
			absent: []string{"User-Agent"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := rec.count()
			head, _ := rawRoundTrip(t, addr, tc.raw)
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
				t.Fatalf("request %q: got %q, want 200", tc.raw, head)
			}
			got := rec.since(before)
			if len(got) != 1 {
				t.Fatalf("request %q: the upstream got %d requests, want 1", tc.raw, len(got))
			}
			up := got[0]
			wantLine := tc.requestLine
			if wantLine == "" {
				wantLine = "GET /h HTTP/1.1"
			}
			if line, _, _ := strings.Cut(up, "\r\n"); line != wantLine {
				t.Errorf("request %q: upstream request line %q, want %q", tc.raw, line, wantLine)
			}
			for _, w := range tc.want {
				name, _, _ := strings.Cut(w, ":")
				if lines := headerLines(up, name); len(lines) != 1 || lines[0] != w {
					t.Errorf("request %q: upstream %s lines %q, want exactly %q\n%q", tc.raw, name, lines, w, up)
				}
			}
			for _, name := range tc.absent {
				if lines := headerLines(up, name); len(lines) != 0 {
					t.Errorf("request %q: the upstream got %q, want no %s\n%q", tc.raw, lines, name, up)
				}
			}
		})
	}

	// CONNECT would open a tunnel; TRACE echoes the request (its cookies)
	// to a script that can read the answer.
	for _, raw := range []string{
		"CONNECT shop.test:443 HTTP/1.1\r\nHost: shop.test:443\r\n\r\n",
		"TRACE / HTTP/1.1\r\nHost: shop.test\r\nCookie: s=secret\r\nConnection: close\r\n\r\n",
	} {
		before := rec.count()
		head, body := rawRoundTrip(t, addr, raw)
		if !strings.HasPrefix(head, "HTTP/1.1 405 ") || len(headerLines(head, "Allow")) != 1 {
			t.Errorf("%q: got %q, want 405 with Allow", raw, head)
		}
		if strings.Contains(body, "secret") {
			t.Errorf("%q: the answer echoes the request: %q", raw, body)
		}
		if n := rec.count() - before; n != 0 {
			t.Errorf("%q reached the upstream %d times", raw, n)
		}
	}
}

// TestNothingAddedToAPageRequest: the upstream gets no User-Agent and no
// Content-Type the client did not send (fasthttp adds both by default),
// and the ones it sent as they were.
func TestNothingAddedToAPageRequest(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{"/form": func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "body=%s", b)
	}})
	fc := startFragcache(t, "--upstream", o.URL)
	addr := strings.TrimPrefix(fc.front, "http://")
	_, body := rawRoundTrip(t, addr, "POST /form HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
	if body != "body=abc" {
		t.Fatalf("POST answered %q, want body=abc", body)
	}
	rawRoundTrip(t, addr, "POST /form HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: legacy-client/1\r\n"+
		"Content-Type: application/x-custom\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
	reqs := o.requests("/form")
	if len(reqs) != 2 {
		t.Fatalf("the upstream got %d requests, want 2", len(reqs))
	}
	if ua, ct := reqs[0].Header.Values("User-Agent"), reqs[0].Header.Values("Content-Type"); len(ua) != 0 || len(ct) != 0 {
		t.Errorf("a request without User-Agent and Content-Type reached the upstream with User-Agent %q, Content-Type %q", ua, ct)
	}
	if ua, ct := reqs[1].Header.Get("User-Agent"), reqs[1].Header.Get("Content-Type"); ua != "legacy-client/1" || ct != "application/x-custom" {
		t.Errorf("the client's own User-Agent %q and Content-Type %q were not kept", ua, ct)
	}
}

// TestUnlistedHostServedAsFirstPublicHost: with --public-host set, a
// request for a Host that is not listed is served as one for the first
// listed host; the upstream never sees the client's value as
// X-Forwarded-Host, and $(HTTP_HOST) names the same host (DESIGN rules 11
// and 12). A listed Host is kept, in its configured spelling. The upstream
// always gets its own Host.
func TestUnlistedHostServedAsFirstPublicHost(t *testing.T) {
	rec := newHeadRecorder(t, func(head string) string {
		if requestTarget(head) == "/page" {
			return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\n",
				`<esi:include src="/f/$(HTTP_HOST)"/>`)
		}
		return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=60\r\n", requestTarget(head))
	})
	fc := startFragcache(t, "--upstream", "http://"+rec.addr, "--public-host", "public.test",
		"--public-host", "www.public.test", "--wait", "5s", "--max-wait", "5s")
	addr := strings.TrimPrefix(fc.front, "http://")
	tests := []struct{ host, xfh, want string }{
		{"evil.test", "", "public.test"},
		{"evil.test", "www.public.test", "public.test"}, // not a trusted proxy: its X-Forwarded-Host counts for nothing
		{"WWW.Public.Test", "evil.test", "www.public.test"},
		{"public.test:8080", "", "public.test"}, // not listed with that port
	}
	for _, tc := range tests {
		t.Run(tc.host+" "+tc.xfh, func(t *testing.T) {
			xfh := ""
			if tc.xfh != "" {
				xfh = "X-Forwarded-Host: " + tc.xfh + "\r\n"
			}
			before := rec.count()
			head, body := rawRoundTrip(t, addr, "GET /page HTTP/1.1\r\nHost: "+tc.host+"\r\n"+xfh+"Connection: close\r\n\r\n")
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != "/f/"+tc.want {
				t.Errorf("Host %q: got %q %q, want 200 and $(HTTP_HOST) = %s", tc.host, head, body, tc.want)
			}
			for _, up := range rec.since(before) {
				if requestTarget(up) != "/page" {
					continue
				}
				if got := headerLines(up, "X-Forwarded-Host"); len(got) != 1 || got[0] != "X-Forwarded-Host: "+tc.want {
					t.Errorf("Host %q: the upstream got X-Forwarded-Host %q, want %s", tc.host, got, tc.want)
				}
				if got := headerLines(up, "Host"); len(got) != 1 || got[0] != "Host: "+rec.addr {
					t.Errorf("Host %q: the upstream got Host %q, want its own", tc.host, got)
				}
			}
		})
	}
}

// TestForwardedHeadersCannotSplitFragments: what a visitor sends in the
// forwarding headers and the Host can neither plant a fragment for other
// visitors nor split the cache into new keys, and so switch caching off.
// The fragment's fetch carries X-Forwarded-Proto (DESIGN rule 18) as
// fragcache decided it, never the client's, and none of the other
// forwarding headers; 30 visitors with 30 different hostile sets of
// headers share one fetch and one copy.
func TestForwardedHeadersCannotSplitFragments(t *testing.T) {
	rec := newHeadRecorder(t, func(head string) string {
		if requestTarget(head) == "/page" {
			return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\n",
				`[<esi:include src="/f/links"/>]`)
		}
		// An app that builds absolute links from whatever it is told.
		v := func(name string) string { return strings.Join(headerLines(head, name), "|") }
		return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: public, max-age=60\r\n",
			v("X-Forwarded-Proto")+";"+v("X-Forwarded-Host")+";"+v("Forwarded")+";"+v("X-Forwarded-Scheme"))
	})
	fc := startFragcache(t, "--upstream", "http://"+rec.addr, "--public-host", "public.test", "--wait", "5s", "--max-wait", "5s")
	addr := strings.TrimPrefix(fc.front, "http://")
	const want = "[X-Forwarded-Proto: http;;;]"
	for i := range 30 {
		raw := fmt.Sprintf("GET /page HTTP/1.1\r\nHost: evil%d.test\r\nX-Forwarded-Proto: https%d\r\nX-Forwarded-Host: evil%d.test\r\n"+
			"Forwarded: proto=https;host=evil%d.test\r\nX-Forwarded-Scheme: https\r\nX-Forwarded-Ssl: on\r\nX_Forwarded_Proto: https\r\n"+
			"Connection: close\r\n\r\n", i, i, i, i)
		if head, body := rawRoundTrip(t, addr, raw); !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != want {
			t.Fatalf("visitor %d: %q %q, want 200 and %q", i, head, body, want)
		}
	}
	if _, body := rawRoundTrip(t, addr, "GET /page HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n"); body != want {
		t.Errorf("a plain visitor after them: %q, want %q", body, want)
	}
	n := 0
	for _, h := range rec.since(0) {
		if requestTarget(h) == "/f/links" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("31 visitors caused %d fetches of the fragment, want 1", n)
	}
}

// TestAllowHostNameNeverDialsLoopback: an --allow-host name is checked at
// dial time on the address it resolves to (DESIGN rule 19): `localhost`,
// which resolves to 127.0.0.1 (and ::1), is never dialled, whatever port
// it is allowed on, and the refusal counts result=denied; the same
// listener written as an IP literal is dialled as written.
func TestAllowHostNameNeverDialsLoopback(t *testing.T) {
	canary, conns := canaryServer(t)
	_, canaryPort, _ := net.SplitHostPort(strings.TrimPrefix(canary.URL, "http://"))
	literal := newOrigin(t, map[string]http.HandlerFunc{"/y": frag("LITERAL", 0, "max-age=60")})
	literalHost := strings.TrimPrefix(literal.URL, "http://")
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="http://localhost:` + canaryPort + `/x">denied</esi:include>]` +
			`[<esi:include src="http://localhost/x">denied</esi:include>]` +
			`[<esi:include src="http://` + literalHost + `/y">p</esi:include>]`),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--max-wait", "2s",
		"--allow-host", "localhost:"+canaryPort, "--allow-host", "localhost", "--allow-host", literalHost)
	_, body := get(t, fc.front+"/page")
	if body != "[denied][denied][LITERAL]" {
		t.Errorf("page %q, want [denied][denied][LITERAL]", body)
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the listener behind localhost got %d connections, want 0", n)
	}
	m := metricsText(t, fc)
	if !strings.Contains(m, `fragcache_fragment_fetches_total{fragment="other",result="denied",trigger="foreground"} 2`) {
		t.Errorf("the refused dials are not counted as denied:\n%s", grepLines(m, "fragcache_fragment_fetches_total{"))
	}
}
