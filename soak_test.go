//go:build soak

package main

// The soak: fragcache in-process against loopback origins with a realistic
// fragment mix, for FRAGCACHE_SOAK (default 5m). Not part of go test ./...;
// run it with
//
//	go test -tags soak -run TestSoak -timeout 20m -v .
//
// It reports page latency against a healthy baseline phase, requests lost,
// and goroutines, open files and RSS before and after, and fails on a lost
// request, a user's fragment served to another, or a leak.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rssBytes reads the process's resident set size.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// heapInUse returns the bytes of heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// soakPhase drives workers against pages until the deadline and records
// latencies; pick chooses the page and the user of each request.
func soakPhase(t *testing.T, front string, workers int, until time.Time, pick func(r *rand.Rand) (path, user string)) (*loadStats, int64) {
	t.Helper()
	st := &loadStats{codes: map[int]int{}}
	var mu sync.Mutex
	var leaks atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for time.Now().Before(until) {
				path, user := pick(r)
				req, _ := http.NewRequest("GET", front+path, nil)
				if user != "" {
					req.Header.Set("Cookie", "user="+user)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				resp, err := client.Do(req.WithContext(ctx))
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				d := time.Since(t0)
				cancel()
				mu.Lock()
				st.sent++
				if err != nil {
					if len(st.errs) < 5 {
						st.errs = append(st.errs, err)
					}
				} else {
					st.answered++
					st.codes[resp.StatusCode]++
					st.lat = append(st.lat, d)
				}
				mu.Unlock()
				if err == nil {
					// A personalised fragment names its user; no other
					// user's name may appear.
					for i := range 8 {
						if u := fmt.Sprintf("u%d", i); u != user && strings.Contains(string(body), "me:"+u+";") {
							leaks.Add(1)
						}
					}
				}
				time.Sleep(time.Duration(r.IntN(5)) * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	slices.Sort(st.lat)
	return st, leaks.Load()
}

func TestSoak(t *testing.T) {
	dur := 5 * time.Minute
	if s := os.Getenv("FRAGCACHE_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("FRAGCACHE_SOAK=%q: %v", s, err)
		}
		dur = d
	}
	baseDur := min(30*time.Second, dur/10)
	checkNoLeaks(t)
	runtime.GC()
	g0, fd0, rss0, heap0 := runtime.NumGoroutine(), openFiles(t), rssBytes(t), heapInUse()

	var fails atomic.Int64
	routes := map[string]http.HandlerFunc{
		"/healthy": esiPage(`<h1>home</h1>[<esi:include src="/f/fast/0"/>][<esi:include src="/f/fast/1"/>]`),
		"/f/fast/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=5")
			io.WriteString(w, "fast:"+r.URL.Path)
		},
		"/f/slow/": func(w http.ResponseWriter, r *http.Request) {
			select { // 100 ms to 1.2 s
			case <-time.After(time.Duration(100+rand.IntN(1100)) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
			w.Header().Set("Cache-Control", "max-age=10")
			io.WriteString(w, "slow:"+r.URL.Path)
		},
		"/f/flaky/": func(w http.ResponseWriter, r *http.Request) {
			if rand.IntN(2) == 0 {
				fails.Add(1)
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Cache-Control", "max-age=3")
			io.WriteString(w, "flaky:"+r.URL.Path)
		},
		"/f/me": func(w http.ResponseWriter, r *http.Request) {
			name := "anon"
			if c, err := r.Cookie("user"); err == nil {
				name = c.Value
			}
			w.Header().Set("Cache-Control", "private, max-age=20")
			io.WriteString(w, "me:"+name+";")
		},
	}
	// 50 pages, each with two fast, one slow, one flaky and the
	// personalised fragment, drawn from 200 distinct fragments of each kind.
	for p := range 50 {
		routes[fmt.Sprintf("/page/%d", p)] = esiPage(fmt.Sprintf(
			`<h1>page %d</h1>[<esi:include src="/f/fast/%d"/>][<esi:include src="/f/fast/%d"/>]`+
				`[<esi:include src="/f/slow/%d">loading</esi:include>][<esi:include src="/f/flaky/%d" onerror="continue"/>]`+
				`[<esi:include src="/f/me">hello</esi:include>]`, p, p%200, (p*7)%200, (p*3)%200, (p*11)%200))
	}
	// Not newOrigin: it keeps every request it saw, which a soak would
	// count as fragcache's memory.
	mux := http.NewServeMux()
	for p, h := range routes {
		mux.HandleFunc(p, h)
	}
	o := httptest.NewServer(mux)
	t.Cleanup(o.Close)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--stale-ttl", "1m", "--fetch-timeout", "2s")

	const workers = 8
	t.Logf("soak: %v mixed load after a %v healthy baseline, %d workers", dur, baseDur, workers)
	base, _ := soakPhase(t, fc.front, workers, time.Now().Add(baseDur), func(*rand.Rand) (string, string) {
		return "/healthy", ""
	})
	mix, leaks := soakPhase(t, fc.front, workers, time.Now().Add(dur), func(r *rand.Rand) (string, string) {
		user := ""
		if r.IntN(4) > 0 {
			user = fmt.Sprintf("u%d", r.IntN(8))
		}
		return fmt.Sprintf("/page/%d", r.IntN(50)), user
	})
	_, m := get(t, fc.admin+"/metrics")
	gMid, rssMid, heapMid := runtime.NumGoroutine(), rssBytes(t), heapInUse()
	fc.stop()
	o.Close()
	client.CloseIdleConnections()
	runtime.GC()
	time.Sleep(time.Second)
	g1, fd1, rss1, heap1 := runtime.NumGoroutine(), openFiles(t), rssBytes(t), heapInUse()

	lost := (base.sent - base.codes[200]) + (mix.sent - mix.codes[200])
	t.Logf("healthy baseline: %s", base)
	t.Logf("mixed load:       %s", mix)
	t.Logf("page p99 over the baseline: %v (--wait 50ms)", (mix.pct(99) - base.pct(99)).Round(time.Millisecond))
	t.Logf("requests lost (no answer or not 200): %d of %d; fragments of another user served: %d; flaky fragment failures: %d",
		lost, base.sent+mix.sent, leaks, fails.Load())
	t.Logf("goroutines %d before, %d under load, %d after; open files %d before, %d after; RSS %.1f MiB before, %.1f MiB under load, %.1f MiB after",
		g0, gMid, g1, fd0, fd1, float64(rss0)/(1<<20), float64(rssMid)/(1<<20), float64(rss1)/(1<<20))
	t.Logf("heap in use %.1f MiB before, %.1f MiB under load, %.1f MiB after (after GC)",
		float64(heap0)/(1<<20), float64(heapMid)/(1<<20), float64(heap1)/(1<<20))
	t.Logf("fragcache: %s", strings.ReplaceAll(grepLines(m, "fragcache_page_compositions_total{"), "\n", "; "))
	if lost > 0 {
		t.Errorf("%d requests lost: %v", lost, mix.errs)
	}
	if leaks > 0 {
		t.Errorf("%d answers carried another user's fragment", leaks)
	}
	if rss1 > rss0+256<<20 {
		t.Errorf("RSS grew from %d to %d bytes", rss0, rss1)
	}
	if heap1 > heap0+32<<20 {
		t.Errorf("heap in use grew from %d to %d bytes after stop", heap0, heap1)
	}
	// Goroutines and open files are checked by checkNoLeaks once the
	// test's cleanups have run.
}
