package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// instance is one fragcache started in-process by runWith.
type instance struct {
	front, admin string
	stop         func()
	log          *lockedBuffer // what fragcache wrote to stderr
}

// startFragcache runs fragcache on loopback ports with args added to the
// test defaults, and stops it when the test ends.
func startFragcache(t *testing.T, args ...string) *instance {
	t.Helper()
	return startFragcacheLog(t, nil, args...)
}

// startFragcacheLog is startFragcache with its log (standard error)
// copied to log.
func startFragcacheLog(t *testing.T, log io.Writer, args ...string) *instance {
	t.Helper()
	base := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--drain-delay", "0",
		"--access-log=false", "--shutdown-timeout", "5s"}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	var stderr lockedBuffer
	go func() {
		var errw io.Writer = &stderr
		if log != nil {
			errw = io.MultiWriter(&stderr, log)
		}
		done <- runWith(ctx, append(base, args...), func(string) string { return "" }, io.Discard, errw,
			hooks{ready: func(f, a net.Addr) { addrs <- [2]net.Addr{f, a} }})
	}()
	in := instance{log: &stderr}
	select {
	case a := <-addrs:
		in.front, in.admin = "http://"+a[0].String(), "http://"+a[1].String()
	case err := <-done:
		cancel()
		t.Fatalf("fragcache did not start: %v\n%s", err, stderr.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("fragcache did not start within 10s")
	}
	var once sync.Once
	in.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("fragcache stopped with %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("fragcache did not stop within 15s")
			}
		})
	}
	t.Cleanup(in.stop)
	return &in
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// origin is a fake legacy app: pages and fragments by path, with request
// counts.
type origin struct {
	*httptest.Server
	mu     sync.Mutex
	counts map[string]int
	reqs   map[string][]*http.Request
}

func newOrigin(t *testing.T, routes map[string]http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{counts: map[string]int{}, reqs: map[string][]*http.Request{}}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.counts[r.URL.Path]++
		o.reqs[r.URL.Path] = append(o.reqs[r.URL.Path], r.Clone(context.Background()))
		o.mu.Unlock()
		if h, ok := routes[r.URL.Path]; ok {
			h(w, r)
			return
		}
		for p, h := range routes { // "/dir/" routes take the whole subtree
			if strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p) {
				h(w, r)
				return
			}
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[path]
}

func (o *origin) requests(path string) []*http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*http.Request(nil), o.reqs[path]...)
}

// esiPage serves body as an opted-in page.
func esiPage(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
		w.Header().Set("Cache-Control", "max-age=30")
		io.WriteString(w, body)
	}
}

// frag serves body as a fragment after delay.
func frag(body string, delay time.Duration, cacheControl string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "text/html")
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		io.WriteString(w, body)
	}
}

var client = &http.Client{
	Timeout:       20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true},
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

