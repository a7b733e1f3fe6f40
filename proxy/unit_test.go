package proxy

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/metrics"
)

func TestResolveReach(t *testing.T) {
	r, err := newReach("http://app:8080", []string{"cdn.example", "api.example:8443", "[::1]:9000"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		src     string
		wantURL string // "" = not allowed
		up      bool
	}{
		{"/frag/1?x=1", "http://app:8080/frag/1?x=1", true},
		{"frag/2", "http://app:8080/dir/frag/2", true},
		{"../up", "http://app:8080/up", true},
		{"http://app:8080/abs", "http://app:8080/abs", true},
		{"http://APP:8080/case", "http://app:8080/case", true},
		{"http://app/other-port", "", false},
		{"https://app:8080/other-scheme", "", false},
		{"http://cdn.example/x", "http://cdn.example:80/x", false},
		{"https://cdn.example:444/x", "https://cdn.example:444/x", false},
		{"//cdn.example/scheme-relative", "http://cdn.example:80/scheme-relative", false},
		{"http://api.example:8443/ok", "http://api.example:8443/ok", false},
		{"http://api.example:8444/port", "", false},
		{"http://[::1]:9000/v6", "http://[::1]:9000/v6", false},
		{"http://[::1]:9001/v6", "", false},
		{"http://127.0.0.2:8080/", "", false},
		{"http://169.254.169.254/latest/meta-data", "", false},
		{"http://2130706433:8080/", "", false},
		{"http://0x7f.0.0.1:8080/", "", false},
		{"http://user@app:8080/", "", false},
		{"http://app:8080@evil/", "", false},
		{"//evil/x", "", false},
		{"ftp://app:8080/x", "", false},
		{"javascript:alert(1)", "", false},
		{"http://app:08080/", "", false},
		{"/a\r\nHost: evil", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.src, func(t *testing.T) {
			got, err := r.resolve("/dir/page?q=1", tc.src)
			if tc.wantURL == "" {
				if err == nil {
					t.Errorf("resolve(%q) = %q, want not allowed", tc.src, got.url)
				}
				return
			}
			if err != nil || got.url != tc.wantURL || got.upstream != tc.up {
				t.Errorf("resolve(%q) = %q upstream=%v, %v; want %q upstream=%v", tc.src, got.url, got.upstream, err, tc.wantURL, tc.up)
			}
		})
	}
}

func TestSmuggling(t *testing.T) {
	tests := []struct {
		name, raw string
		bad       bool
	}{
		{"clean", "Host: a\r\nContent-Length: 3\r\n\r\n", false},
		{"chunked", "Host: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"cl and te", "Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"duplicate cl", "Host: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", true},
		{"conflicting cl", "Host: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", true},
		{"obs-fold", "Host: a\r\nX-A: b\r\n c\r\n\r\n", true},
		{"bare lf", "Host: a\nX-A: b\r\n\r\n", true},
		{"te gzip", "Host: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", true},
		{"space in name", "Host: a\r\nContent-Length : 3\r\n\r\n", true},
		{"32 underscore names", "Host: a\r\n" + underscoreNames(32) + "\r\n", false},
		// Each is dropped at the cost of a pass over the header.
		{"33 underscore names", "Host: a\r\n" + underscoreNames(33) + "\r\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := smuggling([]byte(tc.raw)); (got != "") != tc.bad {
				t.Errorf("smuggling(%q) = %q, want bad=%v", tc.raw, got, tc.bad)
			}
		})
	}
}

func underscoreNames(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X_%d: v\r\n", i)
	}
	return b.String()
}

