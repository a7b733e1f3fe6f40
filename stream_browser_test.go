package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The streaming late fill (DESIGN.md, "Streaming late fill" and precise
// rules 29 to 31) in a real browser: the page arrives with anchored
// placeholders, the runtime swaps each fill in as it arrives, and what
// is left is the page as if the fragment had been composed inline.

// streamFragDelay is how long the slow fragments of these tests take.
const streamFragDelay = 300 * time.Millisecond

// swapBound is how long a test waits for the browser to show a fill: the
// fill is sent after about streamFragDelay.
const swapBound = 5 * time.Second

// streamInclude is a slow include of a test page: its tag as it stands in
// the page, the src and body of its fragment, and its placeholder.
type streamInclude struct {
	tag, src, body, placeholder string
}

// renderIncludes returns page with each include replaced by its fragment
// (inline) or by its placeholder.
func renderIncludes(page string, incs []streamInclude, inline bool) string {
	var pairs []string
	for _, in := range incs {
		if inline {
			pairs = append(pairs, in.tag, in.body)
		} else {
			pairs = append(pairs, in.tag, in.placeholder)
		}
	}
	return strings.NewReplacer(pairs...).Replace(page)
}

// startStreamed starts an origin serving page at "/" (with the response
// headers hdr) and each include's fragment after streamFragDelay with
// cacheControl, and a fragcache that streams them (--wait 50ms, a 3 s
// budget). The origin also answers "/plain" with a page without
// includes, and the browser's favicon request.
func startStreamed(t *testing.T, page string, incs []streamInclude, cacheControl string, hdr ...string) *instance {
	t.Helper()
	return startStreamedWith(t, page, incs, nil, cacheControl, hdr...)
}

// startStreamedWith is startStreamed with more routes on the origin.
func startStreamedWith(t *testing.T, page string, incs []streamInclude, more map[string]http.HandlerFunc, cacheControl string, hdr ...string) *instance {
	t.Helper()
	routes := map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			esiPage(page)(w, r)
		},
		"/plain": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<!doctype html><html><head><title>plain</title></head><body><main id="m">plain</main></body></html>`)
		},
		"/favicon.ico": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
	}
	for _, in := range incs {
		routes[in.src] = frag(in.body, streamFragDelay, cacheControl)
	}
	for p, h := range more {
		routes[p] = h
	}
	o := newOrigin(t, routes)
	return startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stream-budget", "3s")
}

// browserReports collects what the browser reports about the pages of a
// tab: uncaught exceptions and log entries of level warning or error (a
// script blocked by a policy among them).
type browserReports struct {
	mu   sync.Mutex
	list []string // guarded by mu
}

func watchReports(t *testing.T, ctx context.Context) *browserReports {
	t.Helper()
	r := &browserReports{}
	err := chromedp.Listen(ctx, func(ev any) {
		var s string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			s = "exception: " + d.Text
			if d.Exception != nil {
				s += " " + d.Exception.Description
			}
		case *cdplog.EventEntryAdded:
			if e := ev.Entry; e.Level == cdplog.EntryLevelError || e.Level == cdplog.EntryLevelWarning {
				s = fmt.Sprintf("log %s %s: %s", e.Source, e.Level, e.Text)
			}
		}
		if s != "" {
			r.mu.Lock()
			r.list = append(r.list, s)
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *browserReports) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.list)
}

// open starts loading url in the tab without waiting for the load event
// (which a streamed page fires only when its stream ends) and returns
// when it started.
func open(t *testing.T, ctx context.Context, url string) time.Time {
	t.Helper()
	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := chromedp.Call(tctx, page.Navigate, page.NavigateParams{URL: url})
	if err == nil && res.ErrorText != "" {
		err = fmt.Errorf("%s", res.ErrorText)
	}
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return start
}

// waitDOM polls the JavaScript condition cond in the tab until it is true,
// for at most swapBound after start, and returns the time since start.
// On timeout the test fails with the document as the browser has it.
func waitDOM(t *testing.T, ctx context.Context, what, cond string, start time.Time) time.Duration {
	t.Helper()
	for {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](cond))
		cancel()
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > swapBound {
			doc, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
			t.Fatalf("%s: not within %v (last error: %v); the document: %s", what, swapBound, err, doc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamEndedJS is true once the page's stream has ended (the parser saw
// the end of the response).
const streamEndedJS = `document.readyState === 'complete'`

// leftovers counts what a stream may leave in the document: template
// elements, script elements (not the page's own), comment nodes, and
// which of the templates are fills.
type leftovers struct {
	Templates int `json:"templates"`
	Scripts   int `json:"scripts"`
	Comments  int `json:"comments"`
	Fills     int `json:"fills"`
}

// leftoversJS counts the stream's markup left in the document, the page's
// own scripts (marked data-own) excluded.
const leftoversJS = `(() => {
	const w = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_COMMENT);
	let comments = 0;
	while (w.nextNode()) comments++;
	return {
		templates: document.querySelectorAll('template').length,
		scripts: document.querySelectorAll('script:not([data-own])').length,
		comments: comments,
		fills: document.querySelectorAll('template[data-fc-fill]').length,
	};
})()`

// strippedJS is #m's markup without template and script elements and
// comments: what a reader sees of its structure.
const strippedJS = `(() => {
	const m = document.getElementById('m').cloneNode(true);
	m.querySelectorAll('template,script').forEach(e => e.remove());
	const w = document.createTreeWalker(m, NodeFilter.SHOW_COMMENT);
	const cs = [];
	while (w.nextNode()) cs.push(w.currentNode);
	cs.forEach(c => c.remove());
	return m.innerHTML;
})()`

// globalsJS lists the window's own property names.
const globalsJS = `Object.getOwnPropertyNames(window)`

// layoutMain is the content of a page's <main id="m"> with slow includes
// in a <div>, in a table cell, as table rows, and in lists (an <li>
// placeholder, and none).
const layoutMain = `<h1>Top</h1>` +
	`<div id="d">before <esi:include src="/frag/div">Loading div…</esi:include> after</div>` +
	`<table id="t"><tbody><tr><td>a</td><td id="c"><esi:include src="/frag/cell">Loading cell…</esi:include></td><td>z</td></tr>` +
	`<esi:include src="/frag/row"><tr><td>Loading row…</td></tr></esi:include>` +
	`<tr><td>last row</td></tr></tbody></table>` +
	`<ul id="u1"><li>first</li><esi:include src="/frag/li1"/><li>last</li></ul>` +
	`<ul id="u2"><li>first</li><esi:include src="/frag/li2"><li>Loading item…</li></esi:include><li>last</li></ul>` +
	`<p>end</p>`

var layoutIncludes = []streamInclude{
	{`<esi:include src="/frag/div">Loading div…</esi:include>`, "/frag/div", `<b>div fragment</b>`, "Loading div…"},
	{`<esi:include src="/frag/cell">Loading cell…</esi:include>`, "/frag/cell", `<i>cell</i> fragment`, "Loading cell…"},
	{`<esi:include src="/frag/row"><tr><td>Loading row…</td></tr></esi:include>`, "/frag/row", `<tr><td>row</td><td>fragment</td></tr>`, `<tr><td>Loading row…</td></tr>`},
	{`<esi:include src="/frag/li1"/>`, "/frag/li1", `<li class="f">item one</li>`, ""},
	{`<esi:include src="/frag/li2"><li>Loading item…</li></esi:include>`, "/frag/li2", `<li class="f">item two</li><li class="f">item three</li>`, `<li>Loading item…</li>`},
}

// streamPageOf wraps main into a page: head, <main id="m">, then a
// script of the page's own that records #m as the parser built it, before
// any fill arrived.
func streamPageOf(main string, nonce string) string {
	attr := ""
	if nonce != "" {
		attr = ` nonce="` + nonce + `"`
	}
	return `<!doctype html><html><head><meta charset="utf-8"><title>stream</title></head><body>` +
		`<main id="m">` + main + `</main>` +
		`<script id="saw" data-own` + attr + `>document.currentScript.dataset.saw = document.getElementById('m').innerHTML</script>` +
		`</body></html>`
}

// sawJS is #m as the parser built it, before the fills (see streamPageOf).
const sawJS = `document.getElementById('saw').dataset.saw`

// layoutSwappedJS is true once layoutMain's fills are swapped in.
const layoutSwappedJS = `document.querySelectorAll('template').length === 0 && !!document.querySelector('#d b')`

var anchorRE = regexp.MustCompile(`<template data-fc="([0-9a-f]{16}):([0-9]+)"></template>`)

// anchored returns main with include n (1-based, in page order) between
// the anchors of the stream id.
func anchored(main string, incs []streamInclude, id string) string {
	var pairs []string
	for i, in := range incs {
		n := strconv.Itoa(i + 1)
		pairs = append(pairs, in.tag, `<template data-fc="`+id+`:`+n+`"></template>`+in.placeholder+`<!--/fc:`+id+`:`+n+`-->`)
	}
	return strings.NewReplacer(pairs...).Replace(main)
}

// TestBrowserStreamSwapsInPlace: in Chromium, each slow fragment of a
// streamed page lands exactly where its placeholder was, in a <div>, a
// table cell, table rows and lists; the parser kept the anchors where
// the page put them (none was foster-parented out of the table); the
// runtime leaves no template, script or comment behind and no global
// but __fragcache; and the result is the DOM of the same page composed
// inline (the next request, from the cache).
func TestBrowserStreamSwapsInPlace(t *testing.T) {
	page := streamPageOf(layoutMain, "")
	fc := startStreamed(t, page, layoutIncludes, "max-age=60")
	ctx := newBrowser(t, 1000, 800)
	reports := watchReports(t, ctx)

	browse(t, ctx, "load a page without includes", chromedp.Navigate(fc.front+"/plain"))
	plainGlobals := browse(t, ctx, "list its globals", chromedp.Evaluate[[]string](globalsJS))

	start := open(t, ctx, fc.front+"/")
	took := waitDOM(t, ctx, "the fills swapped in", layoutSwappedJS+` && document.querySelectorAll('li.f').length === 3 && `+streamEndedJS, start)
	t.Logf("swapped and ended %v after the request", took)
	if took < streamFragDelay {
		t.Errorf("the fragments were there after %v, before their %v delay: the page was not streamed", took, streamFragDelay)
	}

	saw := browse(t, ctx, "read #m as parsed", chromedp.Evaluate[string](sawJS))
	m := anchorRE.FindStringSubmatch(saw)
	if m == nil {
		t.Fatalf("the page as parsed has no anchor (not streamed?): %s", saw)
	}
	if want := anchored(layoutMain, layoutIncludes, m[1]); saw != want {
		t.Errorf("the parser did not keep the anchors where the page put them:\n got %s\nwant %s", saw, want)
	}

	got := browse(t, ctx, "read #m", chromedp.Evaluate[string](`document.getElementById('m').innerHTML`))
	if want := renderIncludes(layoutMain, layoutIncludes, true); got != want {
		t.Errorf("after the fills, #m is\n %s\nwant\n %s", got, want)
	}
	for _, c := range []struct{ sel, want string }{
		{"#d", `<div id="d">before <b>div fragment</b> after</div>`},
		{"#c", `<td id="c"><i>cell</i> fragment</td>`},
		{"#t tbody", `<tbody><tr><td>a</td><td id="c"><i>cell</i> fragment</td><td>z</td></tr><tr><td>row</td><td>fragment</td></tr><tr><td>last row</td></tr></tbody>`},
		{"#u1", `<ul id="u1"><li>first</li><li class="f">item one</li><li>last</li></ul>`},
		{"#u2", `<ul id="u2"><li>first</li><li class="f">item two</li><li class="f">item three</li><li>last</li></ul>`},
	} {
		if got := browse(t, ctx, "read "+c.sel, chromedp.Evaluate[string](`document.querySelector('`+c.sel+`').outerHTML`)); got != c.want {
			t.Errorf("%s is %s, want %s", c.sel, got, c.want)
		}
	}
	if lo := browse(t, ctx, "count leftovers", chromedp.Evaluate[leftovers](leftoversJS)); lo != (leftovers{}) {
		t.Errorf("the stream left %+v in the document", lo)
	}
	globals := browse(t, ctx, "list the globals", chromedp.Evaluate[[]string](globalsJS))
	var added []string
	for _, g := range globals {
		if !slices.Contains(plainGlobals, g) {
			added = append(added, g)
		}
	}
	if !slices.Equal(added, []string{"__fragcache"}) {
		t.Errorf("the runtime left the globals %q, want only __fragcache", added)
	}
	if typ := browse(t, ctx, "type of __fragcache", chromedp.Evaluate[string](`typeof __fragcache`)); typ != "function" {
		t.Errorf("__fragcache is a %s", typ)
	}

	// The fragments are cached now: the next request is composed inline,
	// not streamed, and the browser builds the same DOM.
	for deadline := time.Now().Add(swapBound); ; time.Sleep(200 * time.Millisecond) {
		browse(t, ctx, "reload", chromedp.Navigate(fc.front+"/"))
		saw = browse(t, ctx, "read #m as parsed", chromedp.Evaluate[string](sawJS))
		if !strings.Contains(saw, "<template") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page is still streamed %v later: %s", swapBound, saw)
		}
	}
	if inline := browse(t, ctx, "read #m", chromedp.Evaluate[string](`document.getElementById('m').innerHTML`)); inline != got {
		t.Errorf("composed inline, #m is\n %s\nstreamed it was\n %s", inline, got)
	}
	if r := reports.get(); len(r) > 0 {
		t.Errorf("the browser reported: %q", r)
	}
}

// TestBrowserStreamWithoutJavaScript: with scripts disabled the streamed
// page keeps its placeholders (the fills arrive and stay inert), and
// everything else is what the browser with scripts shows.
func TestBrowserStreamWithoutJavaScript(t *testing.T) {
	page := streamPageOf(layoutMain, "")
	fc := startStreamed(t, page, layoutIncludes, "no-store") // every request streams
	ctx := newBrowser(t, 1000, 800)

	start := open(t, ctx, fc.front+"/")
	waitDOM(t, ctx, "the fills swapped in", layoutSwappedJS+` && `+streamEndedJS, start)
	withJS := browse(t, ctx, "read #m", chromedp.Evaluate[string](strippedJS))
	textJS := browse(t, ctx, "read the text", chromedp.Evaluate[string](`document.body.innerText`))

	noJS, cancel := chromedp.NewContext(ctx) // a second tab
	defer cancel()
	if _, err := chromedp.Call(noJS, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	start = open(t, noJS, fc.front+"/")
	took := waitDOM(t, noJS, "the stream ended with every fill", streamEndedJS+` && document.querySelectorAll('template[data-fc-fill]').length === 5`, start)
	t.Logf("without scripts, the stream ended %v after the request", took)
	if ran := browse(t, noJS, "check the page's own script", chromedp.Evaluate[bool](`'saw' in document.getElementById('saw').dataset`)); ran {
		t.Fatal("scripts ran in the tab that disables them")
	}
	if lo := browse(t, noJS, "count leftovers", chromedp.Evaluate[leftovers](leftoversJS)); lo.Fills != 5 || lo.Templates != 10 || lo.Comments != 5 || lo.Scripts != 6 {
		t.Errorf("without scripts the document holds %+v, want 5 anchors, 5 closing comments, 5 inert fills, the runtime and 5 fill scripts", lo)
	}
	without := browse(t, noJS, "read #m", chromedp.Evaluate[string](strippedJS))
	if want := renderIncludes(layoutMain, layoutIncludes, false); without != want {
		t.Errorf("without scripts #m is\n %s\nwant the placeholders\n %s", without, want)
	}
	// The same structure as with scripts, fragments for placeholders.
	var back []string
	for _, in := range layoutIncludes {
		back = append(back, in.body, in.placeholder)
	}
	if got := strings.NewReplacer(back...).Replace(withJS); got != without {
		t.Errorf("with scripts (fragments put back to placeholders) #m is\n %s\nwithout\n %s", got, without)
	}
	textNoJS := browse(t, noJS, "read the text", chromedp.Evaluate[string](`document.body.innerText`))
	for _, ph := range []string{"Loading div…", "Loading cell…", "Loading row…", "Loading item…"} {
		if !strings.Contains(textNoJS, ph) || strings.Contains(textJS, ph) {
			t.Errorf("%q: shown without scripts %v, with scripts %v; want only without:\n%q\n%q",
				ph, strings.Contains(textNoJS, ph), strings.Contains(textJS, ph), textNoJS, textJS)
		}
	}
	for _, s := range []string{"Top", "before", "after", "last row", "first", "last", "end"} {
		if strings.Count(textJS, s) != strings.Count(textNoJS, s) {
			t.Errorf("%q shows %d times with scripts, %d without:\n%q\n%q", s, strings.Count(textJS, s), strings.Count(textNoJS, s), textJS, textNoJS)
		}
	}
	if strings.Contains(textNoJS, "fragment") || strings.Contains(textNoJS, "item one") {
		t.Errorf("without scripts the page shows a fill: %q", textNoJS)
	}
}

// cspNonce is the nonce of the page in TestBrowserStreamCSP, and
// controlScript the page's own inline script without it.
const (
	cspNonce      = "abc123XYZ789+/=="
	controlScript = "document.title = 'control ran'"
)

// TestBrowserStreamCSP: under a nonce policy the runtime and fill scripts
// carry the page's nonce and Chromium runs them (the fragment is swapped
// in, and no violation but the one of a control script without nonce is
// reported); under a policy that allows neither a nonce nor inline
// scripts the page is not streamed, and the browser shows the
// placeholder.
func TestBrowserStreamCSP(t *testing.T) {
	const main = `<div id="d">before <esi:include src="/frag/div">Loading div…</esi:include> after</div>`
	incs := []streamInclude{{`<esi:include src="/frag/div">Loading div…</esi:include>`, "/frag/div", `<b>div fragment</b>`, "Loading div…"}}
	// The page's own scripts: one with the nonce records the policy
	// violations on <html data-violations>; a control without the nonce
	// must be blocked, so the recording is seen to work.
	page := strings.Replace(streamPageOf(main, cspNonce), `<title>`,
		`<script data-own nonce="`+cspNonce+`">document.addEventListener('securitypolicyviolation', e => {`+
			`const h = document.documentElement; h.dataset.violations = (h.dataset.violations || '') + e.effectiveDirective + ' ' + e.sample + '|'})</script><title>`, 1)
	page = strings.Replace(page, `</main>`, `</main><script data-own>`+controlScript+`</script>`, 1)

	t.Run("nonce", func(t *testing.T) {
		fc := startStreamed(t, page, incs, "no-store",
			"Content-Security-Policy", "script-src 'nonce-"+cspNonce+"' 'report-sample'; object-src 'none'")
		ctx := newBrowser(t, 1000, 800)
		reports := watchReports(t, ctx)
		start := open(t, ctx, fc.front+"/")
		waitDOM(t, ctx, "the fill swapped in and the control blocked",
			`!!document.querySelector('#d b') && (document.documentElement.dataset.violations || '').includes('control') && `+streamEndedJS, start)
		if got := browse(t, ctx, "read #d", chromedp.Evaluate[string](`document.getElementById('d').outerHTML`)); got != `<div id="d">before <b>div fragment</b> after</div>` {
			t.Errorf("#d is %s", got)
		}
		if saw := browse(t, ctx, "read #m as parsed", chromedp.Evaluate[string](sawJS)); !anchorRE.MatchString(saw) {
			t.Errorf("the page was not streamed: #m as parsed is %s", saw)
		}
		violations := browse(t, ctx, "read the violations", chromedp.Evaluate[string](`document.documentElement.dataset.violations`))
		if violations != "script-src-elem "+controlScript+"|" {
			t.Errorf("violations seen by the page: %q, want only the control's", violations)
		}
		if lo := browse(t, ctx, "count leftovers", chromedp.Evaluate[leftovers](leftoversJS)); lo != (leftovers{}) {
			t.Errorf("the stream left %+v in the document", lo)
		}
		if title := browse(t, ctx, "read the title", chromedp.Evaluate[string](`document.title`)); title != "stream" {
			t.Errorf("the control script ran (title %q): the policy was not enforced", title)
		}
		// Chromium names the blocked script by its hash: only the
		// control's may be there.
		sum := sha256.Sum256([]byte(controlScript))
		control := "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
		if r := reports.get(); len(r) != 1 || !strings.Contains(r[0], "Content Security Policy") || !strings.Contains(r[0], control) {
			t.Errorf("the browser reported %q, want only the blocked control (%s)", r, control)
		}
	})

	t.Run("no nonce", func(t *testing.T) {
		fc := startStreamed(t, page, incs, "no-store", "Content-Security-Policy", "script-src 'self'")
		_, raw := get(t, fc.front+"/")
		if strings.Contains(raw, "<template") || strings.Contains(raw, "__fragcache") || !strings.Contains(raw, "before Loading div… after") {
			t.Errorf("streamed under script-src 'self': %q", raw)
		}
		ctx := newBrowser(t, 1000, 800)
		browse(t, ctx, "load the page", chromedp.Navigate(fc.front+"/"))
		if got := browse(t, ctx, "read #d", chromedp.Evaluate[string](`document.getElementById('d').outerHTML`)); got != `<div id="d">before Loading div… after</div>` {
			t.Errorf("#d is %s, want the placeholder", got)
		}
		if lo := browse(t, ctx, "count leftovers", chromedp.Evaluate[leftovers](leftoversJS)); lo != (leftovers{}) {
			t.Errorf("the document holds %+v", lo)
		}
	})
}

// TestBrowserStreamAttributeInclude: an include inside an attribute value
// is not streamed (no anchor, no fill; its placeholder, or nothing, stays
// in the attribute) while the element-content include of the same page
// is swapped in.
func TestBrowserStreamAttributeInclude(t *testing.T) {
	const main = `<div id="d"><esi:include src="/frag/div">Loading div…</esi:include></div>` +
		`<a id="l" href="/search?q=<esi:include src="/frag/q"/>">search</a>` +
		`<span id="s" title="<esi:include src="/frag/title">waiting</esi:include>">tip</span>`
	incs := []streamInclude{
		{`<esi:include src="/frag/div">Loading div…</esi:include>`, "/frag/div", `<b>div fragment</b>`, "Loading div…"},
		{`<esi:include src="/frag/q"/>`, "/frag/q", `term`, ""},
		{`<esi:include src="/frag/title">waiting</esi:include>`, "/frag/title", `a title`, "waiting"},
	}
	fc := startStreamed(t, streamPageOf(main, ""), incs, "no-store")

	_, cs := readChunks(t, fc.front+"/")
	raw := joinChunks(cs)
	m := anchorRE.FindAllStringSubmatch(raw, -1)
	if len(m) != 1 || m[0][2] != "1" || strings.Count(raw, "data-fc-fill=") != 1 || !strings.Contains(raw, `data-fc-fill="`+m[0][1]+`:1"`) {
		t.Fatalf("want one anchor and one fill, for include 1: %q", raw)
	}
	if !strings.Contains(raw, `<a id="l" href="/search?q=">`) || !strings.Contains(raw, `<span id="s" title="waiting">`) {
		t.Errorf("the attributes do not hold their placeholders: %q", raw)
	}

	ctx := newBrowser(t, 1000, 800)
	start := open(t, ctx, fc.front+"/")
	waitDOM(t, ctx, "the fill swapped in", `!!document.querySelector('#d b') && `+streamEndedJS, start)
	type attrs struct {
		D     string `json:"d"`
		Href  string `json:"href"`
		Title string `json:"title"`
	}
	got := browse(t, ctx, "read the page", chromedp.Evaluate[attrs](`({
		d: document.getElementById('d').outerHTML,
		href: document.getElementById('l').getAttribute('href'),
		title: document.getElementById('s').getAttribute('title'),
	})`))
	if want := (attrs{`<div id="d"><b>div fragment</b></div>`, "/search?q=", "waiting"}); got != want {
		t.Errorf("the page shows %+v, want %+v", got, want)
	}
	if lo := browse(t, ctx, "count leftovers", chromedp.Evaluate[leftovers](leftoversJS)); lo != (leftovers{}) {
		t.Errorf("the stream left %+v in the document", lo)
	}
}

// TestBrowserStreamNestedAndRepeated: a fragment inside <p> within
// <section> lands in its place; two includes of one src each get their
// own anchor and fill, and both are swapped in (two separate copies);
// a fill's own pending include is anchored inside it and swapped in
// after it.
func TestBrowserStreamNestedAndRepeated(t *testing.T) {
	const main = `<section id="sec"><h2>News</h2><p id="p">Today: <esi:include src="/frag/headline">Loading headline…</esi:include>, more soon.</p></section>` +
		`<div id="x1"><esi:include src="/frag/twice">first copy</esi:include></div>` +
		`<div id="x2"><esi:include src="/frag/twice">second copy</esi:include></div>` +
		`<div id="outer"><esi:include src="/frag/outer">Loading outer…</esi:include></div>`
	incs := []streamInclude{
		{`<esi:include src="/frag/headline">Loading headline…</esi:include>`, "/frag/headline", `<em>Rain</em> all day`, "Loading headline…"},
		{`<esi:include src="/frag/twice">first copy</esi:include>`, "/frag/twice", `<span class="t">shared</span>`, "first copy"},
		{`<esi:include src="/frag/twice">second copy</esi:include>`, "/frag/twice", `<span class="t">shared</span>`, "second copy"},
		{`<esi:include src="/frag/outer">Loading outer…</esi:include>`, "/frag/outer", `<p>outer <esi:include src="/frag/inner">Loading inner…</esi:include></p>`, "Loading outer…"},
	}
	fc := startStreamedWith(t, streamPageOf(main, ""), incs, map[string]http.HandlerFunc{
		"/frag/outer": func(w http.ResponseWriter, r *http.Request) { // opted in to ESI
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			frag(incs[3].body, streamFragDelay, "no-store")(w, r)
		},
		// The inner fragment arrives after its parent's fill was sent.
		"/frag/inner": frag(`<i>inner</i>`, 2*streamFragDelay, "no-store"),
	}, "no-store")

	_, cs := readChunks(t, fc.front+"/")
	raw := joinChunks(cs)
	var ns []string
	ms := anchorRE.FindAllStringSubmatch(raw, -1)
	for _, m := range ms {
		ns = append(ns, m[2])
	}
	if !slices.Equal(ns, []string{"1", "2", "3", "4", "5"}) {
		t.Fatalf("anchors %q, want 1 to 5 (each occurrence of /frag/twice its own, the inner one in its parent's fill): %q", ns, raw)
	}
	id := ms[0][1]
	fills := make([]int, 6)
	for n := 1; n <= 5; n++ {
		if fills[n] = strings.Index(raw, `<template data-fc-fill="`+id+`:`+strconv.Itoa(n)+`">`); fills[n] < 0 {
			t.Errorf("no fill for include %d: %q", n, raw)
		}
	}
	if inner := strings.Index(raw, `<template data-fc="`+id+`:5">`); inner < fills[4] || fills[5] < inner {
		t.Errorf("the inner include's anchor is not in its parent's fill, before its own fill: %q", raw)
	}

	ctx := newBrowser(t, 1000, 800)
	start := open(t, ctx, fc.front+"/")
	took := waitDOM(t, ctx, "every fill swapped in", `!!document.querySelector('#outer i') && `+streamEndedJS, start)
	t.Logf("swapped and ended %v after the request", took)
	want := `<section id="sec"><h2>News</h2><p id="p">Today: <em>Rain</em> all day, more soon.</p></section>` +
		`<div id="x1"><span class="t">shared</span></div>` +
		`<div id="x2"><span class="t">shared</span></div>` +
		`<div id="outer"><p>outer <i>inner</i></p></div>`
	if got := browse(t, ctx, "read #m", chromedp.Evaluate[string](`document.getElementById('m').innerHTML`)); got != want {
		t.Errorf("#m is\n %s\nwant\n %s", got, want)
	}
	if two := browse(t, ctx, "compare the copies", chromedp.Evaluate[bool](
		`(() => { const s = document.querySelectorAll('.t'); return s.length === 2 && s[0] !== s[1] })()`)); !two {
		t.Error("the two includes of /frag/twice are not two separate copies")
	}
	if lo := browse(t, ctx, "count leftovers", chromedp.Evaluate[leftovers](leftoversJS)); lo != (leftovers{}) {
		t.Errorf("the stream left %+v in the document", lo)
	}
}