// eventually retries check until it passes or 5 s went by.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPassthroughIsByteExact(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/file.bin": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			w.Header().Set("X-Custom", "kept as is")
			w.Header().Set("ETag", `"v1"`)
			w.Write(big)
		},
		"/plain.html": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Cache-Control", "max-age=5")
			w.WriteHeader(201)
			io.WriteString(w, `<p>no tags, <esi:include src="/x"/> but not opted in</p>`)
		},
		"/upload": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%s %d %x", r.Method, len(b), b[:4])
		},
		"/x": frag("SHOULD NOT APPEAR", 0, ""),
	})
	fc := startFragcache(t, "--upstream", o.URL)

	resp, body := get(t, fc.front+"/file.bin")
	if resp.StatusCode != 200 || body != string(big) {
		t.Errorf("binary: status %d, %d bytes; want 200 and %d identical bytes", resp.StatusCode, len(body), len(big))
	}
	if resp.Header.Get("X-Custom") != "kept as is" || resp.Header.Get("Etag") != `"v1"` {
		t.Errorf("binary: headers %v lost end-to-end headers", resp.Header)
	}
	if resp.Header.Get("Server") != "" {
		t.Errorf("binary: Server %q added", resp.Header.Get("Server"))
	}

	resp, body = get(t, fc.front+"/plain.html")
	if resp.StatusCode != 201 || !strings.Contains(body, `<esi:include src="/x"/>`) || resp.Header.Get("Cache-Control") != "max-age=5" {
		t.Errorf("tag-free html: %d %q %v; want 201, the body untouched", resp.StatusCode, body, resp.Header)
	}
	if o.count("/x") != 0 {
		t.Error("an include of a page that did not opt in was fetched")
	}

	payload := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1<<18)
	r, err := client.Post(fc.front+"/upload", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if want := fmt.Sprintf("POST %d deadbeef", len(payload)); string(b) != want {
		t.Errorf("POST body: origin saw %q, want %q", b, want)
	}

	req, _ := http.NewRequest("HEAD", fc.front+"/file.bin", nil)
	r, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 || r.ContentLength != int64(len(big)) {
		t.Errorf("HEAD: %d with length %d, want 200 with %d", r.StatusCode, r.ContentLength, len(big))
	}
	if got := o.requests("/file.bin"); len(got) != 2 || got[1].Method != "HEAD" {
		t.Errorf("HEAD was not forwarded as HEAD")
	}
	if xff := o.requests("/upload")[0].Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", xff)
	}
}

func TestFastFragmentOnFirstRequest(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":          esiPage(`<html><esi:include src="/frag/a"/>|<esi:include src="/frag/a"/></html>`),
		"/frag/a":    frag("<b>A</b>", 0, "max-age=60"),
		"/frag/slow": frag("slow", time.Second, ""),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	resp, body := get(t, fc.front+"/")
	if want := "<html><b>A</b>|<b>A</b></html>"; body != want {
		t.Fatalf("body %q, want %q", body, want)
	}
	if resp.Header.Get("Content-Length") != fmt.Sprint(len(body)) || resp.Header.Get("Surrogate-Control") != "" {
		t.Errorf("headers %v: want a recomputed Content-Length and no Surrogate-Control", resp.Header)
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "max-age=") || cc == "max-age=0" {
		t.Errorf("Cache-Control %q, want the page's max-age kept (lowered to the fragment's)", cc)
	}
	if n := o.count("/frag/a"); n != 1 {
		t.Errorf("the same src twice on a page was fetched %d times, want 1", n)
	}
}

