package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fragcache/metrics"
)

// The tests in this file run a real Proxy on a loopback listener in front
// of a raw origin that records the bytes of every request head. Clients
// dial from 127.0.0.1 or from 127.0.0.2, so that a test can trust one
// loopback address and not the other: trust is decided on the TCP peer
// address only (DESIGN rule 18).

const (
	trustedPeer   = "127.0.0.2" // listed in TrustedProxies by these tests
	untrustedPeer = "127.0.0.1"
)

// rawOrigin is a raw HTTP/1.1 upstream on loopback: it records each
// request head, answers with the bytes respond returns for it, and closes
// the connection.
type rawOrigin struct {
	addr string

	// mu protects heads.
	mu    sync.Mutex
	heads []string
}

func newRawOrigin(t *testing.T, respond func(head string) string) *rawOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				head, err := readTestHead(bufio.NewReader(c))
				if err != nil {
					return
				}
				o.mu.Lock()
				o.heads = append(o.heads, head)
				o.mu.Unlock()
				io.WriteString(c, respond(head))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return o
}

// since returns the request heads received after the first n, and their
// number so far.
func (o *rawOrigin) since(n int) ([]string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.heads[n:]...), len(o.heads)
}

// count is the number of request heads whose request-target starts with
// prefix.
func (o *rawOrigin) count(prefix string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, h := range o.heads {
		if strings.HasPrefix(headTarget(h), prefix) {
			n++
		}
	}
	return n
}

func readTestHead(br *bufio.Reader) (string, error) {
	var b []byte
	for !bytes.HasSuffix(b, []byte("\r\n\r\n")) {
		c, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		if b = append(b, c); len(b) > 64<<10 {
			return "", errors.New("head too large")
		}
	}
	return string(b), nil
}

// headTarget is the request-target of a request head.
func headTarget(head string) string {
	f := strings.Fields(strings.SplitN(head, "\r\n", 2)[0])
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// headValues returns the values of the header lines of head named name
// (case-insensitively), as sent.
func headValues(head, name string) []string {
	var out []string
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// answer builds a complete response that closes its connection.
func answer(headers, body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s", headers, len(body), body)
}

// esiAnswer is an opted-in page.
func esiAnswer(body string) string {
	return answer("Content-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\n", body)
}

// serveProxy runs a Proxy built from cfg (Upstream and Metrics filled in
// when empty) on a loopback listener until the test ends.
func serveConfigProxy(t *testing.T, cfg Config) (*Proxy, string) {
	t.Helper()
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "test"})
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		ln.Close()
		<-done
		p.Close()
	})
	return p, ln.Addr().String()
}

// rawFrom sends raw to addr from the local address from and reads the
// answer until the server closes the connection (the requests say
// Connection: close). It returns the head and the body.
func rawFrom(t *testing.T, from, addr, raw string) (head, body string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	h, rest, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok {
		t.Fatalf("the answer to %q has no head: %q", raw, b)
	}
	return h + "\r\n\r\n", rest
}

// get is a GET of target with Host host and the extra header lines hdrs,
// sent from the local address from; it returns the body of a 200 answer.
func get(t *testing.T, from, addr, host, target, hdrs string) string {
	t.Helper()
	head, body := rawFrom(t, from, addr, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n"+hdrs+"Connection: close\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
		t.Fatalf("GET %s from %s: %q, want 200", target, from, head)
	}
	return body
}

