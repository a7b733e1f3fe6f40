package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// screenshotsEnv names the directory the browser test writes its
// screenshots to (demo.png: the first view at 1280 px; demo-400.png: a
// later one at 400 px; admin.png); unset, none are written. The ones in docs/ are made with
//
//	FRAGCACHE_SCREENSHOTS=docs go test -run TestBrowser .
const screenshotsEnv = "FRAGCACHE_SCREENSHOTS"

// requireExternalEnv makes a missing external program (redis-server,
// chromium) a test failure instead of a skip; CI sets it.
const requireExternalEnv = "FRAGCACHE_REQUIRE_EXTERNAL"

// newBrowser starts a headless Chromium (Debian's chromium) for the test,
// with a viewport of width x height, stopped with the test. Without
// chromium on PATH the test is skipped with a loud message, unless
// FRAGCACHE_REQUIRE_EXTERNAL=1.
func newBrowser(t *testing.T, width, height int) context.Context {
	t.Helper()
	var bin string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		msg := "chromium is not on PATH; the browser tests did NOT run " +
			"(install Debian's chromium, or set " + requireExternalEnv + "=1 to make this a failure)"
		if os.Getenv(requireExternalEnv) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.WindowSize(width, height),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("hide-scrollbars", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses its sandbox to root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // stops the browser process it started, and waits for it
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	return ctx
}

// browse runs a on ctx within a bounded time.
func browse[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshot saves the whole page as name in $FRAGCACHE_SCREENSHOTS.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv(screenshotsEnv)
	if dir == "" {
		return
	}
	png := browse(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", filepath.Join(dir, name), len(png))
}

// boxOutcomesJS lists the demo page's boxes by id with the outcome their
// include was marked with, and the text and colour of the badge the
// browser draws for it: "outcome|text|colour".
const boxOutcomesJS = `Object.fromEntries([...document.querySelectorAll('#top, .box')].map(b => {
	const m = b.querySelector('[data-fc-outcome]');
	const st = m && getComputedStyle(m, '::before');
	return [b.id, m ? m.dataset.fcOutcome + '|' + st.content.replace(/"/g, '') + '|' + st.backgroundColor : ''];
}))`

// overflowJS is true when the page is wider than the viewport.
const overflowJS = `document.documentElement.scrollWidth > window.innerWidth + 1`

// TestBrowserDemoAndAdminPage loads the demo page and the admin page in a
// headless Chromium: each demo box shows a badge with its outcome, first
// pending for the slow ones, then from the cache; the page explains them
// in one sentence and fits 400 px and 1280 px without scrolling sideways;
// the admin page shows its state and tables as rendered HTML.
func TestBrowserDemoAndAdminPage(t *testing.T) {
	// fragcache first: cleanups run last first, so the browser and the
	// connections it holds open (preconnects) are gone when fragcache
	// shuts down.
	fc := startFragcache(t, "--demo", "--wait", "50ms")
	ctx := newBrowser(t, 1280, 900)

	browse(t, ctx, "load the demo page", chromedp.Navigate(fc.front+"/"))
	first := browse(t, ctx, "read the badges", chromedp.Evaluate[map[string]string](boxOutcomesJS))
	t.Logf("first view: %v", first)
	allowed := map[string][]string{
		"top":       {"miss", "pending", "streaming"},
		"welcome":   {"miss", "bypass", "pending", "streaming"},
		"orders":    {"streaming"}, // about 1 s to build, timeout="100ms"
		"report":    {"streaming"}, // about 3 s, within the demo's 4 s stream budget
		"inventory": {"alt", "pending"},
		"news":      {"except", "pending"},
		"tabs":      {""}, // no include on the "none" tab
	}
	checkBadges := func(view string, got map[string]string, allowed map[string][]string) {
		t.Helper()
		for box, outs := range allowed {
			v, ok := got[box]
			if !ok {
				t.Errorf("%s: no box %q on the page", view, box)
				continue
			}
			parts := strings.SplitN(v+"||", "|", 3)
			out, badge, colour := parts[0], parts[1], strings.TrimSuffix(parts[2], "||")
			if !contains(outs, out) {
				t.Errorf("%s: box %q is marked %q, want one of %q", view, box, out, outs)
			}
			if out != "" && badge != out {
				t.Errorf("%s: box %q shows the badge %q for the outcome %q", view, box, badge, out)
			}
			if want, ok := badgeColours[out]; ok && colour != want {
				t.Errorf("%s: box %q's %s badge is %s, want %s", view, box, out, colour, want)
			}
		}
	}
	checkBadges("first view", first, allowed)
	// The demo streams (rule 34): the first view's slow boxes fill in by
	// themselves, the fill markup gone once swapped in.
	var filled struct {
		Report    string `json:"report"`
		Orders    string `json:"orders"`
		Leftovers int    `json:"leftovers"`
	}
	deadline := time.Now().Add(8 * time.Second)
	for {
		filled = browse(t, ctx, "read the slow boxes", chromedp.Evaluate[struct {
			Report    string `json:"report"`
			Orders    string `json:"orders"`
			Leftovers int    `json:"leftovers"`
		}](`({report: document.getElementById('report').innerText, orders: document.getElementById('orders').innerText,
			leftovers: document.querySelectorAll('template, script').length})`))
		if strings.Contains(filled.Report, "Quarterly report") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(filled.Report, "Quarterly report") || !strings.Contains(filled.Orders, "Globex") || filled.Leftovers != 0 {
		t.Errorf("first view after the stream: report %q, orders %q, %d templates or scripts left; want both filled in, none left",
			filled.Report, filled.Orders, filled.Leftovers)
	}
	screenshot(t, ctx, "demo.png")
	legend := browse(t, ctx, "read the legend", chromedp.Evaluate[string](`document.getElementById('legend').textContent`))
	if !strings.Contains(legend, "hit") || !strings.Contains(legend, "pending") || !strings.Contains(legend, "alt") ||
		strings.Count(legend, ". ") > 0 || !strings.HasSuffix(legend, ".") {
		t.Errorf("the legend is not one sentence explaining the badges: %q", legend)
	}

	// The report takes about 3 s: once its fetch is done, a reload finds
	// every slow box in the cache.
	var later map[string]string
	deadline = time.Now().Add(10 * time.Second)
	for {
		time.Sleep(500 * time.Millisecond)
		browse(t, ctx, "reload the demo page", chromedp.Reload())
		later = browse(t, ctx, "read the badges", chromedp.Evaluate[map[string]string](boxOutcomesJS))
		if strings.HasPrefix(later["report"], "hit|") || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("later view: %v", later)
	checkBadges("later view", later, map[string][]string{
		"top": {"hit"}, "welcome": {"bypass", "miss"}, "orders": {"hit"}, "report": {"hit"},
		"inventory": {"alt"}, "news": {"except"}, "tabs": {""},
	})
	if browse(t, ctx, "check the width", chromedp.Evaluate[bool](overflowJS)) {
		t.Error("the demo page scrolls sideways at 1280 px")
	}
	browse(t, ctx, "narrow the viewport", chromedp.EmulateViewport(400, 900))
	browse(t, ctx, "reload the demo page", chromedp.Reload())
	if browse(t, ctx, "check the width", chromedp.Evaluate[bool](overflowJS)) {
		t.Error("the demo page scrolls sideways at 400 px")
	}
	screenshot(t, ctx, "demo-400.png")

	// The admin page, as a browser renders it.
	browse(t, ctx, "widen the viewport", chromedp.EmulateViewport(1280, 900))
	browse(t, ctx, "load the admin page", chromedp.Navigate(fc.admin+"/"))
	type adminState struct {
		L2       string     `json:"l2"`
		Groups   [][]string `json:"groups"`
		Srcs     [][]string `json:"srcs"`
		Breakers string     `json:"breakers"`
		Overflow bool       `json:"overflow"`
	}
	st := browse(t, ctx, "read the admin page", chromedp.Evaluate[adminState](`({
		l2: document.getElementById('l2').innerText,
		groups: [...document.querySelectorAll('#groups tbody tr')].map(r => [...r.cells].map(c => c.innerText)),
		srcs: [...document.querySelectorAll('#srcs tbody tr')].map(r => [...r.cells].map(c => c.innerText)),
		breakers: document.getElementById('state').innerText,
		overflow: `+overflowJS+`,
	})`))
	t.Logf("admin page: L2 %s; %d groups, %d srcs", st.L2, len(st.Groups), len(st.Srcs))
	if st.L2 != "off" {
		t.Errorf("the admin page says the L2 is %q, want off", st.L2)
	}
	if !strings.Contains(st.Breakers, "Breaker 127.0.0.1:") || !strings.Contains(st.Breakers, "closed") {
		t.Errorf("the admin page shows no breaker state: %q", st.Breakers)
	}
	rowOf := func(rows [][]string, name string) []string {
		for _, r := range rows {
			if len(r) > 0 && r[0] == name {
				return r
			}
		}
		return nil
	}
	for _, g := range []string{"orders", "report", "inventory", "greeting"} {
		r := rowOf(st.Groups, g)
		if len(r) != 8 {
			t.Errorf("no row for the group %q: %q", g, st.Groups)
			continue
		}
		if r[1] == "0" {
			t.Errorf("group %q: %q lookups", g, r[1])
		}
	}
	if r := rowOf(st.Groups, "inventory"); len(r) == 8 && !strings.HasPrefix(r[6], "status 503") {
		t.Errorf("group inventory: last error %q, want status 503", r[6])
	}
	if r := rowOf(st.Srcs, "/fragments/report"); len(r) != 9 || r[1] != "report" || r[3] == "–" || r[5] == "–" {
		t.Errorf("the src /fragments/report: %q", r)
	} else if !strings.HasSuffix(r[5], " s") {
		t.Errorf("the report's fetch p50 is %q; it takes about 3 s", r[5])
	}
	if r := rowOf(st.Srcs, "/fragments/tab"); r != nil {
		t.Errorf("the admin page lists a src the pages did not use: %q", r)
	}
	if st.Overflow {
		t.Error("the admin page scrolls sideways at 1280 px")
	}
	screenshot(t, ctx, "admin.png")
}

// badgeColours are the demo's badge colours: from the cache, fetched,
// streamed, pending, fallen back.
var badgeColours = map[string]string{
	"hit": "rgb(23, 128, 61)", "miss": "rgb(39, 89, 184)", "bypass": "rgb(39, 89, 184)",
	"pending": "rgb(179, 92, 0)", "streaming": "rgb(107, 63, 160)", "alt": "rgb(179, 38, 30)", "except": "rgb(179, 38, 30)",
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
