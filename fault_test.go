package main

// Fault injection: each test breaks a dependency of fragcache in one way,
// on loopback, and checks that every request gets an answer, that a page
// whose fragment is at fault answers within --wait plus a generous bound,
// and that goroutines and open files return to their baseline once
// fragcache and the origins are stopped. The figures each test logs (run
// with -v) are the ones docs/reliability.md quotes.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// slack is what a page may take beyond its --wait and the healthy
// baseline: generous, for two shared cores under the race detector.
const slack = 500 * time.Millisecond

// openFiles counts the process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// checkNoLeaks records the goroutines and open files of now and, when the
// test ends, checks that both returned to that baseline. Call it first in
// the test, so that its check runs after every later cleanup (fragcache
// stopped, origins closed).
func checkNoLeaks(t *testing.T) {
	t.Helper()
	client.CloseIdleConnections()
	fd0, g0 := openFiles(t), runtime.NumGoroutine()
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		client.CloseIdleConnections()
		if err := goleak.Find(append([]goleak.Option{current}, notOurs...)...); err != nil {
			t.Errorf("goroutines left after stop: %v", err)
		}
		fd := openFiles(t)
		for deadline := time.Now().Add(5 * time.Second); fd > fd0 && time.Now().Before(deadline); fd = openFiles(t) {
			client.CloseIdleConnections()
			time.Sleep(20 * time.Millisecond)
		}
		if fd > fd0 {
			t.Errorf("open files: %d after stop, %d before", fd, fd0)
		}
		t.Logf("leaks: goroutines %d before, %d after (fasthttp's self-ending cleaners aside); open files %d before, %d after",
			g0, runtime.NumGoroutine(), fd0, fd)
	})
}

// loadStats is what hammer saw.
type loadStats struct {
	sent, answered int
	codes          map[int]int
	lat            []time.Duration // of answered requests, sorted
	errs           []error         // the first few transport errors
}

func (s *loadStats) pct(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	return s.lat[min(len(s.lat)-1, int(float64(len(s.lat))*p/100))]
}

func (s *loadStats) String() string {
	return fmt.Sprintf("%d/%d answered, codes %v, p50 %v, p99 %v, max %v",
		s.answered, s.sent, s.codes, s.pct(50).Round(time.Millisecond), s.pct(99).Round(time.Millisecond),
		s.pct(100).Round(time.Millisecond))
}

