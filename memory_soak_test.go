//go:build soak

package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMemoryFill fills the fragment cache with 100 000 distinct 1 KiB
// fragments and checks that the process's resident size stays within
// --cache-size + 64 MiB. Run it alone:
//
//	go test -tags soak -run TestMemoryFill -timeout 10m -v .
//
// FRAGCACHE_SOAK_CACHE_MIB sets --cache-size in MiB (default 256); with a
// cache smaller than the 100 000 fragments, evictions keep it in budget.
func TestMemoryFill(t *testing.T) {
	const (
		pages   = 1000
		perPage = 100
	)
	cacheSize := int64(256 << 20)
	if v := os.Getenv("FRAGCACHE_SOAK_CACHE_MIB"); v != "" { // e.g. 64: a cache smaller than the data
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("FRAGCACHE_SOAK_CACHE_MIB=%q: %v", v, err)
		}
		cacheSize = int64(n) << 20
	}
	body := strings.Repeat("x", 1024)
	var page strings.Builder
	for i := 0; i < perPage; i++ {
		fmt.Fprintf(&page, `<esi:include src="/m/%d"/>`, i)
	}
	// The page's srcs are relative to its own path (/p/N/), so every page
	// names 100 fragments no other page names.
	pageBody := strings.ReplaceAll(page.String(), `src="/m/`, `src="m/`)
	// An origin of its own: the shared test origin keeps every request it
	// sees, which would count in this process's resident size.
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/m/") {
			w.Header().Set("Cache-Control", "max-age=3600")
			io.WriteString(w, body)
			return
		}
		esiPage(pageBody)(w, r)
	}))
	defer o.Close()
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "5s", "--cache-size", strconv.FormatInt(cacheSize, 10),
		"--fetch-concurrency", "1024")
	runtime.GC()
	before := rssBytes(t)
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	complete := 0
	var mu sync.Mutex
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				_, b := get(t, fmt.Sprintf("%s/p/%d/", fc.front, n))
				if len(b) == perPage*len(body) {
					mu.Lock()
					complete++
					mu.Unlock()
				}
			}
		}()
	}
	for n := 0; n < pages; n++ {
		work <- n
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	runtime.GC()
	debug.FreeOSMemory()
	after := rssBytes(t)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	_, m := get(t, fc.admin+"/metrics")
	t.Logf("filled %d fragments of 1 KiB in %v (%d of %d pages complete)", pages*perPage, took.Round(time.Millisecond), complete, pages)
	t.Logf("RSS before %.1f MiB, after %.1f MiB (growth %.1f MiB); Go heap in use %.1f MiB; limit %d MiB",
		mib(before), mib(after), mib(after-before), mib(int64(ms.HeapInuse)), (cacheSize+64<<20)>>20)
	t.Logf("%s", grepLines(m, "fragcache_cache_"))
	if after > cacheSize+64<<20 {
		t.Errorf("resident size %.1f MiB exceeds --cache-size + 64 MiB", mib(after))
	}
	if complete < pages*9/10 && cacheSize >= 256<<20 {
		t.Errorf("only %d of %d pages complete", complete, pages)
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
