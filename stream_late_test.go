package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

// metricNum is the value of one series in a /metrics text, or -1 when it
// is not there.
func metricNum(m, series string) float64 {
	for _, l := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func fills(m, outcome string) float64 {
	return metricNum(m, `fragcache_stream_fills_total{fragment="other",outcome="`+outcome+`"}`)
}

var anchorID = regexp.MustCompile(`<template data-fc="([0-9a-f]{16}):(\d+)"></template>`)

// TestStreamSettlesByRule3: an anchored include whose src fails inside the
// budget has its alt looked up then and streamed; one with
// onerror="continue" gets an empty fill; a fill's own pending include gets
// its own anchor, filled after its parent. The metrics count each outcome,
// the time to each fill and the stream, and the access log line has
// ttfb_ms and duration_ms.
func TestStreamSettlesByRule3(t *testing.T) {
	const slow = 300 * time.Millisecond
	fail := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(slow)
		http.Error(w, "down", http.StatusInternalServerError)
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`<!doctype html><html><body>` +
			`<div id="a"><esi:include src="/frag/broken" alt="/frag/alt">A…</esi:include></div>` +
			`<div id="c"><esi:include src="/frag/broken2" onerror="continue">C…</esi:include></div>` +
			`<div id="n"><esi:include src="/frag/outer">N…</esi:include></div>` +
			`</body></html>`),
		"/frag/broken":  fail,
		"/frag/broken2": fail,
		"/frag/alt":     frag("<b>alt</b>", 100*time.Millisecond, "max-age=60"),
		"/frag/outer":   esiFrag(`<i>outer[<esi:include src="/frag/inner">I…</esi:include>]</i>`, slow),
		"/frag/inner":   frag("<u>inner</u>", 2*slow, "max-age=60"),
	})
	var log lockedBuffer
	fc := startFragcacheLog(t, &log, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "3s", "--access-log=true")
	_, cs := readChunks(t, fc.front+"/")
	body := joinChunks(cs)
	m := anchorID.FindStringSubmatch(cs[0].data)
	if m == nil {
		t.Fatalf("first chunk has no anchor: %q", cs[0].data)
	}
	id := m[1]
	for _, want := range []string{
		`<template data-fc-fill="` + id + `:1"><b>alt</b></template>`,
		`<template data-fc-fill="` + id + `:2"></template>`,
		`<template data-fc-fill="` + id + `:3"><i>outer[<template data-fc="` + id + `:4"></template>I…<!--/fc:` + id + `:4-->]</i></template>`,
		`<template data-fc-fill="` + id + `:4"><u>inner</u></template>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if p, c := strings.Index(body, `data-fc-fill="`+id+`:3"`), strings.Index(body, `data-fc-fill="`+id+`:4"`); p < 0 || c < p {
		t.Errorf("the nested fill is not after its parent's")
	}
	if !strings.HasSuffix(body, "</body></html>") {
		t.Errorf("tail missing: %q", body)
	}
	mt := metricsText(t, fc)
	for outcome, want := range map[string]float64{"filled": 2, "alt": 1, "failed": 1, "budget": 0} {
		if got := fills(mt, outcome); got != want {
			t.Errorf("stream fills %s = %v, want %v", outcome, got, want)
		}
	}
	if n := metricNum(mt, `fragcache_stream_fill_seconds_count{fragment="other"}`); n != 4 {
		t.Errorf("fill seconds observed %v times, want 4 (alt, the empty one, outer, inner)", n)
	}
	if n := metricNum(mt, `fragcache_stream_duration_seconds_count`); n != 1 {
		t.Errorf("stream duration observed %v times, want 1", n)
	}
	// The access log line is written when the stream ends.
	var line struct {
		Msg        string  `json:"msg"`
		Path       string  `json:"path"`
		TTFB       float64 `json:"ttfb_ms"`
		Duration   float64 `json:"duration_ms"`
		Fills      int     `json:"fills"`
		Placeholds int     `json:"placeholders"`
	}
	eventually(t, "the stream's access log line", func() bool {
		for _, l := range strings.Split(log.String(), "\n") {
			if strings.Contains(l, `"msg":"request"`) && strings.Contains(l, `"fills"`) {
				return json.Unmarshal([]byte(l), &line) == nil
			}
		}
		return false
	})
	if line.TTFB <= 0 || line.TTFB > 400 || line.Duration < float64(3*slow/time.Millisecond) || line.Fills != 4 {
		t.Errorf("access log %+v: want ttfb about the 50ms wait, duration past the inner fill (~900ms), 4 fills", line)
	}
}

// TestStreamSkipsUnsafeFills: a fragment that holds a script or a
// </template keeps its placeholder (outcome skipped); the next request has
// it inline.
func TestStreamSkipsUnsafeFills(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`<html><body><p><esi:include src="/frag/s">S</esi:include></p>` +
			`<p><esi:include src="/frag/t">T</esi:include></p><p><esi:include src="/frag/ok">O</esi:include></p></body></html>`),
		"/frag/s":  frag("<script>alert(1)</script>", 200*time.Millisecond, "max-age=60"),
		"/frag/t":  frag("x</template><script>alert(2)</script>", 200*time.Millisecond, "max-age=60"),
		"/frag/ok": frag("ok", 200*time.Millisecond, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "2s")
	_, cs := readChunks(t, fc.front+"/")
	body := joinChunks(cs)
	if strings.Contains(body, "alert") || strings.Count(body, "<template data-fc-fill=") != 1 || !strings.Contains(body, ">ok</template>") {
		t.Errorf("want one fill (ok), no script content: %q", body)
	}
	if got := fills(metricsText(t, fc), "skipped"); got != 2 {
		t.Errorf("skipped = %v, want 2", got)
	}
	if _, again := get(t, fc.front+"/"); !strings.Contains(again, "<p><script>alert(1)</script></p>") {
		t.Errorf("next request %q: want the script fragment inline", again)
	}
}

// TestStreamCompressed: an encoded page streams through fragcache's own
// flushing writer: the first part decodes by itself to the head with its
// anchored placeholder, and the whole body to the page with its fill.
func TestStreamCompressed(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			// A fragment of its own per encoding: each page is cold.
			page := `<html><body><div><esi:include src="/frag/slow?` + r.URL.RawQuery + `">Loading…</esi:include></div>` +
				strings.Repeat("<p>filler</p>", 200) + `</body></html>`
			var b bytes.Buffer
			z := gzip.NewWriter(&b)
			io.WriteString(z, page)
			z.Close()
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Write(b.Bytes())
		},
		"/frag/slow": frag("<p>report</p>", 400*time.Millisecond, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "3s")
	for _, enc := range []string{"gzip", "br"} {
		resp, cs := readChunks(t, fc.front+"/?"+enc, "Accept-Encoding", enc)
		if got := resp.Header.Get("Content-Encoding"); got != enc {
			t.Fatalf("%s: Content-Encoding %q", enc, got)
		}
		if len(cs) < 2 || cs[0].at > 350*time.Millisecond {
			t.Fatalf("%s: %d parts, the first after %v: want the head at once, the fill later", enc, len(cs), cs[0].at)
		}
		head := decodePrefix(t, enc, []byte(cs[0].data))
		if !anchorID.MatchString(head) || !strings.Contains(head, "Loading…") || strings.Contains(head, "report") {
			t.Errorf("%s: the first part decodes to %q; want the head with the anchored placeholder", enc, head)
		}
		whole := decodePrefix(t, enc, []byte(joinChunks(cs)))
		if !strings.Contains(whole, "><p>report</p></template>") || !strings.HasSuffix(whole, "</body></html>") {
			t.Errorf("%s: the whole body decodes to %q", enc, whole)
		}
	}
}

// decodePrefix decodes as much of b (gzip or br) as it holds.
func decodePrefix(t *testing.T, enc string, b []byte) string {
	t.Helper()
	var r io.Reader
	switch enc {
	case "gzip":
		z, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = z
	default:
		r = brotli.NewReader(bytes.NewReader(b))
	}
	out, _ := io.ReadAll(r) // a prefix ends with an unexpected EOF
	return string(out)
}

// TestStreamShed: at most --fetch-concurrency streams are open at once; a
// page beyond them is composed whole, its pending includes counted shed.
func TestStreamShed(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":           esiPage(`<html><body><div><esi:include src="/frag/slow">L</esi:include></div></body></html>`),
		"/other":      esiPage(`<html><body><div><esi:include src="/frag/slow2">M</esi:include></div></body></html>`),
		"/frag/slow":  frag("s", time.Second, "max-age=60"),
		"/frag/slow2": frag("t", time.Second, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "3s", "--fetch-concurrency", "1")
	first := make(chan string, 1)
	go func() {
		resp, err := client.Get(fc.front + "/")
		if err != nil {
			first <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first <- string(b)
	}()
	eventually(t, "the first stream is open", func() bool {
		return metricNum(metricsText(t, fc), `fragcache_stream_duration_seconds_count`) == 0 &&
			o.count("/frag/slow") == 1
	})
	time.Sleep(100 * time.Millisecond) // its head is out
	start := time.Now()
	_, second := get(t, fc.front+"/other")
	if strings.Contains(second, "<template") || !strings.Contains(second, "<div>M</div>") || time.Since(start) > 800*time.Millisecond {
		t.Errorf("second page %q after %v: want it whole at once, placeholder, no anchors", second, time.Since(start))
	}
	if b := <-first; !strings.Contains(b, "data-fc-fill") {
		t.Errorf("first page was not streamed: %q", b)
	}
	if got := fills(metricsText(t, fc), "shed"); got != 1 {
		t.Errorf("shed = %v, want 1", got)
	}
}

// TestStreamClientGone: a client that goes away mid-stream frees the
// stream: its writer ends at the next write, the fetches finish into the
// cache, and the goroutines come back to what they were.
func TestStreamClientGone(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`<html><body>` +
			`<p><esi:include src="/frag/1">1</esi:include></p><p><esi:include src="/frag/2">2</esi:include></p>` +
			`<p><esi:include src="/frag/3">3</esi:include></p></body></html>`),
		"/frag/1": frag("one", 300*time.Millisecond, "max-age=60"),
		"/frag/2": frag("two", 600*time.Millisecond, "max-age=60"),
		"/frag/3": frag("three", 900*time.Millisecond, "max-age=60"),
		"/warm":   esiPage(`<p><esi:include src="/frag/w">w</esi:include></p>`),
		"/frag/w": frag("w", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "4s")
	get(t, fc.front+"/warm")
	get(t, fc.front+"/warm")
	client.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond)
	base := ourGoroutines()

	conn, err := net.Dial("tcp", strings.TrimPrefix(fc.front, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatalf("reading the head: %v", err)
	}
	conn.Close() // gone, long before the budget ends
	gone := time.Now()
	eventually(t, "the stream's writer ends", func() bool {
		return !bytes.Contains(allStacks(), []byte("writeStream"))
	})
	if d := time.Since(gone); d > 2*time.Second {
		t.Errorf("the writer ended %v after the client left; want about the next fill (≤ 900ms), not the 4s budget", d)
	}
	eventually(t, "goroutines back to the baseline", func() bool {
		return ourGoroutines() <= base+1 // fasthttp may keep one more idle worker
	})
	m := metricsText(t, fc)
	gone1, filled := fills(m, "client_gone"), fills(m, "filled")
	if gone1 < 1 || gone1+filled != 3 {
		t.Errorf("client_gone %v, filled %v: want every anchored include counted, at least one as client_gone", gone1, filled)
	}
	// The fetches were not wasted: the next visitor has every fragment.
	if _, b := get(t, fc.front+"/"); !strings.Contains(b, "<p>one</p><p>two</p><p>three</p>") {
		t.Errorf("next page %q: want every fragment inline", b)
	}
}

// ourGoroutines counts the goroutines of fragcache and its fasthttp
// server and clients, leaving out the test origin's connections.
func ourGoroutines() int {
	n := 0
	for _, g := range bytes.Split(allStacks(), []byte("\n\n")) {
		if bytes.Contains(g, []byte("net/http.(*conn).serve")) || bytes.Contains(g, []byte("net/http.(*persistConn)")) {
			continue
		}
		if bytes.Contains(g, []byte("fragcache/proxy.")) || bytes.Contains(g, []byte("valyala/fasthttp")) {
			n++
		}
	}
	return n
}

func allStacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}

// TestStreamShutdown: when fragcache is told to stop, an open stream ends
// at once, well-formed, with its placeholder (outcome shutdown), long
// before the budget, and the server stops.
func TestStreamShutdown(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":          esiPage(`<html><body><div><esi:include src="/frag/slow">Loading…</esi:include></div></body></html>`),
		"/frag/slow": frag("LATE", 5*time.Second, "max-age=60"),
	})
	var log lockedBuffer
	fc := startFragcacheLog(t, &log, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "8s", "--access-log=true")
	type result struct {
		body string
		at   time.Duration
		err  error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := client.Get(fc.front + "/")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), time.Since(start), err}
	}()
	eventually(t, "the stream is open", func() bool { return strings.Contains(string(allStacks()), "writeStream") })
	stopped := time.Now()
	fc.stop()
	r := <-done
	if r.err != nil {
		t.Fatalf("stream: %v", r.err)
	}
	if !strings.HasSuffix(r.body, "</div></body></html>") || !strings.Contains(r.body, "Loading…") || strings.Contains(r.body, "LATE") {
		t.Errorf("body %q: want the placeholder kept and a well-formed tail", r.body)
	}
	if d := time.Since(stopped); d > 2*time.Second {
		t.Errorf("stop took %v with a stream open; want at once, not the 8s budget", d)
	}
	if !strings.Contains(log.String(), `"fills":0`) {
		t.Errorf("no access log line for the stream:\n%s", log.String())
	}
}

// TestStreamOnlyGetOverHTTP11: HEAD and HTTP/1.0 requests of a page that
// would stream get it composed whole (rule 29).
func TestStreamOnlyGetOverHTTP11(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":       esiPage(`<html><body><div><esi:include src="/frag/s">L</esi:include></div></body></html>`),
		"/frag/s": frag("s", 2*time.Second, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "3s")
	req, _ := http.NewRequest("HEAD", fc.front+"/", nil)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Accel-Buffering") != "" || time.Since(start) > time.Second {
		t.Errorf("HEAD answered as a stream (%v, after %v)", resp.Header, time.Since(start))
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(fc.front, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	raw, _ := io.ReadAll(conn)
	if !bytes.Contains(raw, []byte("<div>L</div>")) || bytes.Contains(raw, []byte("<template")) || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("HTTP/1.0 answer %q: want the page whole, at once", raw)
	}
}