// TestTrustedProxyHeadersKept: from a TrustedProxies peer, X-Forwarded-For
// is appended to (every line of it, in order) and Forwarded, X-Real-IP,
// X-Forwarded-Proto and X-Forwarded-Host are kept as sent; the same
// request from any other peer has them replaced or dropped (DESIGN rules
// 12 and 18).
func TestTrustedProxyHeadersKept(t *testing.T) {
	o := newRawOrigin(t, func(string) string { return answer("Content-Type: text/plain\r\n", "page") })
	_, addr := serveConfigProxy(t, Config{Upstream: "http://" + o.addr, TrustedProxies: []string{trustedPeer + "/32", "10.0.0.0/8"}})
	hdrs := "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: https\r\n" +
		"X-Forwarded-Host: www.shop.test\r\nForwarded: for=203.0.113.7;proto=https\r\nX-Real-IP: 203.0.113.7\r\n" +
		"X-Forwarded-Port: 443\r\n"
	tests := []struct {
		from string
		want map[string][]string // header name -> the values the upstream must get
	}{
		{trustedPeer, map[string][]string{
			"X-Forwarded-For":   {"203.0.113.7, 10.1.2.3, " + trustedPeer},
			"X-Forwarded-Proto": {"https"},
			"X-Forwarded-Host":  {"www.shop.test"},
			"Forwarded":         {"for=203.0.113.7;proto=https"},
			"X-Real-IP":         {"203.0.113.7"},
			"X-Forwarded-Port":  {"443"},
		}},
		{untrustedPeer, map[string][]string{
			"X-Forwarded-For":   {untrustedPeer},
			"X-Forwarded-Proto": {"http"},
			"X-Forwarded-Host":  {"shop.test"},
			"Forwarded":         nil,
			"X-Real-IP":         nil,
			"X-Forwarded-Port":  nil,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.from, func(t *testing.T) {
			_, n := o.since(0)
			get(t, tc.from, addr, "shop.test", "/p", hdrs)
			heads, _ := o.since(n)
			if len(heads) != 1 {
				t.Fatalf("the upstream got %d requests, want 1", len(heads))
			}
			for name, want := range tc.want {
				if got := headValues(heads[0], name); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("from %s: the upstream's %s is %q, want %q", tc.from, name, got, want)
				}
			}
		})
	}
}

// TestTrustedProxiesValidated: bad syntax is a configuration error, named.
func TestTrustedProxiesValidated(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "test"})
	for _, bad := range []string{"10.0.0.0/33", "not-an-address", "10.0.0.1/8/8", "fe80::1%eth0", "::ffff:10.0.0.0/104", "10.1.2.3/8"} {
		if _, err := New(Config{Upstream: "http://app:8080", Metrics: m, TrustedProxies: []string{bad}}); err == nil ||
			!strings.Contains(err.Error(), bad) {
			t.Errorf("TrustedProxies %q: New gave %v, want an error naming it", bad, err)
		}
	}
	p, err := New(Config{Upstream: "http://app:8080", Metrics: m,
		TrustedProxies: []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "::1"}})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
}