// fetchPage GETs url with a 10 s limit and reads the whole answer.
func fetchPage(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// hammer sends n GETs of url from conc goroutines, waits for all of them,
// and passes every answer to check (which may be nil).
func hammer(t *testing.T, url string, n, conc int, check func(code int, body string)) *loadStats {
	t.Helper()
	st := &loadStats{sent: n, codes: map[int]int{}}
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				start := time.Now()
				code, body, err := fetchPage(context.Background(), url)
				d := time.Since(start)
				mu.Lock()
				if err != nil {
					if len(st.errs) < 5 {
						st.errs = append(st.errs, err)
					}
				} else {
					st.answered++
					st.codes[code]++
					st.lat = append(st.lat, d)
				}
				mu.Unlock()
				if err == nil && check != nil {
					check(code, body)
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(st.lat)
	return st
}

// expect returns a check that wants every answer to be code with body.
func expect(t *testing.T, code int, body string) func(int, string) {
	var once sync.Once
	return func(c int, b string) {
		if c != code || b != body {
			once.Do(func() { t.Errorf("answer %d %q, want %d %q", c, b, code, body) })
		}
	}
}

// requireAllAnswered fails the test when a request got no answer.
func requireAllAnswered(t *testing.T, what string, st *loadStats) {
	t.Helper()
	if st.answered != st.sent {
		t.Errorf("%s: %d of %d requests got no answer: %v", what, st.sent-st.answered, st.sent, st.errs)
	}
}

// healthyP99 measures the p99 of a healthy page on fc: its fragment is
// fetched once, then every request is a cache hit.
func healthyP99(t *testing.T, url string) time.Duration {
	t.Helper()
	fetchPage(context.Background(), url)
	st := hammer(t, url, 40, 4, expect(t, 200, "[ok]"))
	requireAllAnswered(t, "healthy baseline", st)
	t.Logf("healthy baseline: %s", st)
	return st.pct(99)
}

// withinBudget fails the test when the p99 of st exceeds the healthy
// baseline plus wait plus slack.
func withinBudget(t *testing.T, what string, st *loadStats, base, wait time.Duration) {
	t.Helper()
	if p := st.pct(99); p > base+wait+slack {
		t.Errorf("%s: page p99 %v, want within %v (healthy p99) + %v (--wait) + %v", what, p, base, wait, slack)
	}
}

// healthyRoutes are added to every fault test's origin: /healthy is a
// page with one cached fragment.
func healthyRoutes(routes map[string]http.HandlerFunc) map[string]http.HandlerFunc {
	routes["/healthy"] = esiPage(`[<esi:include src="/ok"/>]`)
	routes["/ok"] = frag("ok", 0, "max-age=600")
	return routes
}

// faultServer is a raw HTTP/1.1 server on loopback that answers each
// request with serve, for faults httptest cannot produce: resets, short
// bodies, slow drips, hangs.
type faultServer struct {
	ln    net.Listener
	addr  string
	conns atomic.Int64 // connections accepted
	reqs  atomic.Int64 // request heads read
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once

	// mu protects open.
	mu   sync.Mutex
	open map[net.Conn]struct{}
}

// newFaultServer starts a faultServer. serve gets the connection, the
// request's path and a channel closed at the test's end; the connection
// is closed when serve returns false.
func newFaultServer(t *testing.T, serve func(c net.Conn, path string, stop <-chan struct{}) bool) *faultServer {
	t.Helper()
	return newRawOrigin(t, func(c net.Conn, _, path string, stop <-chan struct{}) bool { return serve(c, path, stop) })
}

// newRawOrigin is newFaultServer for a serve that needs the request's
// method too.
func newRawOrigin(t *testing.T, serve func(c net.Conn, method, path string, stop <-chan struct{}) bool) *faultServer {
	t.Helper()
	return newHeadOrigin(t, func(c net.Conn, method, path, _ string, stop <-chan struct{}) bool {
		return serve(c, method, path, stop)
	})
}

// newHeadOrigin is newRawOrigin for a serve that reads the request's
// header lines too: head is the whole request head as it arrived, through
// the blank line that ends it.
func newHeadOrigin(t *testing.T, serve func(c net.Conn, method, path, head string, stop <-chan struct{}) bool) *faultServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &faultServer{ln: ln, addr: ln.Addr().String(), stop: make(chan struct{}), open: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			s.open[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.open, c)
					s.mu.Unlock()
					c.Close()
				}()
				br := bufio.NewReader(c)
				for {
					method, path, head, err := readRequestHead(br)
					if err != nil {
						return
					}
					s.reqs.Add(1)
					if !serve(c, method, path, head, s.stop) {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *faultServer) openConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

func (s *faultServer) close() {
	s.once.Do(func() {
		close(s.stop)
		s.ln.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// readRequestHead reads one request head and returns its method, its
// path and the whole head as read.
func readRequestHead(br *bufio.Reader) (method, path, head string, err error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", "", "", err
	}
	var b strings.Builder
	b.WriteString(line)
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return "", "", "", err
		}
		b.WriteString(h)
		if h == "\r\n" || h == "\n" {
			break
		}
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", "", "", errors.New("bad request line")
	}
	return f[0], f[1], b.String(), nil
}

// writeFull answers with a complete fragment and keeps the connection.
func writeFull(c net.Conn, body string) bool {
	_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=600\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return err == nil
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// hangUp never answers: it reads until the peer closes the connection or
// the server stops.
func hangUp(c net.Conn, _ string, _ <-chan struct{}) bool {
	io.Copy(io.Discard, c)
	return false
}

// deadPort returns a loopback address nobody listens on.
func deadPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func metricsText(t *testing.T, fc *instance) string {
	t.Helper()
	_, m := get(t, fc.admin+"/metrics")
	return m
}

func TestFaultFragmentHostHangs(t *testing.T) {
	checkNoLeaks(t)
	hang := newFaultServer(t, hangUp)
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="http://` + hang.addr + `/f">ph</esi:include>]`),
	}))
	const wait = 100 * time.Millisecond
	fc := startFragcache(t, "--upstream", o.URL, "--wait", wait.String(), "--fetch-timeout", "1s", "--allow-host", hang.addr)
	base := healthyP99(t, fc.front+"/healthy")
	start := time.Now()
	st := hammer(t, fc.front+"/page", 60, 6, expect(t, 200, "[ph]"))
	requireAllAnswered(t, "hanging fragment host", st)
	withinBudget(t, "hanging fragment host", st, base, wait)
	t.Logf("hanging fragment host: %s; %d connections to it in %v", st, hang.conns.Load(), time.Since(start).Round(time.Millisecond))
	// The hung fetch is cut at --fetch-timeout, not left open.
	eventually(t, "the hung connection is closed", func() bool { return hang.openConns() == 0 })
}

func TestFaultPageHostHangs(t *testing.T) {
	checkNoLeaks(t)
	hang := newFaultServer(t, hangUp)
	const timeout = 300 * time.Millisecond
	fc := startFragcache(t, "--upstream", "http://"+hang.addr, "--upstream-timeout", timeout.String())
	st := hammer(t, fc.front+"/page", 20, 5, expect(t, 504, "upstream timed out"))
	requireAllAnswered(t, "hanging page host", st)
	if p := st.pct(99); p > timeout+slack {
		t.Errorf("504 p99 %v, want within --upstream-timeout %v + %v", p, timeout, slack)
	}
	if p := st.pct(0); p < timeout {
		t.Errorf("a 504 came after %v, before --upstream-timeout %v", p, timeout)
	}
	t.Logf("hanging page host: %s", st)
}

func TestFaultConnectionRefused(t *testing.T) {
	checkNoLeaks(t)
	dead := deadPort(t)
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="http://` + dead + `/f">ph</esi:include>]`),
	}))
	const wait = 100 * time.Millisecond
	fc := startFragcache(t, "--upstream", o.URL, "--wait", wait.String(), "--allow-host", dead)
	base := healthyP99(t, fc.front+"/healthy")
	st := hammer(t, fc.front+"/page", 60, 6, expect(t, 200, "[ph]"))
	requireAllAnswered(t, "refused fragment host", st)
	withinBudget(t, "refused fragment host", st, base, wait)
	t.Logf("refused fragment host: %s", st)
	if m := metricsText(t, fc); !strings.Contains(m, `result="connect_error"`) {
		t.Errorf("no connect_error fetch in the metrics:\n%s", grepLines(m, "fetches_total"))
	}

	// The page's own upstream refusing: 502 at once.
	fc2 := startFragcache(t, "--upstream", "http://"+dead)
	st = hammer(t, fc2.front+"/", 20, 5, expect(t, 502, "upstream unreachable"))
	requireAllAnswered(t, "refused page host", st)
	t.Logf("refused page host: %s", st)
}

