// Command streamdom measures a cold page with slow fragments (bench
// scenario S3o) as a visitor sees it: the time to the first byte, the
// time until the whole page (its last part, after the last include) has
// arrived, the time until every fragment has, and the same in a headless
// Chromium's DOM.
//
//	go run ./docs/bench/streamdom -name fragcache -url 'http://127.0.0.1:38083/page?n=10&v='
//
// The url ends with "v=": each measurement appends a fresh tag, so every
// page is cold. The open-loop part sends -rate requests per second for
// -duration on one fresh tag, each timed from the moment it was due, as
// the bench's S3o does; the browser part loads -loads pages, each on a
// fresh tag, one after another. It prints one CSV line per measure
// (system,measure,n,p50_ms,p90_ms,p99_ms,max_ms). Loopback only.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

func main() {
	name := flag.String("name", "candidate", "the system's name in the output")
	base := flag.String("url", "", "the page's URL up to and including v= (a fresh tag is appended)")
	frags := flag.Int("frags", 10, "fragments on the page")
	rate := flag.Int("rate", 100, "open loop: requests per second")
	dur := flag.Duration("duration", 5*time.Second, "open loop: how long")
	loads := flag.Int("loads", 5, "browser: cold page loads")
	timeout := flag.Duration("timeout", 15*time.Second, "one request's or page load's limit")
	lastPart := flag.String("last-part", "", `the attribute of the page's last element before </body>, as the origin sends it (data-p="page-102")`)
	flag.Parse()
	u, err := url.Parse(*base)
	if err != nil || *base == "" {
		log.Fatalf("-url: %v", err)
	}
	if !regexp.MustCompile(`^[a-z-]+="[A-Za-z0-9-]+"$`).MatchString(*lastPart) {
		log.Fatalf(`-last-part: want name="value", got %q`, *lastPart)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		log.Fatalf("-url: loopback only, not %s", h)
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)

	ttfb, end, full, complete := openLoop(*base+"ol"+run, *lastPart, *frags, *rate, *dur, *timeout)
	report(*name, "ttfb", ttfb)
	report(*name, "page_end_in_response", end)
	report(*name, "all_fragments_in_response", full)
	fmt.Printf("%s,complete_share,%d,%.3f,,,\n", *name, len(ttfb), complete)

	first, pageEnd, dom := browse(*base+"br"+run+"-", *lastPart, *frags, *loads, *timeout)
	report(*name, "browser_first_byte", first)
	report(*name, "browser_page_end_in_dom", pageEnd)
	report(*name, "browser_all_fragments_in_dom", dom)
}

var fragBody = regexp.MustCompile(`data-frag-body="(\d+)"`)

// openLoop sends rate requests a second for dur to pageURL and returns, of
// the requests answered, the time to the first byte, the time until the
// body held the page's last part (the bench page's filler after its last
// include: the whole page, placeholders or not), and the time until the
// body held every fragment (for those whose body did in the end),
// each from the moment the request was due, and the share of answers
// that held every fragment.
func openLoop(pageURL, lastPart string, frags, rate int, dur, timeout time.Duration) (ttfb, end, full []time.Duration, complete float64) {
	last := []byte(lastPart)
	tr := &http.Transport{MaxIdleConnsPerHost: 1000, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: timeout}).DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: timeout}
	var mu sync.Mutex
	var wg sync.WaitGroup
	whole := 0
	n := int(dur.Seconds() * float64(rate))
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first time.Time
			req, _ := http.NewRequest("GET", pageURL, nil)
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				GotFirstResponseByte: func() { first = time.Now() },
			}))
			resp, err := c.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			seen := map[string]bool{}
			var at, endAt time.Time
			buf := make([]byte, 64<<10)
			var tail []byte
			for {
				k, err := resp.Body.Read(buf)
				if k > 0 {
					tail = append(tail, buf[:k]...)
					for _, m := range fragBody.FindAllSubmatch(tail, -1) {
						seen[string(m[1])] = true
					}
					if at.IsZero() && len(seen) >= frags {
						at = time.Now()
					}
					if endAt.IsZero() && bytes.Contains(tail, last) {
						endAt = time.Now()
					}
					if len(tail) > 64 {
						tail = slices.Clone(tail[len(tail)-64:]) // a marker split across reads
					}
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					return
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode != 200 {
				return
			}
			ttfb = append(ttfb, first.Sub(due))
			if !endAt.IsZero() {
				end = append(end, endAt.Sub(due))
			}
			if !at.IsZero() {
				full = append(full, at.Sub(due))
				whole++
			}
		}()
	}
	wg.Wait()
	if len(ttfb) > 0 {
		complete = float64(whole) / float64(len(ttfb))
	}
	return ttfb, end, full, complete
}

// domWatch runs in every page before its own scripts: it notes when the
// page holds every fragment (in the document, not in an inert template).
const domWatch = `(() => {
	const want = %d, last = %q;
	const check = () => {
		if (!window.__endAt && document.querySelector('[' + last + ']')) window.__endAt = performance.now();
		if (window.__allAt) return;
		const seen = new Set([...document.querySelectorAll('[data-frag-body]')].map(e => e.dataset.fragBody));
		if (seen.size >= want) window.__allAt = performance.now();
	};
	new MutationObserver(check).observe(document, {childList: true, subtree: true});
	document.addEventListener('DOMContentLoaded', check);
})()`

// browse loads loads cold pages (base plus a counter) in a headless
// Chromium, one after another, and returns for each the time to the
// first byte of the response and the time until every fragment was in
// the DOM, both from the start of the navigation, as the page measured
// them (performance.now): how often this program looks does not matter.
func browse(base, lastPart string, frags, loads int, timeout time.Duration) (first, pageEnd, dom []time.Duration) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.Flag("disable-gpu", true))
	if p := os.Getenv("CHROME"); p != "" {
		opts = append(opts, chromedp.ExecPath(p))
	}
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses its sandbox to root
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: fmt.Sprintf(domWatch, frags, lastPart)}); err != nil {
		log.Fatalf("browser: %v", err)
	}
	for i := range loads {
		u := base + strconv.Itoa(i)
		if _, err := chromedp.Call(ctx, page.Navigate, page.NavigateParams{URL: u}); err != nil {
			log.Printf("browser load %d: %v", i, err)
			continue
		}
		type times struct {
			First float64 `json:"first"`
			End   float64 `json:"end"`
			All   float64 `json:"all"`
		}
		check := `location.href === ` + strconv.Quote(u) + ` && window.__allAt ? {first: performance.getEntriesByType('navigation')[0].responseStart, end: window.__endAt, all: window.__allAt} : null`
		deadline := time.Now().Add(timeout)
		for {
			t, err := chromedp.Run(ctx, chromedp.Evaluate[*times](check))
			if err == nil && t != nil {
				first = append(first, ms(t.First))
				pageEnd = append(pageEnd, ms(t.End))
				dom = append(dom, ms(t.All))
				break
			}
			if time.Now().After(deadline) {
				log.Printf("browser load %d: not every fragment in the DOM after %v (%v)", i, timeout, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return first, pageEnd, dom
}

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func report(name, measure string, ds []time.Duration) {
	if len(ds) == 0 {
		fmt.Printf("%s,%s,0,,,,\n", name, measure)
		return
	}
	slices.Sort(ds)
	q := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	fmt.Printf("%s,%s,%d,%.1f,%.1f,%.1f,%.1f\n", name, measure, len(ds), q(.5), q(.9), q(.99), q(1))
}
