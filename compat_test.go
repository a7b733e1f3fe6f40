package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

var fixedTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestPostAnswerIsComposed: any method's opted-in answer is composed (a
// POST's thank-you page has includes too); its fragments are GETs that
// never carry the page's body, and no ESI tag reaches the client (rule 8).
func TestPostAnswerIsComposed(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/order": esiPage(`thanks [<esi:include src="/f">wait</esi:include>]`),
		"/f": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, r.Method+" body="+string(b))
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		req, _ := http.NewRequest(m, fc.front+"/order", strings.NewReader("card=4111"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "thanks [GET body=]" {
			t.Errorf("%s: %q, want the composed page with a GET fragment", m, b)
		}
	}
}

// TestRangeGetsWholeComposedPage: a Range request to an opted-in page gets
// the whole composed page with 200, never a slice of the raw template.
func TestRangeGetsWholeComposedPage(t *testing.T) {
	tpl := `0123456789 [<esi:include src="/f">wait</esi:include>] tail`
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			http.ServeContent(w, r, "p.html", fixedTime, strings.NewReader(tpl))
		},
		"/f": frag("F", 0, "max-age=60"),
		"/stubborn": func(w http.ResponseWriter, r *http.Request) {
			// Answers 206 whatever is asked.
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("Content-Range", "bytes 0-3/10")
			w.WriteHeader(206)
			io.WriteString(w, "0123")
		},
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	resp, b := get(t, fc.front+"/", "Range", "bytes=0-20")
	if resp.StatusCode != 200 || b != "0123456789 [F] tail" {
		t.Errorf("Range request: %d %q, want 200 and the whole composed page", resp.StatusCode, b)
	}
	if strings.Contains(b, "esi:") {
		t.Errorf("an ESI tag reached the client: %q", b)
	}
	resp, b = get(t, fc.front+"/stubborn", "Range", "bytes=0-3")
	if resp.StatusCode != 206 || b != "0123" {
		t.Errorf("an upstream that answers 206 anyway: %d %q, want its 206 passed through", resp.StatusCode, b)
	}
}

// TestComposedEncodingVaries: a composed page re-encoded for the client's
// Accept-Encoding says Vary: Accept-Encoding, so a CDN in front never
// hands gzip to a client that cannot decode it (rule 7).
func TestComposedEncodingVaries(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Cache-Control", "public, max-age=60")
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			io.WriteString(zw, `[<esi:include src="/f">wait</esi:include>]`)
			zw.Close()
			w.Write(buf.Bytes())
		},
		"/f": frag("F", 0, "public, max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	for _, ae := range []string{"gzip", "identity", ""} {
		resp, _ := get(t, fc.front+"/", "Accept-Encoding", ae)
		if v := resp.Header.Get("Vary"); !strings.Contains(v, "Accept-Encoding") {
			t.Errorf("Accept-Encoding %q: Vary %q lacks Accept-Encoding (Content-Encoding %q)", ae, v, resp.Header.Get("Content-Encoding"))
		}
	}
}

// TestNoDirectivePageUntouched: an opted-in page (or, with --esi-trigger
// html, any HTML page) with no ESI directive at all passes through with
// its validators, length and encoding (rule 7).
func TestNoDirectivePageUntouched(t *testing.T) {
	const body = "<html><body>plain</body></html>"
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
			w.Header().Set("Cache-Control", "public, max-age=600")
			io.WriteString(w, body)
		},
	})
	for _, trigger := range []string{"surrogate", "html"} {
		fc := startFragcache(t, "--upstream", o.URL, "--esi-trigger", trigger)
		resp, b := get(t, fc.front+"/")
		if b != body {
			t.Errorf("%s: body %q", trigger, b)
		}
		for k, want := range map[string]string{"Etag": `"v1"`, "Last-Modified": "Mon, 02 Jan 2006 15:04:05 GMT",
			"Cache-Control": "public, max-age=600", "Content-Length": "31", "Surrogate-Control": ""} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", trigger, k, got, want)
			}
		}
	}
}

// TestAccessLogHasFragmentCounts: the access log line of a composed page
// carries its fragment counts, as README promises.
func TestAccessLogHasFragmentCounts(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":  esiPage(`[<esi:include src="/f">wait</esi:include><esi:include src="/f"/>]`),
		"/f": frag("F", 0, "max-age=60"),
	})
	var log lockedBuffer
	fc := startFragcacheLog(t, &log, "--upstream", o.URL, "--wait", "2s", "--access-log=true")
	get(t, fc.front+"/")
	get(t, fc.front+"/")
	var last map[string]any
	for _, l := range strings.Split(log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" {
			last = m
		}
	}
	if last == nil {
		t.Fatalf("no access log line in:\n%s", log.String())
	}
	if last["includes"] != float64(2) || last["hits"] != float64(2) {
		t.Errorf("access log line %v lacks includes=2 hits=2", last)
	}
}