func TestFaultResetMidBody(t *testing.T) {
	checkNoLeaks(t)
	rst := newFaultServer(t, func(c net.Conn, path string, _ <-chan struct{}) bool {
		ct := "text/html"
		if path == "/page" {
			ct += "\r\nSurrogate-Control: content=\"ESI/1.0\""
		} else if path == "/file" {
			ct = "application/octet-stream"
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: max-age=600\r\nContent-Length: 1000\r\n\r\n%s",
			ct, strings.Repeat("PARTIAL ", 12))
		time.Sleep(10 * time.Millisecond)
		reset(c)
		return false
	})
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="http://` + rst.addr + `/f">ph</esi:include>]`),
	}))
	const wait = time.Second // the page waits for the fetch to fail
	fc := startFragcache(t, "--upstream", o.URL, "--wait", wait.String(), "--allow-host", rst.addr)
	base := healthyP99(t, fc.front+"/healthy")
	st := hammer(t, fc.front+"/page", 40, 4, expect(t, 200, "[ph]"))
	requireAllAnswered(t, "fragment reset mid-body", st)
	withinBudget(t, "fragment reset mid-body", st, base, wait)
	t.Logf("fragment reset mid-body: %s; fetches reaching the host %d", st, rst.reqs.Load())

	// The page's own upstream resetting: an opted-in page is 502, never a
	// composition of half a page; a passed-through body ends short, so
	// the client sees the truncation.
	fc2 := startFragcache(t, "--upstream", "http://"+rst.addr)
	st = hammer(t, fc2.front+"/page", 10, 2, func(code int, body string) {
		if code != 502 || strings.Contains(body, "PARTIAL") {
			t.Errorf("page reset mid-body: %d %q, want 502", code, body)
		}
	})
	requireAllAnswered(t, "page reset mid-body", st)
	t.Logf("page reset mid-body: %s", st)
	for range 5 {
		code, body, err := fetchPage(context.Background(), fc2.front+"/file")
		if err == nil && len(body) == 1000 {
			t.Errorf("a passed-through body cut by a reset arrived whole-looking: %d, %d bytes", code, len(body))
		}
	}
}

func TestFaultShortBody(t *testing.T) {
	checkNoLeaks(t)
	var healed atomic.Bool
	short := newFaultServer(t, func(c net.Conn, path string, _ <-chan struct{}) bool {
		if healed.Load() {
			return writeFull(c, "whole")
		}
		switch path {
		case "/chunked": // no last chunk: the body never ends
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=600\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nPARTIAL \r\n")
		case "/page":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\nContent-Length: 100\r\n\r\nPARTIAL ")
		default: // Content-Length 100, 48 bytes sent
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=600\r\nContent-Length: 100\r\n\r\n%s",
				strings.Repeat("PARTIAL ", 6))
		}
		return false // FIN after the short body
	})
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="http://` + short.addr + `/cl">ph</esi:include>]` +
			`[<esi:include src="http://` + short.addr + `/chunked">ph</esi:include>]`),
	}))
	const wait = time.Second
	fc := startFragcache(t, "--upstream", o.URL, "--wait", wait.String(), "--allow-host", short.addr, "--stale-ttl", "1m")
	base := healthyP99(t, fc.front+"/healthy")
	var partial atomic.Int64
	noPartial := func(code int, body string) {
		if code != 200 || strings.Contains(body, "PARTIAL") {
			partial.Add(1)
		}
	}
	st := hammer(t, fc.front+"/page", 40, 4, noPartial)
	requireAllAnswered(t, "short fragment body", st)
	withinBudget(t, "short fragment body", st, base, wait)
	before := short.reqs.Load()
	healed.Store(true)
	healStart := time.Now()
	for {
		_, body, err := fetchPage(context.Background(), fc.front+"/page")
		if err == nil && body == "[whole][whole]" {
			break
		}
		if err == nil {
			noPartial(200, body)
		}
		if time.Since(healStart) > 10*time.Second {
			t.Fatalf("fragments not whole 10s after the host healed: %q %v", body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	healTime := time.Since(healStart)
	st2 := hammer(t, fc.front+"/page", 20, 4, noPartial)
	requireAllAnswered(t, "short fragment body, healed", st2)
	if n := partial.Load(); n > 0 {
		t.Errorf("%d answers carried a truncated fragment or failed", n)
	}
	t.Logf("short fragment body: %s; truncated answers 0 of %d; %d fetches during the fault; whole %v after the host healed",
		st, st.answered+st2.answered, before, healTime.Round(time.Millisecond))

	// A page whose own body is short is 502, never composed.
	healed.Store(false)
	fc2 := startFragcache(t, "--upstream", "http://"+short.addr)
	st = hammer(t, fc2.front+"/page", 10, 2, func(code int, body string) {
		if code != 502 || strings.Contains(body, "PARTIAL") {
			t.Errorf("short page: %d %q, want 502", code, body)
		}
	})
	requireAllAnswered(t, "short page body", st)
	t.Logf("short page body: %s", st)
}

func TestFaultSlowDrip(t *testing.T) {
	checkNoLeaks(t)
	drip := func(c net.Conn, head string, every time.Duration, stop <-chan struct{}) {
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n%sContent-Length: 100\r\n\r\n", head)
		for range 100 {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}
	slow := newFaultServer(t, func(c net.Conn, path string, stop <-chan struct{}) bool {
		if path == "/page" { // a page pausing longer than --upstream-timeout
			drip(c, "Content-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\n", time.Second, stop)
		} else { // a fragment taking 5 s in steps of 50 ms
			drip(c, "Content-Type: text/html\r\nCache-Control: max-age=600\r\n", 50*time.Millisecond, stop)
		}
		return false
	})
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="http://` + slow.addr + `/f">ph</esi:include>]`),
	}))
	const wait = 100 * time.Millisecond
	fc := startFragcache(t, "--upstream", o.URL, "--wait", wait.String(), "--fetch-timeout", "500ms", "--allow-host", slow.addr)
	base := healthyP99(t, fc.front+"/healthy")
	start := time.Now()
	st := hammer(t, fc.front+"/page", 40, 4, expect(t, 200, "[ph]"))
	requireAllAnswered(t, "dripping fragment", st)
	withinBudget(t, "dripping fragment", st, base, wait)
	eventually(t, "the dripping fetch is cut", func() bool { return slow.openConns() == 0 })
	cut := time.Since(start)
	if m := metricsText(t, fc); !strings.Contains(m, `result="timeout"`) {
		t.Errorf("no timeout fetch in the metrics:\n%s", grepLines(m, "fetches_total"))
	}
	t.Logf("dripping fragment: %s; %d fetches; no connection left open %v after the first request (5 s drip, --fetch-timeout 500ms)",
		st, slow.reqs.Load(), cut.Round(time.Millisecond))

	const timeout = 300 * time.Millisecond
	fc2 := startFragcache(t, "--upstream", "http://"+slow.addr, "--upstream-timeout", timeout.String())
	st = hammer(t, fc2.front+"/page", 4, 2, func(code int, _ string) {
		if code != 502 && code != 504 {
			t.Errorf("a page pausing longer than --upstream-timeout answered %d, want 502 or 504", code)
		}
	})
	requireAllAnswered(t, "dripping page", st)
	if p := st.pct(100); p > timeout+slack {
		t.Errorf("dripping page answered after %v, want within --upstream-timeout %v + %v", p, timeout, slack)
	}
	t.Logf("dripping page (1 byte/s, --upstream-timeout 300ms): %s", st)
}

func TestFault5xxBurstThenRecovery(t *testing.T) {
	checkNoLeaks(t)
	var healthy atomic.Bool
	var mu sync.Mutex
	var hits []time.Duration // when each fetch reached the host, since start
	start := time.Now()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, time.Since(start))
		mu.Unlock()
		if !healthy.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		io.WriteString(w, "b")
	}))
	t.Cleanup(broken.Close)
	host := strings.TrimPrefix(broken.URL, "http://")
	const n = 20
	var page strings.Builder
	for i := range n {
		fmt.Fprintf(&page, `<esi:include src="%s/b/%d">.</esi:include>`, broken.URL, i)
	}
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{"/page": esiPage(page.String())}))
	const wait = 300 * time.Millisecond
	fc := startFragcache(t, "--upstream", o.URL, "--wait", wait.String(), "--allow-host", host)
	base := healthyP99(t, fc.front+"/healthy")

	// The outage: the page asked every 25 ms for 2.5 s.
	start = time.Now()
	st := &loadStats{codes: map[int]int{}}
	for time.Since(start) < 2500*time.Millisecond {
		t0 := time.Now()
		code, _, err := fetchPage(context.Background(), fc.front+"/page")
		st.sent++
		if err == nil {
			st.answered++
			st.codes[code]++
			st.lat = append(st.lat, time.Since(t0))
		}
		time.Sleep(25 * time.Millisecond)
	}
	slices.Sort(st.lat)
	requireAllAnswered(t, "5xx burst", st)
	withinBudget(t, "5xx burst", st, base, wait)
	mu.Lock()
	outage := slices.Clone(hits)
	mu.Unlock()
	// The first page starts all n fetches at once; after it, each
	// fragment backs off on its own (1 s, then 2 s, less up to a fifth):
	// at most two more fetches per fragment in this window. A 5xx is an
	// answer, not a sign the host is unreachable, so the host's breaker
	// stays closed (DESIGN rule 9: a visitor who makes one URL fail must
	// not stop the healthy fragments of the same host).
	first, later := 0, 0
	for _, h := range outage {
		if h < 500*time.Millisecond {
			first++
		} else {
			later++
		}
	}
	if first > n || later > 2*n {
		t.Errorf("the failing host got %d fetches at first and %d more over 2 s, want at most %d and %d (per-fragment backoff)", first, later, n, 2*n)
	}
	m := metricsText(t, fc)
	for _, l := range strings.Split(grepLines(m, `result="denied"`), "\n") {
		if l != "" && !strings.HasSuffix(l, " 0") {
			t.Errorf("5xx answers opened the host's breaker: %s", l)
		}
	}

	// Recovery.
	healthy.Store(true)
	healStart := time.Now()
	want := strings.Repeat("b", n)
	for {
		_, body, err := fetchPage(context.Background(), fc.front+"/page")
		if err == nil && body == want {
			break
		}
		if time.Since(healStart) > 15*time.Second {
			t.Fatalf("page not whole 15 s after the host healed: %q %v", body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("5xx burst: %s; host hits during the 2.5 s outage: %d at first, %d later; page whole %v after the host healed",
		st, first, later, time.Since(healStart).Round(time.Millisecond))
}

func TestFaultThunderingHerdAtExpiry(t *testing.T) {
	checkNoLeaks(t)
	var version atomic.Int64
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="/f">ph</esi:include>]`),
		"/f": func(w http.ResponseWriter, r *http.Request) {
			v := version.Add(1)
			w.Header().Set("Cache-Control", "max-age=1")
			if v > 1 {
				time.Sleep(200 * time.Millisecond) // the refresh outlasts the herd's first wave
				w.Header().Set("Cache-Control", "max-age=600")
			}
			fmt.Fprintf(w, "v%d", v)
		},
	}))
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s", "--stale-ttl", "1m")
	// The baseline is a herd too: the same 1 000 requests, 100 at a time,
	// on a page whose fragment is fresh.
	get(t, fc.front+"/healthy")
	hb := hammer(t, fc.front+"/healthy", 1000, 100, expect(t, 200, "[ok]"))
	requireAllAnswered(t, "healthy herd", hb)
	t.Logf("healthy herd baseline: %s", hb)
	base := hb.pct(99)
	if _, body := get(t, fc.front+"/page"); body != "[v1]" {
		t.Fatalf("first view %q", body)
	}
	time.Sleep(1100 * time.Millisecond) // past the fragment's TTL
	before := o.count("/f")
	var once sync.Once
	st := hammer(t, fc.front+"/page", 1000, 100, func(code int, body string) {
		if code != 200 || (body != "[v1]" && body != "[v2]") {
			once.Do(func() { t.Errorf("herd answer %d %q, want 200 [v1] or [v2]", code, body) })
		}
	})
	requireAllAnswered(t, "herd", st)
	// Stale copies are never awaited: the wait budget does not apply.
	withinBudget(t, "herd", st, base, 0)
	eventually(t, "the refresh is served", func() bool {
		_, body := get(t, fc.front+"/page")
		return body == "[v2]"
	})
	if n := o.count("/f") - before; n != 1 {
		t.Errorf("1000 requests after expiry made %d fetches, want 1", n)
	}
	t.Logf("herd at expiry: %s; refresh fetches %d", st, o.count("/f")-before)
}

