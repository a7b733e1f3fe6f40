package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// drainResult is what one request of a keep-alive client saw.
type drainResult struct {
	sent     time.Time // when the request was written
	fresh    bool      // the first request on a newly dialled connection
	answered bool
	close    bool // the answer said Connection: close
	err      error
}

// keepAliveClient sends a request every interval on one connection for as
// long as the server keeps it open, dials a new one when the server closed
// it (or asked to), and stops when a dial fails or at until. It never
// retries a request: a request that got no answer is recorded as such.
func keepAliveClient(addr string, interval time.Duration, until time.Time, out chan<- drainResult) {
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for n := 0; time.Now().Before(until); n++ {
		fresh := false
		if c == nil {
			var err error
			if c, err = net.DialTimeout("tcp", addr, time.Second); err != nil {
				return // the listener is closed: a load balancer sends elsewhere
			}
			br = bufio.NewReader(c)
			fresh = true
		}
		r := drainResult{sent: time.Now(), fresh: fresh}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, r.err = fmt.Fprintf(c, "GET /n/%d HTTP/1.1\r\nHost: shop.test\r\n\r\n", n)
		if r.err == nil {
			var resp *http.Response
			if resp, r.err = http.ReadResponse(br, nil); r.err == nil {
				_, r.err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r.answered = r.err == nil && resp.StatusCode == 200
				r.close = resp.Close
			}
		}
		out <- r
		if !r.answered || r.close {
			c.Close()
			c = nil
		}
		time.Sleep(interval)
	}
}

// TestDrainLosesNoKeepAliveRequest: on SIGTERM, keep-alive clients that go
// on sending during the drain delay all get their answers. Each answer of
// the drain says Connection: close, so the client reconnects (elsewhere,
// behind a load balancer; here to the listener, which stays open for the
// drain delay) instead of keeping a connection that the shutdown will close
// under its next request. The only request allowed to go unanswered is the
// first one on a connection dialled once the drain delay is over: the
// listener closing under it is what a load balancer sees as "go elsewhere".
func TestDrainLosesNoKeepAliveRequest(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{"/n/": frag("ok", 0, "")})
	const drain = time.Second
	fc := startFragcache(t, "--upstream", o.URL, "--drain-delay", drain.String(), "--shutdown-timeout", "5s")
	addr := strings.TrimPrefix(fc.front, "http://")

	const clients, interval = 8, 20 * time.Millisecond
	results := make(chan drainResult, 4096)
	var wg sync.WaitGroup
	until := time.Now().Add(drain + 10*time.Second)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keepAliveClient(addr, interval, until, results)
		}()
	}
	time.Sleep(300 * time.Millisecond) // keep-alive connections in use
	stopAt := time.Now()
	stopped := make(chan struct{})
	go func() { fc.stop(); close(stopped) }() // SIGTERM: run's context ends
	wg.Wait()
	<-stopped
	close(results)

	var before, during, lost, freshServed, unclosed int
	for r := range results {
		switch {
		case r.sent.Before(stopAt):
			before++
			if !r.answered {
				t.Errorf("a request before the stop got no answer: %v", r.err)
			}
			continue
		case !r.answered && r.fresh && !r.sent.Before(stopAt.Add(drain)):
			continue // the listener closed under a new connection
		case !r.answered:
			lost++
			t.Errorf("a request %v after the stop (fresh connection: %v) got no answer: %v",
				r.sent.Sub(stopAt).Round(time.Millisecond), r.fresh, r.err)
			continue
		}
		during++
		if r.fresh {
			freshServed++
		}
		// The stop reaches the handler within moments; 200 ms is generous.
		if !r.close && r.sent.After(stopAt.Add(200*time.Millisecond)) {
			unclosed++
		}
	}
	if unclosed > 0 {
		t.Errorf("%d answers during the drain kept their connection open, want Connection: close on each", unclosed)
	}
	if freshServed == 0 {
		t.Error("no new connection was served during the drain delay (the clients kept theirs, or the listener closed early)")
	}
	t.Logf("drain: %d requests answered before the stop, %d during the drain (%d on new connections), %d lost; %d clients every %v, --drain-delay %v",
		before, during, freshServed, lost, clients, interval, drain)
}
