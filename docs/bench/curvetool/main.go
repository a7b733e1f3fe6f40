// Command curvetool drives the parts of the scaling and cluster benchmarks
// that wrk cannot: filling a cache with many distinct fragments, a cold
// stampede spread round-robin over several nodes, and the latency of a
// page whose fragments another replica fetched (an L2 hit).
//
//	curvetool fill     -base URL -n 100 -pages 1000 [-conc 32]
//	curvetool stampede -bases URL,URL,URL -path '/page?n=10&v=T' [-c 200]
//	curvetool l2hit    -bases URL,URL [-path /page] -n 10 -tags 200
//
// Every URL must be on loopback. Pages are the bench origin's
// /page?n=N&v=TAG (or /ssi-page); a page is complete when it holds N
// fragment bodies (data-frag-body=). Output is one line of name=value
// pairs, for the scripts in docs/bench to pick up.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var client = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		MaxIdleConnsPerHost: 512,
		MaxConnsPerHost:     0,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	},
}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: curvetool fill|stampede|l2hit [flags]")
	}
	var err error
	switch os.Args[1] {
	case "fill":
		err = fill(os.Args[2:])
	case "stampede":
		err = stampede(os.Args[2:])
	case "l2hit":
		err = l2hit(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		log.Fatal(err)
	}
}

// loopback checks that every URL names a loopback host.
func loopback(urls ...string) error {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return err
		}
		if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
			return fmt.Errorf("%s: loopback only", s)
		}
	}
	return nil
}

var marker = []byte("data-frag-body=")

// get fetches u and returns its status, how many fragment bodies it
// holds, and how long the whole answer took.
func get(u string) (int, int, time.Duration, error) {
	start := time.Now()
	resp, err := client.Get(u)
	if err != nil {
		return 0, 0, time.Since(start), err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return resp.StatusCode, 0, took, err
	}
	return resp.StatusCode, bytes.Count(b, marker), took, nil
}

// fill requests page tags 0..pages-1 (v=f<k>) with conc at once, each
// until it is complete (up to -tries), so that pages*n distinct fragments
// are cached.
func fill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ContinueOnError)
	base := fs.String("base", "", "the node, scheme://host:port")
	path := fs.String("path", "/page", "the page's path (/page or /ssi-page)")
	n := fs.Int("n", 100, "includes per page")
	pages := fs.Int("pages", 100, "distinct pages (tags)")
	conc := fs.Int("conc", 32, "requests at once")
	tries := fs.Int("tries", 20, "requests of one page until it is complete")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loopback(*base); err != nil {
		return err
	}
	start := time.Now()
	var next, incomplete, errs atomic.Int64
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				if k >= int64(*pages) {
					return
				}
				u := fmt.Sprintf("%s%s?n=%d&v=f%d", *base, *path, *n, k)
				done := false
				for try := 0; try < *tries && !done; try++ {
					code, got, _, err := get(u)
					switch {
					case err != nil || code != 200:
						errs.Add(1)
						time.Sleep(50 * time.Millisecond)
					case got == *n:
						done = true
					default:
						time.Sleep(100 * time.Millisecond)
					}
				}
				if !done {
					incomplete.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("fill pages=%d n=%d seconds=%.1f incomplete=%d errors=%d\n",
		*pages, *n, time.Since(start).Seconds(), incomplete.Load(), errs.Load())
	if incomplete.Load() > 0 {
		return fmt.Errorf("%d pages never complete", incomplete.Load())
	}
	return nil
}

// stampede sends c requests of path at once, request i to node i mod
// len(bases), and reports their latency and completeness.
func stampede(args []string) error {
	fs := flag.NewFlagSet("stampede", flag.ContinueOnError)
	bases := fs.String("bases", "", "nodes, comma-separated scheme://host:port")
	path := fs.String("path", "", "path and query, the same for every node")
	c := fs.Int("c", 200, "requests at once")
	n := fs.Int("n", 10, "includes per page, for completeness")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nodes := strings.Split(*bases, ",")
	if err := loopback(nodes...); err != nil {
		return err
	}
	took := make([]time.Duration, *c)
	var complete, errs atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range *c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			code, got, d, err := get(nodes[i%len(nodes)] + *path)
			took[i] = d
			if err != nil || code != 200 {
				errs.Add(1)
			} else if got == *n {
				complete.Add(1)
			}
		}()
	}
	close(gate)
	wg.Wait()
	slices.Sort(took)
	fmt.Printf("stampede c=%d nodes=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f complete=%d errors=%d\n",
		*c, len(nodes), ms(took[len(took)/2]), ms(took[len(took)*99/100]), ms(took[len(took)-1]), complete.Load(), errs.Load())
	return nil
}

// l2hit measures, per fresh tag, a page through node 0 until complete
// (its fragments are then in the L2), the first request of the same page
// through node 1 (L1 miss, L2 hit) and the next one (L1 hit); and, on a
// second set of tags, the first request through node 1 of a page nobody
// has seen (L1 and L2 miss). It reports p50 and p99 of each.
func l2hit(args []string) error {
	fs := flag.NewFlagSet("l2hit", flag.ContinueOnError)
	bases := fs.String("bases", "", "two nodes, comma-separated; node 1 shares node 0's L2, if there is one")
	path := fs.String("path", "/page", "the page's path (/page or /ssi-page)")
	n := fs.Int("n", 10, "includes per page")
	tags := fs.Int("tags", 200, "pages measured")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nodes := strings.Split(*bases, ",")
	if len(nodes) != 2 {
		return fmt.Errorf("-bases: want two nodes")
	}
	if err := loopback(nodes...); err != nil {
		return err
	}
	run := fmt.Sprintf("%x", time.Now().UnixNano())
	var l2, l1, cold []time.Duration
	incomplete := 0
	for k := range *tags {
		page := fmt.Sprintf("%s?n=%d&v=h%s-%d", *path, *n, run, k)
		filled := false
		for range 50 {
			if code, got, _, err := get(nodes[0] + page); err == nil && code == 200 && got == *n {
				filled = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !filled {
			return fmt.Errorf("%s never complete through node 0", page)
		}
		time.Sleep(5 * time.Millisecond) // the store's write settles
		code, got, d, err := get(nodes[1] + page)
		if err != nil || code != 200 {
			return fmt.Errorf("node 1 %s: %d %v", page, code, err)
		}
		if got != *n {
			incomplete++
		}
		l2 = append(l2, d)
		_, _, d, _ = get(nodes[1] + page)
		l1 = append(l1, d)
		_, _, d, _ = get(nodes[1] + fmt.Sprintf("%s?n=%d&v=c%s-%d", *path, *n, run, k))
		cold = append(cold, d)
	}
	for _, s := range [][]time.Duration{l1, l2, cold} {
		slices.Sort(s)
	}
	q := func(s []time.Duration, p int) float64 { return ms(s[len(s)*p/100]) }
	fmt.Printf("l2hit tags=%d n=%d l1_p50_ms=%.2f l1_p99_ms=%.2f l2_p50_ms=%.2f l2_p99_ms=%.2f miss_p50_ms=%.2f miss_p99_ms=%.2f l2_incomplete=%d\n",
		*tags, *n, q(l1, 50), q(l1, 99), q(l2, 50), q(l2, 99), q(cold, 50), q(cold, 99), incomplete)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