func TestFaultKeepAliveRace(t *testing.T) {
	checkNoLeaks(t)
	var page, fragment atomic.Int64
	o := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			page.Add(1)
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			io.WriteString(w, `[<esi:include src="/f">ph</esi:include>]`)
		case "/f":
			fragment.Add(1)
			w.Header().Set("Cache-Control", "no-store") // fetched for every page
			io.WriteString(w, "f")
		}
	}))
	// The upstream closes connections idle for 50 ms, far sooner than
	// fragcache's clients give up on them.
	o.Config.IdleTimeout = 50 * time.Millisecond
	o.Start()
	t.Cleanup(o.Close)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	st := &loadStats{codes: map[int]int{}}
	bad := 0
	for i := range 60 {
		// Pauses around the upstream's idle timeout: before it, at it and
		// past it.
		time.Sleep(time.Duration(i%7) * 15 * time.Millisecond)
		t0 := time.Now()
		code, body, err := fetchPage(context.Background(), fc.front+"/")
		st.sent++
		if err != nil {
			continue
		}
		st.answered++
		st.codes[code]++
		st.lat = append(st.lat, time.Since(t0))
		if code != 200 || body != "[f]" {
			if bad++; bad <= 3 {
				t.Errorf("request %d: %d %q, want 200 [f]", i, code, body)
			}
		}
	}
	slices.Sort(st.lat)
	requireAllAnswered(t, "keep-alive race", st)
	if bad > 0 {
		t.Errorf("%d of %d pages lost to connections the upstream closed", bad, st.sent)
	}
	t.Logf("keep-alive race: %s; failed pages %d; upstream saw %d pages, %d fragments", st, bad, page.Load(), fragment.Load())
}

