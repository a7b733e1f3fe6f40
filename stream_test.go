package main

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"fragcache/proxy"
)

// chunk is one read of a streamed body and when it arrived.
type chunk struct {
	at   time.Duration
	data string
}

// readChunks GETs url and reads the body as it arrives, each read with the
// time since the request was sent.
func readChunks(t *testing.T, url string, hdr ...string) (*http.Response, []chunk) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var out []chunk
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			out = append(out, chunk{time.Since(start), string(buf[:n])})
		}
		if err == io.EOF {
			return resp, out
		}
		if err != nil {
			t.Fatalf("GET %s: reading: %v", url, err)
		}
	}
}

func joinChunks(cs []chunk) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.data)
	}
	return b.String()
}

// firstWith returns the first chunk holding s, or -1.
func firstWith(cs []chunk, s string) int {
	for i, c := range cs {
		if strings.Contains(c.data, s) {
			return i
		}
	}
	return -1
}

const streamPage = `<!doctype html><html><head><title>t</title></head><body>` +
	`<div id="slow"><esi:include src="/frag/slow">Loading…</esi:include></div>` +
	`<p><esi:include src="/frag/fast"/></p>` +
	`<a href="/x?<esi:include src="/frag/attr"/>">link</a>` +
	`</body></html>`

// TestStreamLateFill: with --stream-budget the first visitor gets the page
// at once with the slow fragment's placeholder between anchors, then the
// fill when the fragment's fetch ends, then the tail; the next request
// has the fragment inline and is not streamed.
func TestStreamLateFill(t *testing.T) {
	const slow = 400 * time.Millisecond
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":          esiPage(streamPage),
		"/frag/slow": frag("<p>report</p>", slow, "max-age=60"),
		"/frag/fast": frag("fast", 0, "max-age=60"),
		"/frag/attr": frag("q", slow, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "100ms", "--stream-budget", "3s")
	resp, cs := readChunks(t, fc.front+"/")
	if len(cs) < 2 {
		t.Fatalf("body came in %d reads, want the head and a fill apart: %q", len(cs), joinChunks(cs))
	}
	head := cs[0]
	if head.at > 100*time.Millisecond+300*time.Millisecond {
		t.Errorf("first chunk after %v; want about --wait (100ms)", head.at)
	}
	m := regexp.MustCompile(`<template data-fc="([0-9a-f]{16}):1"></template>Loading…<!--/fc:[0-9a-f]{16}:1-->`).FindStringSubmatch(head.data)
	if m == nil || !strings.Contains(head.data, "<p>fast</p>") || strings.Contains(head.data, "</body>") {
		t.Fatalf("first chunk %q: want the page up to </body>, the slow placeholder anchored", head.data)
	}
	if strings.Contains(head.data, `data-fc="`+m[1]+`:3"`) || !strings.Contains(head.data, `<a href="/x?">`) {
		t.Errorf("the include in an attribute was anchored: %q", head.data)
	}
	fill := firstWith(cs, `<template data-fc-fill="`+m[1]+`:1"><p>report</p></template>`)
	if fill < 0 {
		t.Fatalf("no fill for the slow fragment in %q", joinChunks(cs))
	}
	if cs[fill].at < slow {
		t.Errorf("fill after %v, before the fragment's %v delay", cs[fill].at, slow)
	}
	last := cs[len(cs)-1]
	if !strings.HasSuffix(last.data, "</body></html>") || last.at < cs[fill].at {
		t.Errorf("the tail %q at %v, want </body></html> after the fill (%v)", last.data, last.at, cs[fill].at)
	}
	body := joinChunks(cs)
	if strings.Count(body, "<script>") != 2 || !strings.Contains(body, "__fragcache(document.currentScript)") {
		t.Errorf("want the runtime and one fill script: %q", body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "private, no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	if resp.Header.Get("X-Accel-Buffering") != "no" || len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("headers %v, transfer encoding %v: want X-Accel-Buffering: no, chunked", resp.Header, resp.TransferEncoding)
	}
	_, again := get(t, fc.front+"/")
	if strings.Contains(again, "<template") || !strings.Contains(again, `<div id="slow"><p>report</p></div>`) {
		t.Errorf("second body %q: want the fragment inline, nothing streamed", again)
	}
}

// TestStreamBudgetMissed: a fragment slower than the budget keeps its
// placeholder, and the response ends at the budget, well-formed.
func TestStreamBudgetMissed(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":          esiPage(streamPage),
		"/frag/slow": frag("<p>report</p>", 3*time.Second, "max-age=60"),
		"/frag/fast": frag("fast", 0, "max-age=60"),
		"/frag/attr": frag("q", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "400ms")
	_, cs := readChunks(t, fc.front+"/")
	last := cs[len(cs)-1]
	if last.at < 400*time.Millisecond || last.at > 400*time.Millisecond+500*time.Millisecond {
		t.Errorf("response ended after %v, want at the 400ms budget", last.at)
	}
	body := joinChunks(cs)
	if strings.Contains(body, "data-fc-fill") || !strings.Contains(body, "Loading…") || !strings.HasSuffix(body, "</body></html>") {
		t.Errorf("body %q: want the placeholder, no fill, the tail", body)
	}
}

// TestStreamCSP: a policy that blocks inline scripts stops streaming; a
// nonce policy streams with the page's nonce on both scripts.
func TestStreamCSP(t *testing.T) {
	withCSP := func(csp string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", csp)
			esiPage(streamPage)(w, r)
		}
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/strict":    withCSP("script-src 'self'"),
		"/nonce":     withCSP("default-src 'self'; script-src 'nonce-Zm9vYmFy' 'strict-dynamic'"),
		"/frag/slow": frag("<p>report</p>", 300*time.Millisecond, "no-store"),
		"/frag/fast": frag("fast", 0, "max-age=60"),
		"/frag/attr": frag("q", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "2s")
	_, strict := get(t, fc.front+"/strict")
	if strings.Contains(strict, "<template") || strings.Contains(strict, "<script") {
		t.Errorf("streamed under script-src 'self': %q", strict)
	}
	_, cs := readChunks(t, fc.front+"/nonce")
	body := joinChunks(cs)
	if n := strings.Count(body, `<script nonce="Zm9vYmFy">`); n != 2 || strings.Contains(body, "<script>") {
		t.Errorf("want both scripts with the page's nonce: %q", body)
	}
}

// TestReadmePublishesStreamScriptHashes: README gives the SHA-256 of both
// inline scripts as they are (precise rule 31).
func TestReadmePublishesStreamScriptHashes(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(readme)), " ")
	rt, fill := proxy.StreamScriptHashes()
	for _, h := range []string{rt, fill} {
		if !strings.Contains(text, "`"+h+"`") {
			t.Errorf("README does not publish %s", h)
		}
	}
}