// TestFragmentsCarryTheForwardedScheme: fragment fetches from the upstream
// carry the page request's X-Forwarded-Proto, and that value is part of
// their key (DESIGN rule 18), so that an app behind a TLS load balancer
// neither redirects its fragments to https forever nor has an https
// answer served to an http page, or the other way round. The value keyed
// is http or https and nothing else, whatever a trusted proxy passes on,
// so no client can split the cache by sending new values; from a client
// that is no trusted proxy it is the connection's scheme.
func TestFragmentsCarryTheForwardedScheme(t *testing.T) {
	o := newRawOrigin(t, func(head string) string {
		if headTarget(head) == "/page" {
			return esiAnswer(`[<esi:include src="/f/scheme"/>]`)
		}
		// An app that builds its links from the forwarded scheme.
		proto := strings.Join(headValues(head, "X-Forwarded-Proto"), ",")
		return answer("Content-Type: text/html\r\nCache-Control: public, max-age=60\r\n", "scheme="+proto)
	})
	_, addr := serveConfigProxy(t, Config{Upstream: "http://" + o.addr, Wait: 5 * time.Second, MaxWait: 5 * time.Second,
		TrustedProxies: []string{trustedPeer}})
	tests := []struct {
		from, xfp, want string
		fetches         int // fetches of the fragment so far
	}{
		{trustedPeer, "https", "[scheme=https]", 1},
		{trustedPeer, "https", "[scheme=https]", 1}, // cached
		{untrustedPeer, "", "[scheme=http]", 2},     // its own key
		{untrustedPeer, "https", "[scheme=http]", 2},
		{trustedPeer, "http", "[scheme=http]", 2},
		{trustedPeer, "", "[scheme=http]", 2},
		{trustedPeer, "HTTPS, http", "[scheme=https]", 2}, // the first element counts
		{trustedPeer, "javascript", "[scheme=http]", 2},   // neither: the connection's
		{trustedPeer, "https\"><script>", "[scheme=http]", 2},
	}
	for i, tc := range tests {
		xfp := ""
		if tc.xfp != "" {
			xfp = "X-Forwarded-Proto: " + tc.xfp + "\r\n"
		}
		if body := get(t, tc.from, addr, "shop.test", "/page", xfp); body != tc.want {
			t.Errorf("request %d from %s with X-Forwarded-Proto %q: %q, want %q", i, tc.from, tc.xfp, body, tc.want)
		}
		if n := o.count("/f/scheme"); n != tc.fetches {
			t.Errorf("request %d from %s with X-Forwarded-Proto %q: %d fragment fetches so far, want %d", i, tc.from, tc.xfp, n, tc.fetches)
		}
	}
	// Fifty more values from a trusted proxy that passes on what clients
	// send: no new fetch, no new key.
	for i := range 50 {
		get(t, trustedPeer, addr, "shop.test", "/page", fmt.Sprintf("X-Forwarded-Proto: x%d\r\n", i))
	}
	if n := o.count("/f/scheme"); n != 2 {
		t.Errorf("after 50 made-up X-Forwarded-Proto values: %d fragment fetches, want 2", n)
	}
}

// TestPreserveHostFragments: with PreserveHost, the page request and its
// fragment fetches carry the public host the page is served as, srcs
// still resolve and dial against the upstream, and that Host is part of
// the fragments' keys (DESIGN rule 18): a virtual host's fragment never
// reaches a page of another virtual host, and unlisted Hosts, which are
// served as the first public host, share its entries rather than making
// new ones.
func TestPreserveHostFragments(t *testing.T) {
	o := newRawOrigin(t, func(head string) string {
		host := strings.Join(headValues(head, "Host"), ",")
		if headTarget(head) == "/page" {
			return esiAnswer(`[<esi:include src="/f/site"/>]`)
		}
		return answer("Content-Type: text/html\r\nCache-Control: public, max-age=60\r\n", "site="+host)
	})
	_, addr := serveConfigProxy(t, Config{Upstream: "http://" + o.addr, Wait: 5 * time.Second, MaxWait: 5 * time.Second,
		PublicHosts: []string{"a.test", "b.test"}, PreserveHost: true})
	tests := []struct {
		host, want string
		fetches    int
	}{
		{"a.test", "[site=a.test]", 1},
		{"b.test", "[site=b.test]", 2},
		{"B.TEST", "[site=b.test]", 2}, // the configured spelling, the same key
		{"a.test", "[site=a.test]", 2},
		{"evil.test", "[site=a.test]", 2}, // served as the first public host
		{o.addr, "[site=a.test]", 2},      // the upstream's own name is no public host either
	}
	for i, tc := range tests {
		_, n := o.since(0)
		if body := get(t, untrustedPeer, addr, tc.host, "/page", ""); body != tc.want {
			t.Errorf("request %d, Host %s: %q, want %q", i, tc.host, body, tc.want)
		}
		if got := o.count("/f/site"); got != tc.fetches {
			t.Errorf("request %d, Host %s: %d fragment fetches so far, want %d", i, tc.host, got, tc.fetches)
		}
		heads, _ := o.since(n)
		for _, h := range heads {
			want := strings.ToLower(tc.want[len("[site=") : len(tc.want)-1])
			if got := headValues(h, "Host"); len(got) != 1 || got[0] != want {
				t.Errorf("request %d, Host %s: the upstream's request for %s had Host %q, want %s",
					i, tc.host, headTarget(h), got, want)
			}
			if headTarget(h) == "/page" {
				if got := headValues(h, "X-Forwarded-Host"); len(got) != 1 || got[0] != want {
					t.Errorf("request %d, Host %s: the page request had X-Forwarded-Host %q, want %s", i, tc.host, got, want)
				}
			}
		}
	}
}