func TestFaultPoolExhaustion(t *testing.T) {
	checkNoLeaks(t)
	var inFlight, maxInFlight, started atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "s")
	}))
	t.Cleanup(slow.Close)
	host := strings.TrimPrefix(slow.URL, "http://")
	const pages, per = 10, 100 // 1 000 distinct fragments
	routes := map[string]http.HandlerFunc{}
	for p := range pages {
		var b strings.Builder
		for i := range per {
			fmt.Fprintf(&b, `<esi:include src="%s/s/%d">.</esi:include>`, slow.URL, p*per+i)
		}
		routes[fmt.Sprintf("/p%d", p)] = esiPage(b.String())
	}
	o := newOrigin(t, healthyRoutes(routes))
	const wait = 100 * time.Millisecond
	fc := startFragcache(t, "--upstream", o.URL, "--wait", wait.String(), "--allow-host", host,
		"--fetch-concurrency", "64", "--fetch-per-host", "16", "--fetch-timeout", "2s")
	base := healthyP99(t, fc.front+"/healthy")

	var wg sync.WaitGroup
	stats := make([]*loadStats, pages)
	for p := range pages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stats[p] = hammer(t, fc.front+fmt.Sprintf("/p%d", p), 3, 1, func(code int, body string) {
				if code != 200 || len(body) < per {
					t.Errorf("page %d: %d, %d bytes", p, code, len(body))
				}
			})
		}()
	}
	// A healthy page keeps its latency while the pool is exhausted.
	healthy := hammer(t, fc.front+"/healthy", 30, 3, expect(t, 200, "[ok]"))
	wg.Wait()
	all := &loadStats{codes: map[int]int{}}
	for _, s := range stats {
		all.sent += s.sent
		all.answered += s.answered
		all.lat = append(all.lat, s.lat...)
		for c, n := range s.codes {
			all.codes[c] += n
		}
	}
	slices.Sort(all.lat)
	requireAllAnswered(t, "1000 slow fragments", all)
	requireAllAnswered(t, "healthy page during exhaustion", healthy)
	withinBudget(t, "1000 slow fragments", all, base, wait)
	withinBudget(t, "healthy page during exhaustion", healthy, base, 0)
	if m := maxInFlight.Load(); m > 16 {
		t.Errorf("%d fetches at once on one host, want at most --fetch-per-host 16", m)
	}
	t.Logf("1000 slow fragments: pages %s; healthy page meanwhile %s; fetches started %d, at most %d at once (--fetch-per-host 16, --fetch-concurrency 64)",
		all, healthy, started.Load(), maxInFlight.Load())
}