func TestBreaker(t *testing.T) {
	b := &breaker{}
	now := time.Unix(1000, 0)
	for i := 0; i < breakerThreshold-1; i++ {
		if !allowed(b, now) {
			t.Fatal("closed breaker refused")
		}
		b.record(now, true)
	}
	b.record(now, false) // a success resets the count
	for i := 0; i < breakerThreshold; i++ {
		if !allowed(b, now) {
			t.Fatalf("refused after %d failures", i)
		}
		b.record(now, true)
	}
	if allowed(b, now) || allowed(b, now.Add(breakerMinOpen-time.Millisecond)) {
		t.Fatal("open breaker let a fetch through")
	}
	now = now.Add(breakerMinOpen)
	if !allowed(b, now) {
		t.Fatal("no half-open probe after the open period")
	}
	if allowed(b, now) {
		t.Fatal("a second probe while the first runs")
	}
	if _, wait := b.allow(now); wait != breakerProbeWait {
		t.Errorf("a fetch turned away during the probe asks again in %v, want %v", wait, breakerProbeWait)
	}
	b.record(now, true) // the probe failed: open for twice as long
	if _, wait := b.allow(now); wait != 2*breakerMinOpen {
		t.Errorf("a fetch turned away by the reopened breaker asks again in %v, want %v", wait, 2*breakerMinOpen)
	}
	if allowed(b, now.Add(2*breakerMinOpen-time.Millisecond)) {
		t.Fatal("reopened breaker let a fetch through early")
	}
	now = now.Add(2 * breakerMinOpen)
	if !allowed(b, now) {
		t.Fatal("no probe after the doubled period")
	}
	b.record(now, false)
	if b.state != metrics.BreakerClosed || !allowed(b, now) || !allowed(b, now) {
		t.Fatal("a successful probe did not close the breaker")
	}
}

func TestDecodeBodyCaps(t *testing.T) {
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for i := 0; i < 64; i++ { // 64 MiB of zeros in about 64 KiB
		zw.Write(zeros)
	}
	zw.Close()
	if _, err := decodeBody(nil, bomb.Bytes(), []byte("gzip"), 1<<20); !errors.Is(err, errTooLarge) {
		t.Errorf("gzip bomb: err %v, want errTooLarge", err)
	}
	small := fasthttp.AppendGzipBytes(nil, []byte("hello"))
	if got, err := decodeBody(nil, small, []byte("GZIP"), 5); err != nil || string(got) != "hello" {
		t.Errorf("gzip at the cap: %q %v", got, err)
	}
	br := fasthttp.AppendBrotliBytes(nil, []byte("hello br"))
	if got, err := decodeBody(nil, br, []byte("br"), 100); err != nil || string(got) != "hello br" {
		t.Errorf("br: %q %v", got, err)
	}
	df := fasthttp.AppendDeflateBytes(nil, []byte("hello deflate"))
	if got, err := decodeBody(nil, df, []byte("deflate"), 100); err != nil || string(got) != "hello deflate" {
		t.Errorf("deflate: %q %v", got, err)
	}
	if _, err := decodeBody(nil, []byte("x"), []byte("zstd"), 100); !errors.Is(err, errUnknownEncoding) {
		t.Errorf("zstd: %v, want errUnknownEncoding", err)
	}
	if _, err := decodeBody(nil, []byte("not gzip"), []byte("gzip"), 100); err == nil {
		t.Error("corrupt gzip decoded")
	}
}

func TestCacheDirectives(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.Set("Cache-Control", `public, max-age=30, s-maxage="60", no-cache="Set-Cookie"`)
	h.Set("Surrogate-Control", `max-age=10+20, content="ESI/1.0"`)
	d := parseCacheDirectives(&h)
	if !d.public || d.maxAge != 30*time.Second || d.sMaxAge != 60*time.Second || d.surrogateMaxAge != 10*time.Second || !d.esi || !d.noCache {
		t.Errorf("parsed %+v", d)
	}
	h.Reset()
	h.Set("Cache-Control", "private, max-age=-1")
	h.Add("Vary", "Accept-Encoding, accept-language")
	h.Add("Vary", "Cookie")
	d = parseCacheDirectives(&h)
	if !d.private || d.maxAge != -1 || d.public {
		t.Errorf("parsed %+v", d)
	}
	if v := parseVary(&h); !v.lang || !v.user || v.star {
		t.Errorf("vary %+v", v)
	}
}