// TestHTTPSUpstream: a page and its fragment from an https upstream.
// fasthttp's HostClient refuses a request whose URI scheme is not its own
// ("can't follow redirects to a different protocol"), and an origin-form
// request-target parses as http: every page of an https upstream was a
// 502 and every fragment a connect_error.
func TestHTTPSUpstream(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		if r.URL.Path == "/page" {
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			io.WriteString(w, `[<esi:include src="/f/x"/>]`)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "fragment over %s", r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(ts.Close)
	p, addr := serveConfigProxy(t, Config{Upstream: ts.URL, Wait: 5 * time.Second, MaxWait: 5 * time.Second})
	// The test server's certificate is its own: trust it in both clients
	// (their dialers do the TLS handshake).
	tlsCfg := ts.Client().Transport.(*http.Transport).TLSClientConfig
	p.pageDialer.tls.RootCAs = tlsCfg.RootCAs
	p.fetch.trust = tlsCfg
	if body := get(t, untrustedPeer, addr, "shop.test", "/page", ""); body != "[fragment over http]" {
		t.Errorf("page of an https upstream: %q, want [fragment over http]", body)
	}
}

// TestForwardedKeyParts: the X-Forwarded-Proto and, with PreserveHost,
// the Host of an upstream fragment's fetch are parts of its key; the
// precomputed keys equal the ones built per request; fragments of other
// hosts carry neither, so their keys do not vary.
func TestForwardedKeyParts(t *testing.T) {
	up := target{url: "http://app:8080/f", upstream: true}
	other := target{url: "http://cdn.example:80/f"}
	fwds := []fragFwd{{proto: "http"}, {proto: "https", variant: 1}, {proto: "http", host: "a.test"},
		{proto: "https", host: "a.test", variant: 1}, {proto: "http", host: "b.test", variant: -1}}
	seen := map[string]string{}
	for _, f := range fwds {
		for _, scope := range []string{scopeShared, scopeAnon, "u0123"} {
			for _, lang := range []string{"", "de,en"} {
				k := fragmentKeyOf(scope, &up, &f, lang)
				if want := fragmentKey(scope, fragmentKeyURL(&up, &f), lang); k != want {
					t.Errorf("fragmentKeyOf(%s, %+v, %q) = %q, fragmentKey gives %q", scope, f, lang, k, want)
				}
				what := fmt.Sprintf("%s %+v %q", scope, f, lang)
				if prev, dup := seen[k]; dup {
					t.Errorf("%s and %s share the key %q", prev, what, k)
				}
				seen[k] = what
				if o := fragmentKeyOf(scope, &other, &f, lang); o != fragmentKey(scope, other.url, lang) {
					t.Errorf("another host's key varies with %+v: %q", f, o)
				}
			}
		}
	}

	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "test"})
	for _, preserve := range []bool{false, true} {
		cfg := Config{Upstream: "http://app:8080", Metrics: m, PreserveHost: preserve}
		if preserve {
			cfg.PublicHosts = []string{"a.test", "b.test"}
		}
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rs := p.live.Load().env.src.resolveSrc("/f", func() string { return "/" })
		for _, f := range p.fw.forwardVariants() {
			for _, scope := range []string{scopeShared, scopeAnon} {
				if got, want := rs.key(scope, &f, ""), fragmentKeyOf(scope, &rs.t, &f, ""); got != want {
					t.Errorf("PreserveHost %v: the precomputed key of %s %+v is %q, want %q", preserve, scope, f, got, want)
				}
			}
		}
		p.Close()
	}
}