// TestThousandIncludesAllFetched: a page with 1 000 includes and
// --max-includes 2000 is complete once its fetches end, whatever
// --fetch-concurrency: loads beyond it wait in the fetch queue instead of
// being shed (rule 9, rule 22).
func TestThousandIncludesAllFetched(t *testing.T) {
	var page strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&page, `<esi:include src="/f/%d">.</esi:include>`, i)
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(page.String()),
		"/f/":   frag("x", 20*time.Millisecond, "max-age=600"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "0s", "--max-includes", "2000")
	if _, b := get(t, fc.front+"/page"); strings.Count(b, "x") == 1000 {
		t.Fatal("the first view was complete: the test needs slow fragments")
	}
	if m := metricsText(t, fc); !strings.Contains(m, "fragcache_fetch_queue_length") {
		t.Error("fragcache_fetch_queue_length is not exported")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := 0
		o.mu.Lock()
		for p, c := range o.counts {
			if strings.HasPrefix(p, "/f/") {
				n += c
			}
		}
		o.mu.Unlock()
		if n == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 1000 fragments fetched 20 s after the one view", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The origin counts a fetch when it starts; the last ones are stored
	// a moment later.
	eventually(t, "a later view has all 1000 fragments", func() bool {
		_, b := get(t, fc.front+"/page")
		return strings.Count(b, "x") == 1000
	})
}

// TestPagesWrittenForVarnish: an include without its end tag is an empty
// element, unquoted attribute values work, and CDATA inside esi:remove is
// opaque, as Varnish composes them (rule 6), through the whole proxy.
func TestPagesWrittenForVarnish(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/unclosed": esiPage(`A<esi:include src="/x">B<esi:remove>s</esi:remove>C<esi:include src="/y"/>D`),
		"/unquoted": esiPage(`[<esi:include src=/y />|<esi:include src=/nope alt=/x />]`),
		"/cdata":    esiPage(`<esi:remove>a<![CDATA[</esi:remove>]]>b</esi:remove>c`),
		"/x":        frag("X", 0, "max-age=60"),
		"/y":        frag("Y", 0, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	for path, want := range map[string]string{"/unclosed": "AXBCYD", "/unquoted": "[Y|X]", "/cdata": "c"} {
		if _, b := get(t, fc.front+path); b != want {
			t.Errorf("%s: %q, want %q", path, b, want)
		}
	}
}

// TestBackoffLogLines: a failing fragment writes one line per backoff
// step with its rule name, its src path without the query, the status and
// the next retry; a flood of failures writes at most 10 lines a second
// per name (rule 36).
func TestBackoffLogLines(t *testing.T) {
	var page strings.Builder
	for i := range 50 {
		fmt.Fprintf(&page, `<esi:include src="/bad/%d?token=s3cret">.</esi:include>`, i)
	}
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(page.String()),
		"/bad/": func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) },
	})
	file := t.TempDir() + "/fragcache.yaml"
	if err := os.WriteFile(file, []byte("fragments:\n  - name: orders\n    match: /bad/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	fc := startFragcacheLog(t, &log, "--upstream", o.URL, "--wait", "1s", "--config", file)
	get(t, fc.front+"/page")
	var lines []map[string]any
	for _, l := range strings.Split(log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "fragment fetch failed, backing off" {
			lines = append(lines, m)
		}
	}
	if len(lines) == 0 || len(lines) > 10 {
		t.Fatalf("%d backoff lines for 50 failures in one second, want 1 to 10:\n%s", len(lines), log.String())
	}
	l := lines[0]
	if l["fragment"] != "orders" || !strings.HasPrefix(fmt.Sprint(l["src"]), "/bad/") || l["status"] != float64(503) || l["retry_at"] == nil {
		t.Errorf("backoff line %v lacks fragment=orders, src, status=503, retry_at", l)
	}
	if strings.Contains(log.String(), "s3cret") {
		t.Error("a backoff line holds the src's query")
	}
}

// TestDemoNamesItsFragments: the demo's boxes appear by name in /metrics,
// its page says why a logged-in visitor sees placeholders again, a failed
// fragment's placeholder looks different from a pending one, and each box
// is marked with its include's outcome.
func TestDemoNamesItsFragments(t *testing.T) {
	fc := startFragcache(t, "--demo", "--wait", "50ms")
	_, b := get(t, fc.front+"/")
	if !strings.Contains(b, "cached for them alone") {
		t.Error("the demo page does not say why a logged-in visitor sees placeholders")
	}
	if !strings.Contains(b, `class="wait"`) || !strings.Contains(demoPage, `class="failed"`) {
		t.Error("pending and failed placeholders are not told apart")
	}
	// Rule 34: each box says what became of its include, without a token.
	// The demo streams (rule 34): the slow boxes are sent with anchors
	// and filled in by the same response.
	for _, want := range []string{`<div class="fc-box" data-fc-outcome="streaming"><template data-fc="`,
		`<p class="wait">Loading orders`, `<p class="wait">The report`, `<pre class="report">Quarterly report`} {
		if !strings.Contains(b, want) {
			t.Errorf("the demo page lacks %q", want)
		}
	}
	if n := strings.Count(b, `<template data-fc-fill="`); n != 2 {
		t.Errorf("%d fills, want the orders' and the report's", n)
	}
	if n := strings.Count(b, `<div class="fc-box" data-fc-outcome=`); n != 6 {
		t.Errorf("%d boxes marked, want 6", n)
	}
	m := metricsText(t, fc)
	for _, name := range []string{"orders", "report", "inventory", "greeting"} {
		if !strings.Contains(m, `fragment="`+name+`"`) {
			t.Errorf("/metrics has no series for the demo fragment %q", name)
		}
	}
}