func TestFaultClientAbortsWhileWaiting(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="/f">ph</esi:include>]`),
		"/f":    frag("done", 500*time.Millisecond, "max-age=600"),
	}))
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "2s")
	base := healthyP99(t, fc.front+"/healthy")
	var wg sync.WaitGroup
	var aborted atomic.Int64
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if _, _, err := fetchPage(ctx, fc.front+"/page"); err != nil {
				aborted.Add(1)
			}
		}()
	}
	wg.Wait()
	if aborted.Load() != 10 {
		t.Fatalf("%d of 10 clients aborted, want all", aborted.Load())
	}
	eventually(t, "the fetch reaches the origin", func() bool { return o.count("/f") == 1 })
	time.Sleep(600 * time.Millisecond) // the fetch completes meanwhile
	st := hammer(t, fc.front+"/page", 20, 2, expect(t, 200, "[done]"))
	requireAllAnswered(t, "after aborts", st)
	withinBudget(t, "after aborts", st, base, 0)
	if n := o.count("/f"); n != 1 {
		t.Errorf("fragment fetched %d times, want 1: the aborted clients' fetch should have been stored", n)
	}
	t.Logf("client aborts: 10 clients gave up after 100 ms; the next 20 pages %s; fragment fetches %d", st, o.count("/f"))
}

func TestFaultCachePressure(t *testing.T) {
	checkNoLeaks(t)
	pad := strings.Repeat("x", 1000)
	fragBody := func(n string) string { return "{" + n + ":" + pad + "}" }
	const pages, per = 40, 250 // 10 000 distinct fragments of about 1 KiB
	routes := map[string]http.HandlerFunc{
		"/c/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=600")
			io.WriteString(w, fragBody(strings.TrimPrefix(r.URL.Path, "/c/")))
		},
	}
	for p := range pages {
		var b strings.Builder
		for i := range per {
			fmt.Fprintf(&b, `<esi:include src="/c/%d">.</esi:include>`, p*per+i)
		}
		routes[fmt.Sprintf("/p%d", p)] = esiPage(b.String())
	}
	o := newOrigin(t, healthyRoutes(routes))
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--cache-size", "1MiB", "--max-includes", "256")
	var filled, placeholders, wrong atomic.Int64
	check := func(p int) func(int, string) {
		return func(code int, body string) {
			if code != 200 {
				wrong.Add(1)
				return
			}
			for i := range per {
				switch want := fragBody(fmt.Sprint(p*per + i)); {
				case strings.HasPrefix(body, want):
					filled.Add(1)
					body = body[len(want):]
				case strings.HasPrefix(body, "."):
					placeholders.Add(1)
					body = body[1:]
				default:
					wrong.Add(1)
					return
				}
			}
			if body != "" {
				wrong.Add(1)
			}
		}
	}
	start := time.Now()
	all := &loadStats{codes: map[int]int{}}
	for round := range 2 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for p := range pages {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := hammer(t, fc.front+fmt.Sprintf("/p%d", p), 1, 1, check(p))
				mu.Lock()
				all.sent += s.sent
				all.answered += s.answered
				all.lat = append(all.lat, s.lat...)
				for c, n := range s.codes {
					all.codes[c] += n
				}
				mu.Unlock()
			}()
			if p%4 == 3 {
				wg.Wait() // four pages at a time
			}
		}
		wg.Wait()
		_ = round
	}
	slices.Sort(all.lat)
	requireAllAnswered(t, "cache pressure", all)
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d pages were neither complete nor placeholders", n)
	}
	m := metricsText(t, fc)
	t.Logf("cache pressure (--cache-size 1MiB, 10 000 fragments of 1 KiB, 80 pages in %v): %s; includes filled %d, placeholders %d; %s",
		time.Since(start).Round(time.Millisecond), all, filled.Load(), placeholders.Load(),
		strings.ReplaceAll(grepLines(m, "fragcache_cache_"), "\n", "; "))
}

func TestFaultSIGTERMUnderLoad(t *testing.T) {
	checkNoLeaks(t)
	var arrived atomic.Int64
	release := make(chan struct{})
	o := newOrigin(t, healthyRoutes(map[string]http.HandlerFunc{
		"/page": func(w http.ResponseWriter, r *http.Request) {
			arrived.Add(1)
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
			esiPage(`[<esi:include src="/ok"/>]`)(w, r)
		},
	}))
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--drain-delay", "300ms", "--shutdown-timeout", "5s")
	get(t, fc.front+"/healthy") // the fragment is cached
	const inFlight = 50
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := fetchPage(context.Background(), fc.front+"/page")
			if err == nil && code == 200 && body == "[ok]" {
				ok.Add(1)
			} else {
				failed.Add(1)
				t.Errorf("in-flight request: %d %q %v", code, body, err)
			}
		}()
	}
	eventually(t, "every request reaches the upstream", func() bool { return arrived.Load() == inFlight })
	stopped := make(chan time.Duration, 1)
	t0 := time.Now()
	go func() { fc.stop(); stopped <- time.Since(t0) }() // SIGTERM: run's context ends
	// During the drain delay new requests are still served.
	time.Sleep(50 * time.Millisecond)
	code, body, err := fetchPage(context.Background(), fc.front+"/healthy")
	if err != nil || code != 200 || body != "[ok]" {
		t.Errorf("a request during the drain delay: %d %q %v", code, body, err)
	}
	close(release)
	wg.Wait()
	took := <-stopped
	if ok.Load() != inFlight {
		t.Errorf("%d of %d in-flight requests answered 200", ok.Load(), inFlight)
	}
	t.Logf("SIGTERM under load: %d of %d in-flight requests answered 200, %d failed; run returned nil %v after the signal",
		ok.Load(), inFlight, failed.Load(), took.Round(time.Millisecond))
}

// A stop that comes right after start (SIGTERM during start-up, or an
// admin listener that fails at once) must still close the front
// listener: run returns only when nothing serves any more.
func TestStopRightAfterStartClosesFront(t *testing.T) {
	checkNoLeaks(t)
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		var front string
		err := runWith(ctx, []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--drain-delay", "0",
			"--access-log=false", "--upstream", "http://127.0.0.1:9"}, func(string) string { return "" }, io.Discard, io.Discard,
			hooks{ready: func(f, _ net.Addr) { front = f.String(); cancel() }})
		cancel()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if c, err := net.DialTimeout("tcp", front, time.Second); err == nil {
			c.Close()
			t.Fatalf("run %d returned but its front listener %s still accepts connections", i, front)
		}
	}
}

// TestStopCutsSlowAdminRequests: an admin request still running when the
// shutdown timeout ends (here a 10 s CPU profile) is cut, not left to run
// after run has returned.
func TestStopCutsSlowAdminRequests(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--drain-delay", "0",
			"--access-log=false", "--pprof", "--shutdown-timeout", "300ms", "--upstream", "http://127.0.0.1:9"},
			func(string) string { return "" }, io.Discard, io.Discard,
			hooks{ready: func(_, a net.Addr) { addrs <- a }})
	}()
	var admin net.Addr
	select {
	case admin = <-addrs:
	case err := <-done:
		t.Fatalf("fragcache did not start: %v", err)
	}
	profile := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + admin.String() + "/debug/pprof/profile?seconds=10")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		profile <- err
	}()
	// The profile request must be in the server before the stop; nothing
	// signals that, so give it a moment.
	time.Sleep(300 * time.Millisecond)
	stopped := time.Now()
	cancel()
	select {
	case <-done: // an error saying the admin shutdown timed out is expected
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return within 5s")
	}
	select {
	case <-profile:
		t.Logf("the profile request ended %v after the stop", time.Since(stopped).Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		t.Fatal("the profile request still runs 3s after the stop")
	}
}

// Pooled connections and framing (DESIGN.md, precise rules 13 and 20).
//
// The origins below are raw sockets: every answer's body names its own
// request, so an answer handed to the wrong request shows at once.

// stolen is a whole answer that an upstream connection out of step hands
// to the next request sent on it: its body names no request.
const stolen = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=600\r\nContent-Length: 8\r\n\r\n=STOLEN="

// own is the body stepOrigin answers path with.
func own(path string) string { return "=" + path + "=" }

// newStepOrigin starts a raw upstream whose answers name their request
// (own). The path's first segment chooses a fault:
//
//	/late/...       the answer, then 10 ms later, while the connection is
//	                idle, a whole extra answer (stolen);
//	/short/...      a Content-Length counting only the named body: four
//	                more bytes follow in the same write, stolen 2 ms later;
//	/nocontent/...  204, then stolen 2 ms later as its body;
//	HEAD            the named body's head, then stolen 2 ms later as its
//	                body.
//
// Anything else gets its answer alone. The connection stays open.
func newStepOrigin(t *testing.T) *faultServer {
	t.Helper()
	return newRawOrigin(t, func(c net.Conn, method, path string, stop <-chan struct{}) bool {
		body := own(path)
		head := func(status string, n int) string {
			return fmt.Sprintf("HTTP/1.1 %s\r\nContent-Type: text/html\r\nCache-Control: max-age=600\r\nContent-Length: %d\r\n\r\n", status, n)
		}
		send := func(b string) bool {
			_, err := io.WriteString(c, b)
			return err == nil
		}
		later := func(d time.Duration, b string) bool {
			select {
			case <-time.After(d):
			case <-stop:
				return false
			}
			return send(b)
		}
		switch {
		case method == "HEAD":
			return send(head("200 OK", len(body))) && later(2*time.Millisecond, stolen)
		case strings.HasPrefix(path, "/late/"):
			return send(head("200 OK", len(body))+body) && later(10*time.Millisecond, stolen)
		case strings.HasPrefix(path, "/short/"):
			return send(head("200 OK", len(body))+body+"JUNK") && later(2*time.Millisecond, stolen)
		case strings.HasPrefix(path, "/nocontent/"):
			return send("HTTP/1.1 204 No Content\r\nCache-Control: max-age=600\r\n\r\n") && later(2*time.Millisecond, stolen)
		}
		return send(head("200 OK", len(body)) + body)
	})
}

// newIncludeOrigin serves /p/PATH as an opted-in page holding the
// fragment http://host/PATH between brackets.
func newIncludeOrigin(t *testing.T, host string) *origin {
	t.Helper()
	return newOrigin(t, map[string]http.HandlerFunc{
		"/p/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
			fmt.Fprintf(w, `[<esi:include src="http://%s%s">ph</esi:include>]`, host, strings.TrimPrefix(r.URL.Path, "/p"))
		},
	})
}

// doRequest sends method url, with header pairs hdr, and reads the whole
// answer.
func doRequest(method, url string, hdr ...string) (int, string, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestPooledConnStaysInStep: an upstream answer followed by bytes it did
// not declare (a late surplus while the connection is idle, a
// Content-Length smaller than the body, a body on HEAD or 204) must not
// become the answer to the next request on that pooled connection, for
// the page client and for the fragment clients.
func TestPooledConnStaysInStep(t *testing.T) {
	checkNoLeaks(t)
	up := newStepOrigin(t)
	pages := newIncludeOrigin(t, up.addr)
	page := startFragcache(t, "--upstream", "http://"+up.addr)
	frag := startFragcache(t, "--upstream", pages.URL, "--allow-host", up.addr, "--wait", "2s")
	tests := []struct {
		name, method string
		fc           *instance
		path, want   string
		frag         bool
	}{
		{"page/late surplus", "GET", page, "/late/1", own("/late/1"), false},
		{"page/Content-Length smaller than the body", "GET", page, "/short/1", own("/short/1"), false},
		{"page/body on HEAD", "HEAD", page, "/head/1", "", false},
		{"fragment/late surplus", "GET", frag, "/p/late/2", "[" + own("/late/2") + "]", true},
		{"fragment/Content-Length smaller than the body", "GET", frag, "/p/short/2", "[" + own("/short/2") + "]", true},
		{"fragment/body on 204", "GET", frag, "/p/nocontent/2", "[]", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dials := up.conns.Load()
			code, body, err := doRequest(tc.method, tc.fc.front+tc.path)
			if err != nil || code != 200 || body != tc.want {
				t.Fatalf("%s %s: %d %q %v, want 200 %q", tc.method, tc.path, code, body, err, tc.want)
			}
			// The surplus arrives while the connection sits idle.
			time.Sleep(30 * time.Millisecond)
			for j := range 5 {
				p := fmt.Sprintf("/ok/%d-%d", i, j)
				want := own(p)
				if tc.frag {
					p, want = "/p"+p, "["+want+"]"
				}
				code, body, err := doRequest("GET", tc.fc.front+p)
				if err != nil || code != 200 || body != want {
					t.Errorf("request %d after the fault: %d %q %v, want 200 %q", j, code, body, err, want)
				}
			}
			t.Logf("%s: the 5 requests after it got their own answers; %d new upstream connections", tc.name, up.conns.Load()-dials)
		})
	}
}

// TestPooledConnFollowUp1000: 1 000 page requests and 1 000 fragment
// fetches, 8 at a time, one in ten answered with a Content-Length smaller
// than its body (surplus in the same write, and a whole stolen answer
// 2 ms later): every answer is its own request's.
func TestPooledConnFollowUp1000(t *testing.T) {
	checkNoLeaks(t)
	up := newStepOrigin(t)
	pages := newIncludeOrigin(t, up.addr)
	page := startFragcache(t, "--upstream", "http://"+up.addr)
	frag := startFragcache(t, "--upstream", pages.URL, "--allow-host", up.addr, "--wait", "2s")
	for _, run := range []struct {
		name string
		fc   *instance
		frag bool
	}{{"page", page, false}, {"fragment", frag, true}} {
		const n, conc = 1000, 8
		var next, wrong, stolenSeen, failed atomic.Int64
		dials := up.conns.Load()
		start := time.Now()
		var wg sync.WaitGroup
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > n {
						return
					}
					p := fmt.Sprintf("/ok/%d", i)
					if i%10 == 0 {
						p = fmt.Sprintf("/short/%d", i)
					}
					want := own(p)
					if run.frag {
						p, want = "/p"+p, "["+want+"]"
					}
					code, body, err := doRequest("GET", run.fc.front+p)
					switch {
					case err != nil || code != 200:
						if failed.Add(1) <= 3 {
							t.Errorf("%s %s: %d %q %v", run.name, p, code, body, err)
						}
					case body != want:
						if strings.Contains(body, "STOLEN") {
							stolenSeen.Add(1)
						}
						if wrong.Add(1) <= 3 {
							t.Errorf("%s %s: answered %q, want %q", run.name, p, body, want)
						}
					}
				}
			}()
		}
		wg.Wait()
		if w := wrong.Load(); w > 0 {
			t.Errorf("%s: %d of %d answers were another request's (%d the stolen one)", run.name, w, n, stolenSeen.Load())
		}
		t.Logf("%s: %d requests in %v: %d another request's answer, %d failed; %d upstream connections",
			run.name, n, time.Since(start).Round(time.Millisecond), wrong.Load(), failed.Load(), up.conns.Load()-dials)
	}
}

// startFragcacheLogged is startFragcache that also returns fragcache's
// log.
func startFragcacheLogged(t *testing.T, args ...string) (*instance, *lockedBuffer) {
	t.Helper()
	base := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--drain-delay", "0",
		"--access-log=false", "--shutdown-timeout", "5s"}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	logs := &lockedBuffer{}
	go func() {
		done <- runWith(ctx, append(base, args...), func(string) string { return "" }, io.Discard, logs,
			hooks{ready: func(f, a net.Addr) { addrs <- [2]net.Addr{f, a} }})
	}()
	in := &instance{}
	select {
	case a := <-addrs:
		in.front, in.admin = "http://"+a[0].String(), "http://"+a[1].String()
	case err := <-done:
		cancel()
		t.Fatalf("fragcache did not start: %v\n%s", err, logs.String())
	}
	in.stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("fragcache did not stop within 15s")
		}
	}
	t.Cleanup(in.stop)
	return in, logs
}

// TestMalformedUpstreamAnswers: an answer with both Transfer-Encoding and
// Content-Length, a malformed first chunk, a status that is not three
// digits, or bare-LF line ends is a 502 saying "malformed upstream
// response" at once (a log line says so too) for a page; for a fragment
// the fetch fails as status_error and the page is served.
func TestMalformedUpstreamAnswers(t *testing.T) {
	checkNoLeaks(t)
	answers := map[string]string{
		"/both-lengths":     "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"/bad-first-chunk":  "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
		"/status-2-digits":  "HTTP/1.1 20 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok",
		"/status-4-digits":  "HTTP/1.1 2000 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nok",
		"/bare-lf":          "HTTP/1.1 200 OK\nContent-Type: text/html\nContent-Length: 2\n\nok",
		"/bare-lf-one-line": "HTTP/1.1 200 OK\r\nContent-Type: text/html\nContent-Length: 2\r\n\r\nok",
	}
	up := newFaultServer(t, func(c net.Conn, path string, _ <-chan struct{}) bool {
		_, err := io.WriteString(c, answers[path])
		return err == nil // the connection stays open, as a keep-alive upstream's would
	})
	fc, logs := startFragcacheLogged(t, "--upstream", "http://"+up.addr, "--upstream-timeout", "3s")
	pages := newIncludeOrigin(t, up.addr)
	fc2 := startFragcache(t, "--upstream", pages.URL, "--allow-host", up.addr, "--wait", "5s", "--fetch-timeout", "3s")
	paths := slices.Sorted(maps.Keys(answers))
	var slowest time.Duration
	for _, p := range paths {
		t.Run("page"+p, func(t *testing.T) {
			t0 := time.Now()
			code, body, err := doRequest("GET", fc.front+p)
			d := time.Since(t0)
			if err != nil || code != 502 || body != "malformed upstream response" {
				t.Errorf("%d %q %v, want 502 %q", code, body, err, "malformed upstream response")
			}
			if d > time.Second {
				t.Errorf("answered after %v, want at once", d)
			}
			slowest = max(slowest, d)
			eventually(t, "the log line", func() bool {
				for _, l := range strings.Split(logs.String(), "\n") {
					if strings.Contains(l, `"msg":"malformed upstream response"`) && strings.Contains(l, `"path":"`+p+`"`) {
						return true
					}
				}
				return false
			})
		})
		t.Run("fragment"+p, func(t *testing.T) {
			t0 := time.Now()
			code, body, err := doRequest("GET", fc2.front+"/p"+p)
			d := time.Since(t0)
			if err != nil || code != 200 || body != "[ph]" {
				t.Errorf("%d %q %v, want 200 [ph]", code, body, err)
			}
			if d > time.Second {
				t.Errorf("answered after %v, want at once", d)
			}
			slowest = max(slowest, d)
		})
	}
	m := metricsText(t, fc2)
	var statusErrors int
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "fragcache_fragment_fetches_total{") && strings.Contains(l, `result="status_error"`) {
			var v int
			fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
			statusErrors += v
		}
	}
	if statusErrors != len(answers) {
		t.Errorf("%d fetches counted status_error, want %d:\n%s", statusErrors, len(answers), grepLines(m, "fetches_total"))
	}
	t.Logf("%d malformed answers: pages 502, fragments status_error (%d) with the page served; slowest answer %v",
		len(answers), statusErrors, slowest.Round(time.Microsecond))
}

// TestBareLFRequestAnsweredAtOnce: a request whose head ends in a bare-LF
// blank line gets a 400 and a closed connection at once, not when the
// read timeout ends; on a new connection and on a kept-alive one.
func TestBareLFRequestAnsweredAtOnce(t *testing.T) {
	checkNoLeaks(t)
	o := newOrigin(t, map[string]http.HandlerFunc{"/": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }})
	fc := startFragcache(t, "--upstream", o.URL, "--read-timeout", "10s")
	addr := strings.TrimPrefix(fc.front, "http://")
	const clean = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	tests := []struct{ name, before, raw string }{
		{"every line", "", "GET / HTTP/1.1\nHost: x\n\n"},
		{"POST with a body", "", "POST / HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc"},
		{"blank line LF CRLF", "", "GET / HTTP/1.1\r\nHost: x\n\r\n"},
		{"after a clean request on the same connection", clean, "GET / HTTP/1.1\nHost: x\n\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			br := bufio.NewReader(c)
			if tc.before != "" {
				io.WriteString(c, tc.before)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("the clean request: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			t0 := time.Now()
			io.WriteString(c, tc.raw)
			resp, err := http.ReadResponse(br, nil)
			d := time.Since(t0)
			if err != nil {
				t.Fatalf("no answer after %v: %v", d.Round(time.Millisecond), err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
			if d > time.Second {
				t.Errorf("answered after %v, want at once", d)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("the connection stayed open after the 400: %v", err)
			}
			t.Logf("%s: 400 after %v, connection closed", tc.name, d.Round(time.Microsecond))
		})
	}
}