func TestOriginForm(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/p?q=1", "/p?q=1"},
		{"//user:pw@host/x?u=http://y", "//user:pw@host/x?u=http://y"},
		{"http://user:pw@host/p?q=1", "/p?q=1"},
		{"HTTPS://host", "/"},
		{"http://host?q=1", "/?q=1"},
		{"*", "*"},
	}
	for _, tc := range tests {
		if got := string(originForm([]byte(tc.in))); got != tc.want {
			t.Errorf("originForm(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestScrubHeaderValues(t *testing.T) {
	tests := []struct{ in, want string }{
		{`error when reading request headers: invalid header value "session=s3cret\x01": buffer size=170`,
			`error when reading request headers: invalid header value "<redacted>": buffer size=170`},
		{`malformed mime header line: "Cookie: a=\"b\"\x00": x; invalid header key "Au\x00th"`,
			`malformed mime header line: "<redacted>": x; invalid header key "<redacted>"`},
		{`connection "127.0.0.1:1"<->"127.0.0.1:2": timeout`, `connection "127.0.0.1:1"<->"127.0.0.1:2": timeout`},
		{`invalid header value "unterminated`, `invalid header value "unterminated`},
	}
	for _, tc := range tests {
		if got := scrubHeaderValues(tc.in); got != tc.want {
			t.Errorf("scrubHeaderValues(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNeverDialled(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "169.254.169.254", "::ffff:169.254.169.254",
		"169.254.0.1", "fe80::1", "0.0.0.0", "::", "::ffff:0.0.0.0", "0.1.2.3", "fd00:ec2::254", "100.100.100.200"} {
		if !neverDialled(netip.MustParseAddr(s)) {
			t.Errorf("%s may be dialled, want refused", s)
		}
	}
	for _, s := range []string{"10.1.2.3", "172.16.0.1", "192.168.1.1", "fc00::1", "fd12::1", "100.64.0.1", "8.8.8.8", "2001:db8::1",
		"::ffff:10.0.0.1"} {
		if neverDialled(netip.MustParseAddr(s)) {
			t.Errorf("%s refused, want dialled", s)
		}
	}
}

// TestAllowHostResolvedAtEveryDial: an --allow-host name is resolved at
// each dial and checked on the answer, so a name whose DNS answer turns
// to loopback or to the metadata address (DNS rebinding) is refused then,
// without a connection; an entry written as an IP literal is dialled as
// written, without a lookup.
func TestAllowHostResolvedAtEveryDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted sync.WaitGroup
	accepted.Add(1)
	go func() {
		defer accepted.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	r, err := newReach("http://app.internal:8080", []string{"cdn.internal", "127.0.0.1:" + port})
	if err != nil {
		t.Fatal(err)
	}
	answers := [][]netip.Addr{
		{netip.MustParseAddr("127.0.0.1")},
		{netip.MustParseAddr("::ffff:169.254.169.254"), netip.MustParseAddr("fe80::1")},
		{netip.MustParseAddr("0.0.0.0")},
	}
	var lookups []string
	r.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		lookups = append(lookups, host)
		return answers[len(lookups)-1], nil
	}
	for i := range answers {
		c, err := r.dial("cdn.internal:"+port, time.Second)
		if !errors.Is(err, errDialDenied) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dial %d of cdn.internal resolving to %v: %v, want errDialDenied", i, answers[i], err)
		}
	}
	if len(lookups) != len(answers) {
		t.Errorf("%d dials made %d lookups (%q), want one each", len(answers), len(lookups), lookups)
	}
	// The literal entry: dialled as written, no lookup.
	c, err := r.dial("127.0.0.1:"+port, time.Second)
	if err != nil {
		t.Fatalf("dial of the literal 127.0.0.1:%s: %v", port, err)
	}
	c.Close()
	if len(lookups) != len(answers) {
		t.Errorf("the literal entry was looked up: %q", lookups)
	}
	ln.Close()
	accepted.Wait()
}