func TestSlowFragmentPlaceholderThenContent(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":          esiPage(`<div><esi:include src="/frag/slow">Loading…</esi:include></div>`),
		"/frag/slow": frag("<p>report</p>", 600*time.Millisecond, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms")
	start := time.Now()
	resp, body := get(t, fc.front+"/")
	if took := time.Since(start); took > 50*time.Millisecond+500*time.Millisecond {
		t.Errorf("first page took %v; want about --wait (50ms)", took)
	}
	if body != "<div>Loading…</div>" {
		t.Errorf("first body %q, want the placeholder", body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
		t.Errorf("a page with a placeholder went out with Cache-Control %q", cc)
	}
	eventually(t, "slow fragment filled in", func() bool {
		_, b := get(t, fc.front+"/")
		return b == "<div><p>report</p></div>"
	})
	if n := o.count("/frag/slow"); n != 1 {
		t.Errorf("slow fragment fetched %d times, want 1", n)
	}
}

func TestStaleServedDuringOneRefresh(t *testing.T) {
	var version atomic.Int64
	release := make(chan struct{})
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`<esi:include src="/frag/v"/>`),
		"/frag/v": func(w http.ResponseWriter, r *http.Request) {
			n := version.Add(1)
			if n > 1 {
				<-release
			}
			w.Header().Set("Cache-Control", "max-age=1")
			fmt.Fprintf(w, "v%d", n)
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--stale-ttl", "1m")
	if _, b := get(t, fc.front+"/"); b != "v1" {
		t.Fatalf("first body %q, want v1", b)
	}
	time.Sleep(1100 * time.Millisecond) // v1 goes stale
	for i := 0; i < 20; i++ {
		if _, b := get(t, fc.front+"/"); b != "v1" {
			t.Fatalf("while refreshing, body %q, want the stale v1", b)
		}
	}
	if n := o.count("/frag/v"); n != 2 {
		t.Errorf("fragment fetched %d times (20 stale views), want 2: exactly one refresh", n)
	}
	close(release)
	eventually(t, "refreshed copy served", func() bool {
		_, b := get(t, fc.front+"/")
		return b == "v2"
	})
}

func TestConcurrentColdRequestsFetchOnce(t *testing.T) {
	routes := map[string]http.HandlerFunc{}
	page := ""
	for i := 0; i < 5; i++ {
		p := fmt.Sprintf("/frag/%d", i)
		routes[p] = frag(fmt.Sprintf("[%d]", i), 200*time.Millisecond, "max-age=60")
		page += fmt.Sprintf(`<esi:include src="%s"/>`, p)
	}
	routes["/"] = esiPage(page)
	o := newOrigin(t, routes)
	// A long budget: every waiter must get the one fetch's result even on
	// a loaded machine under the race detector.
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "5s", "--max-wait", "5s")
	var wg sync.WaitGroup
	var full atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fc.front + "/")
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == "[0][1][2][3][4]" {
				full.Add(1)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 5; i++ {
		if n := o.count(fmt.Sprintf("/frag/%d", i)); n != 1 {
			t.Errorf("fragment %d fetched %d times by 200 concurrent cold requests, want 1", i, n)
		}
	}
	if full.Load() != 200 {
		t.Errorf("%d of 200 pages complete with --wait 5s, want all", full.Load())
	}
}

func TestFailurePolicies(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/alt":         esiPage(`<esi:include src="/broken" alt="/backup">ph</esi:include>`),
		"/continue":    esiPage(`[<esi:include src="/broken" onerror="continue">ph</esi:include>]`),
		"/placeholder": esiPage(`[<esi:include src="/broken">ph</esi:include>]`),
		"/try": esiPage(`<esi:try><esi:attempt>A<esi:include src="/broken"/></esi:attempt>` +
			`<esi:except>E<esi:include src="/backup"/></esi:except></esi:try>`),
		"/tryok": esiPage(`<esi:try><esi:attempt>A<esi:include src="/backup"/></esi:attempt>` +
			`<esi:except>E<esi:include src="/never"/></esi:except></esi:try>`),
		"/broken": func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) },
		"/backup": frag("backup", 0, "max-age=60"),
		"/never":  frag("never", 0, ""),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s")
	tests := []struct{ path, want string }{
		{"/alt", "backup"},
		{"/continue", "[]"},
		{"/placeholder", "[ph]"},
		{"/try", "Ebackup"},
		{"/tryok", "Abackup"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, fc.front+tc.path)
			if body != tc.want {
				t.Errorf("GET %s = %q, want %q", tc.path, body, tc.want)
			}
			if tc.path != "/tryok" && resp.Header.Get("Cache-Control") != "private, no-store" {
				t.Errorf("a page with a fallback went out with Cache-Control %q", resp.Header.Get("Cache-Control"))
			}
		})
	}
	if n := o.count("/never"); n != 0 {
		t.Errorf("an unused except's include was fetched %d times", n)
	}
	if n := o.count("/broken"); n != 1 {
		t.Errorf("a failing fragment was fetched %d times within its backoff, want 1", n)
	}
}