func TestLowerMaxAge(t *testing.T) {
	tests := []struct {
		cc   string
		left time.Duration
		want string
	}{
		{"max-age=300", 60 * time.Second, "max-age=60"},
		{"public, max-age=30, s-maxage=600", 60 * time.Second, "public, max-age=30, s-maxage=60"},
		{"max-age=300, must-revalidate", -time.Second, "max-age=0, must-revalidate"},
		{"no-cache", time.Minute, "no-cache"},
		// A quoted list stays one directive.
		{`private="set-cookie, x-user", max-age=90`, time.Minute, `private="set-cookie, x-user", max-age=60`},
		{`max-age="120", community="x"`, time.Minute, `max-age=60, community="x"`},
	}
	for _, tc := range tests {
		if got := string(lowerMaxAge(nil, []byte(tc.cc), tc.left)); got != tc.want {
			t.Errorf("lowerMaxAge(%q, %v) = %q, want %q", tc.cc, tc.left, got, tc.want)
		}
	}
}

func TestEncodingChoice(t *testing.T) {
	tests := []struct{ ae, pick, filtered string }{
		{"gzip, deflate, br, zstd", "br", "gzip, deflate, br"},
		{"gzip;q=0.5, br;q=0", "gzip", "gzip"},
		{"identity", "", ""},
		{"*", "", ""},
		{"GZIP", "gzip", "GZIP"},
	}
	for _, tc := range tests {
		if got := pickEncoding([]byte(tc.ae)); got != tc.pick {
			t.Errorf("pickEncoding(%q) = %q, want %q", tc.ae, got, tc.pick)
		}
		if got := string(decodableEncodings(nil, []byte(tc.ae))); got != tc.filtered {
			t.Errorf("decodableEncodings(%q) = %q, want %q", tc.ae, got, tc.filtered)
		}
	}
}

func TestFragmentKeysDoNotCollide(t *testing.T) {
	s := newScoper([]byte("k"), nil)
	a := s.user([]byte("Bearer x"), []byte("c=1"))
	b := s.user([]byte("Bearer x"), []byte("c=2"))
	c := s.user([]byte("Bearer xc=1"), nil)
	if a == b || a == c || !strings.HasPrefix(a, scopeUser) {
		t.Errorf("scopes %q %q %q must differ", a, b, c)
	}
	// The same bytes split differently between the two headers, across
	// a NUL, are different users.
	if s.user([]byte("x\x00"), []byte("y")) == s.user([]byte("x"), []byte("\x00y")) {
		t.Error("moving a NUL between Authorization and Cookie gave the same scope")
	}
	if other := newScoper([]byte("k2"), nil).user([]byte("Bearer x"), []byte("c=1")); other == a {
		t.Error("a different secret gave the same scope")
	}
	if fragmentKey(scopeShared, "http://a/x", "") == fragmentKey(scopeAnon, "http://a/x", "") {
		t.Error("shared and anonymous keys collide")
	}
}

func TestRetryStaleConn(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		body     string
		attempts int
		err      error
		want     bool
	}{
		{"GET, closed before the answer", "GET", "", 1, io.EOF, true},
		{"HEAD, closed before the answer", "HEAD", "", 1, fasthttp.ErrConnectionClosed, true},
		{"GET, reset while writing", "GET", "", 1, syscall.ECONNRESET, true},
		{"GET, broken pipe", "GET", "", 1, syscall.EPIPE, true},
		{"GET, second failure", "GET", "", 2, io.EOF, false},
		{"GET, timeout", "GET", "", 1, fasthttp.ErrTimeout, false},
		{"GET, cut mid-body", "GET", "", 1, io.ErrUnexpectedEOF, false},
		{"GET, refused", "GET", "", 1, syscall.ECONNREFUSED, false},
		{"POST", "POST", "", 1, io.EOF, false},
		{"PUT", "PUT", "", 1, io.EOF, false},
		{"GET with a body", "GET", "x", 1, io.EOF, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var req fasthttp.Request
			req.Header.SetMethod(tc.method)
			if tc.body != "" {
				req.SetBodyString(tc.body)
			}
			if _, got := retryStaleConn(&req, tc.attempts, tc.err); got != tc.want {
				t.Errorf("retryStaleConn(%s, attempt %d, %v) = %v, want %v", tc.method, tc.attempts, tc.err, got, tc.want)
			}
		})
	}
}

func allowed(b *breaker, now time.Time) bool {
	ok, _ := b.allow(now)
	return ok
}