func TestNestedAndLoopingIncludes(t *testing.T) {
	esiFrag := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("Cache-Control", "max-age=60")
			io.WriteString(w, body)
		}
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":       esiPage(`<esi:include src="/outer"/>|<esi:include src="/loop-a"/>|<esi:include src="/d1"/>`),
		"/outer":  esiFrag(`(outer <esi:include src="/inner"/>)`),
		"/inner":  frag("inner", 0, "max-age=60"),
		"/loop-a": esiFrag(`a<esi:include src="/loop-b">cut</esi:include>`),
		"/loop-b": esiFrag(`b<esi:include src="/loop-a">cut</esi:include>`),
		"/d1":     esiFrag(`1<esi:include src="/d2">deep</esi:include>`),
		"/d2":     esiFrag(`2<esi:include src="/d3">deep</esi:include>`),
		"/d3":     esiFrag(`3<esi:include src="/d4">deep</esi:include>`),
		"/d4":     frag("4", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--max-depth", "3")
	_, body := get(t, fc.front+"/")
	if want := "(outer inner)|abcut|123deep"; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	if n := o.count("/d4"); n != 0 {
		t.Errorf("an include past --max-depth was fetched %d times", n)
	}
	_, metrics := get(t, fc.admin+"/metrics")
	for _, want := range []string{`fragcache_esi_errors_total{reason="loop"} 1`, `fragcache_esi_errors_total{reason="depth_exceeded"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s in\n%s", want, grepLines(metrics, "esi_errors"))
		}
	}
}

func TestGzipUpstream(t *testing.T) {
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		io.WriteString(w, s)
		w.Close()
		return b.Bytes()
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz(`<h1><esi:include src="/f"/></h1>`))
		},
		"/f": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Cache-Control", "max-age=60")
			w.Write(gz("zipped fragment"))
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	resp, body := get(t, fc.front+"/", "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip (the client accepts it)", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if string(plain) != "<h1>zipped fragment</h1>" {
		t.Errorf("decoded body %q", plain)
	}
	resp, body = get(t, fc.front+"/")
	if resp.Header.Get("Content-Encoding") != "" || body != "<h1>zipped fragment</h1>" {
		t.Errorf("identity client got %q encoded %q", body, resp.Header.Get("Content-Encoding"))
	}
}

func TestReachAndCredentials(t *testing.T) {
	canary, canaryConns := canaryServer(t)

	var otherHdr atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHdr.Store(r.Header.Clone())
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "other")
	}))
	defer other.Close()
	otherHost := strings.TrimPrefix(other.URL, "http://")
	canaryHost := strings.TrimPrefix(canary.URL, "http://")
	_, canaryPort, _ := net.SplitHostPort(canaryHost)

	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`<esi:include src="` + canary.URL + `/x">denied</esi:include>|` +
			`<esi:include src="http://localhost:` + canaryPort + `/x">denied</esi:include>|` +
			`<esi:include src="//` + canaryHost + `/x">denied</esi:include>|` +
			`<esi:include src="http://2130706433:` + canaryPort + `/x">denied</esi:include>|` +
			`<esi:include src="http://user@` + canaryHost + `/x">denied</esi:include>|` +
			`<esi:include src="` + other.URL + `/ok">no</esi:include>|` +
			`<esi:include src="/mine"/>`),
		"/mine": frag("mine", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--allow-host", otherHost)
	_, body := get(t, fc.front+"/", "Cookie", "session=secret", "Authorization", "Bearer t0k")
	if want := "denied|denied|denied|denied|denied|other|mine"; body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	if n := canaryConns.Load(); n != 0 {
		t.Errorf("a host that is not allowed got %d connections", n)
	}
	h, _ := otherHdr.Load().(http.Header)
	if h == nil {
		t.Fatal("the allowed host was not contacted")
	}
	if h.Get("Cookie") != "" || h.Get("Authorization") != "" {
		t.Errorf("credentials reached another host: %v", h)
	}
	mine := o.requests("/mine")
	if len(mine) != 1 || mine[0].Header.Get("Cookie") != "session=secret" || mine[0].Header.Get("Authorization") != "Bearer t0k" {
		t.Errorf("the upstream fragment fetch did not carry the client's credentials")
	}
	if ua := mine[0].Header.Get("User-Agent"); !strings.HasPrefix(ua, "fragcache/") {
		t.Errorf("fragment fetch User-Agent %q", ua)
	}
}

func TestPersonalisedFragmentStaysWithItsUser(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`<esi:include src="/me"/>`),
		"/me": func(w http.ResponseWriter, r *http.Request) {
			c, _ := r.Cookie("user")
			name := "nobody"
			if c != nil {
				name = c.Value
			}
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Set-Cookie", "seen=1")
			fmt.Fprintf(w, "hello %s", name)
		},
		"/vars": esiPage(`<esi:vars>$(HTTP_COOKIE{user}|'anon')/$(HTTP_COOKIE{secret}|'hidden')</esi:vars>`),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--esi-cookie", "user")
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			user := fmt.Sprintf("u%d", i%4)
			resp, body := get(t, fc.front+"/", "Cookie", "user="+user)
			if body != "hello "+user {
				t.Errorf("user %s got %q", user, body)
			}
			if resp.Header.Get("Set-Cookie") != "" {
				t.Errorf("a fragment's Set-Cookie reached the client")
			}
		}(i)
	}
	wg.Wait()
	if _, body := get(t, fc.front+"/"); body != "hello nobody" {
		t.Errorf("anonymous user got %q", body)
	}
	_, body := get(t, fc.front+"/vars", "Cookie", "user=<b>x</b>; secret=s3")
	if body != "&lt;b&gt;x&lt;/b&gt;/hidden" {
		t.Errorf("cookie variables: %q, want the listed cookie escaped and the unlisted one unset", body)
	}
}

func TestUpstreamDownAndSlow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	fc := startFragcache(t, "--upstream", "http://"+dead)
	if resp, _ := get(t, fc.front+"/"); resp.StatusCode != 502 {
		t.Errorf("upstream down: %d, want 502", resp.StatusCode)
	}

	release := make(chan struct{})
	defer close(release)
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
	})
	fc2 := startFragcache(t, "--upstream", o.URL, "--upstream-timeout", "300ms")
	start := time.Now()
	if resp, _ := get(t, fc2.front+"/"); resp.StatusCode != 504 {
		t.Errorf("upstream slow: %d, want 504", resp.StatusCode)
	}
	if took := time.Since(start); took > 300*time.Millisecond+2*time.Second {
		t.Errorf("504 took %v", took)
	}
}

func TestMetricsAfterComposition(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":          esiPage(`<esi:include src="/w/today"/>`),
		"/w/today":   frag("sunny", 0, "public, max-age=60"),
		"/static.js": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "js") },
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	get(t, fc.front+"/")
	get(t, fc.front+"/")
	get(t, fc.front+"/static.js")
	_, m := get(t, fc.admin+"/metrics")
	for _, want := range []string{
		`fragcache_page_compositions_total{outcome="complete"} 2`,
		`fragcache_fragment_lookups_total{fragment="other",result="miss"} 1`,
		`fragcache_fragment_lookups_total{fragment="other",result="hit"} 1`,
		`fragcache_fragment_fetches_total{fragment="other",result="success",trigger="foreground"} 1`,
		`fragcache_http_requests_total{code="200",method="GET"} 3`,
		`fragcache_build_info{`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if resp, _ := get(t, fc.admin+"/readyz"); resp.StatusCode != 200 {
		t.Errorf("/readyz = %d", resp.StatusCode)
	}
	if resp, _ := get(t, fc.admin+"/debug/pprof/"); resp.StatusCode != 404 {
		t.Errorf("pprof answered %d without --pprof", resp.StatusCode)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestRefreshThatTurnsPrivateStaysPrivate(t *testing.T) {
	var calls atomic.Int64
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`<esi:include src="/acct"/>`),
		"/acct": func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				w.Header().Set("Cache-Control", "public, max-age=1")
				io.WriteString(w, "public-v1")
				return
			}
			c, _ := r.Cookie("user")
			name := "anon"
			if c != nil {
				name = c.Value
			}
			w.Header().Set("Cache-Control", "private, max-age=60")
			io.WriteString(w, "secret-"+name)
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	if _, b := get(t, fc.front+"/", "Cookie", "user=a"); b != "public-v1" {
		t.Fatalf("first view %q", b)
	}
	time.Sleep(1100 * time.Millisecond)
	eventually(t, "user a sees the refreshed private copy", func() bool {
		_, b := get(t, fc.front+"/", "Cookie", "user=a")
		return b == "secret-a"
	})
	if _, b := get(t, fc.front+"/", "Cookie", "user=b"); b != "secret-b" {
		t.Errorf("user b got %q, want its own secret-b", b)
	}
	if _, b := get(t, fc.front+"/"); b != "secret-anon" {
		t.Errorf("an anonymous user got %q, want the answer to its own fetch", b)
	}
}

func TestHeadOfComposedPage(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("ETag", `"page"`)
			w.Header().Set("Content-Length", "23")
			io.WriteString(w, `<esi:include src="/f"/>`)
		},
		"/f": frag("fragment", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL)
	req, _ := http.NewRequest("HEAD", fc.front+"/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Etag") != "" || resp.Header.Get("Surrogate-Control") != "" {
		t.Errorf("HEAD of an opted-in page: %d %v", resp.StatusCode, resp.Header)
	}
	if cl := resp.Header.Get("Content-Length"); cl == "23" {
		t.Errorf("HEAD of a composed page carries the uncomposed page's Content-Length %s", cl)
	}
	if o.count("/f") != 0 {
		t.Error("HEAD looked up a fragment")
	}
	if got := o.requests("/"); len(got) != 1 || got[0].Method != "HEAD" {
		t.Error("HEAD was not forwarded as HEAD")
	}
}

// TestVaryCookieWithoutCredentialsIsCached: a fragment fetched without the
// client's credentials (a share rule, or another allowed host) is looked
// up under the shared key. Many apps send Vary: Cookie on every answer; on
// such a fetch it says nothing about the user, so the answer must still be
// stored where the next lookup finds it, not fetched again for every page.
func TestVaryCookieWithoutCredentialsIsCached(t *testing.T) {
	varyCookie := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Vary", "Accept-Encoding, Cookie")
			io.WriteString(w, body)
		}
	}
	other := newOrigin(t, map[string]http.HandlerFunc{"/ticker": varyCookie("ticker")})
	otherHost := strings.TrimPrefix(other.URL, "http://")
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":           esiPage(`[<esi:include src="/shared/nav"/>][<esi:include src="` + other.URL + `/ticker"/>]`),
		"/shared/nav": varyCookie("nav"),
	})
	cfg := t.TempDir() + "/fragcache.yaml"
	if err := os.WriteFile(cfg, []byte("fragments:\n  - name: nav\n    match: /shared/\n    share: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--allow-host", otherHost, "--config", cfg)
	for i, hdr := range [][]string{nil, {"Cookie", "user=a"}, nil, {"Cookie", "user=b"}} {
		if _, b := get(t, fc.front+"/", hdr...); b != "[nav][ticker]" {
			t.Fatalf("view %d: %q, want [nav][ticker]", i, b)
		}
	}
	if n := o.count("/shared/nav"); n != 1 {
		t.Errorf("the shared-rule fragment was fetched %d times for 4 views, want 1", n)
	}
	if n := other.count("/ticker"); n != 1 {
		t.Errorf("the other host's fragment was fetched %d times for 4 views, want 1", n)
	}
}

// TestVaryLanguageFlightStaysWithItsLanguage: the first fetch of a URL
// cannot know that it varies on Accept-Language, so concurrent first
// requests in two languages share one flight. The answer is in the first
// requester's language and must not be rendered for the other one.
func TestVaryLanguageFlightStaysWithItsLanguage(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/greeting">...</esi:include>]`),
		"/greeting": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(300 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
			w.Header().Set("Cache-Control", "public, max-age=60")
			w.Header().Set("Vary", "Accept-Language")
			if strings.HasPrefix(r.Header.Get("Accept-Language"), "fr") {
				io.WriteString(w, "bonjour")
				return
			}
			io.WriteString(w, "hello")
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	var en, fr string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, en = get(t, fc.front+"/", "Accept-Language", "en") }()
	time.Sleep(100 * time.Millisecond) // the English fetch is running
	go func() { defer wg.Done(); _, fr = get(t, fc.front+"/", "Accept-Language", "fr") }()
	wg.Wait()
	if en != "[hello]" {
		t.Errorf("en: %q, want [hello]", en)
	}
	if fr == "[hello]" {
		t.Errorf("fr: %q, the answer fetched for en", fr)
	}
	eventually(t, "fr gets its own language", func() bool {
		_, b := get(t, fc.front+"/", "Accept-Language", "fr")
		return b == "[bonjour]"
	})
}

// TestUnstorableFragmentKeepsPageOutOfCaches: a fragment that forbids
// storing it (a CSRF token sent no-store, a private answer to an
// anonymous request, a Set-Cookie) reaches only the request that fetched
// it; the page around it must not carry the upstream's max-age either, or
// a CDN would serve that one answer to everybody.
func TestUnstorableFragmentKeepsPageOutOfCaches(t *testing.T) {
	setCookie := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Set-Cookie", "csrf=1")
		io.WriteString(w, "token")
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/nostore": esiPage(`[<esi:include src="/frag/nostore"/>]`),
		"/private": esiPage(`[<esi:include src="/frag/private"/>]`),
		"/cookie":  esiPage(`[<esi:include src="/frag/cookie"/>]`),
		"/plain":   esiPage(`[<esi:include src="/frag/plain"/>]`),

		"/frag/nostore": frag("token", 0, "no-store"),
		"/frag/private": frag("token", 0, "private, max-age=60"),
		"/frag/cookie":  setCookie,
		"/frag/plain":   frag("token", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	for _, tc := range []struct{ path, wantCC string }{
		{"/nostore", "private, no-store"},
		{"/private", "private, no-store"},
		{"/cookie", "private, no-store"},
		{"/plain", "max-age=30"},
	} {
		resp, body := get(t, fc.front+tc.path)
		if body != "[token]" {
			t.Fatalf("%s: body %q, want [token]", tc.path, body)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != tc.wantCC {
			t.Errorf("%s: Cache-Control %q, want %q", tc.path, cc, tc.wantCC)
		}
		if resp.Header.Get("Set-Cookie") != "" {
			t.Errorf("%s: a fragment's Set-Cookie reached the client", tc.path)
		}
	}
}

// TestPassthroughAddsNoHeaders: DESIGN precise rule 12, nothing is added
// to a passed-through answer: no Server or Content-Type the upstream did
// not send. The one exception is Date: RFC 9110 section 6.6.1 has a proxy
// add one to an answer that has none (net/http origins always send one,
// so a raw upstream is used).
func TestPassthroughAddsNoHeaders(t *testing.T) {
	up := newHeadRecorder(t, func(string) string {
		return rawResponse("HTTP/1.1 200 OK\r\nX-Only: this\r\n", "body")
	})
	fc := startFragcache(t, "--upstream", "http://"+up.addr)
	for _, method := range []string{"GET", "HEAD"} {
		head, _ := rawRoundTrip(t, fc.front[len("http://"):], method+" /plain HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
		var names []string
		for _, line := range strings.Split(strings.TrimSpace(head), "\r\n")[1:] {
			name, _, _ := strings.Cut(line, ":")
			names = append(names, strings.ToLower(name))
		}
		sort.Strings(names)
		// Connection: close is fragcache's own hop-by-hop answer to the
		// client's Connection: close.
		if got, want := strings.Join(names, " "), "connection content-length date x-only"; got != want {
			t.Errorf("%s: headers %q, want %q (head %q)", method, got, want, head)
		}
	}
}

// --max-wait 0 is accepted (the range is [0, --max-wait]): an include's
// timeout attribute may then never make a page wait. It must not turn
// into the 1s default.
func TestMaxWaitZeroCapsIncludeTimeouts(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":          esiPage(`<div><esi:include src="/frag/slow" timeout="5s">Loading…</esi:include></div>`),
		"/frag/slow": frag("<p>report</p>", 200*time.Millisecond, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "0", "--max-wait", "0")
	start := time.Now()
	_, body := get(t, fc.front+"/")
	took := time.Since(start)
	if body != "<div>Loading…</div>" {
		t.Errorf("with --max-wait 0 an include with timeout=5s rendered %q after %v, want the placeholder at once", body, took)
	}
}
