//go:build !race

package proxy

import (
	"bufio"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestServeHitAllocations pins the allocations of composing a page whose
// ten includes are all cached, through the whole handler. What remains is
// the streamed upstream body (transport's streamBody, which gives the
// connection back; fasthttp's own stream took 4); the composition itself
// allocates nothing per include, nor does the check of the pooled
// connection.
func TestServeHitAllocations(t *testing.T) {
	o := newBenchOrigin(t, 10)
	p := newBenchProxy(t, o.addr, time.Second)
	warmPage(t, p, "/page", 10)
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, benchRemote, nil)
	serveOnce(p, &ctx, "/page")
	got := testing.AllocsPerRun(200, func() { serveOnce(p, &ctx, "/page") })
	const budget = 2 // the body stream: 1
	if got > budget {
		t.Errorf("a cached 10-include page costs %.1f allocations, want at most %d", got, budget)
	}
}

// TestServeHitAllocationsWithDebugToken: a configured --debug-token costs
// a request without the Fragcache-Debug header no allocation.
func TestServeHitAllocationsWithDebugToken(t *testing.T) {
	o := newBenchOrigin(t, 10)
	p := newBenchProxyToken(t, o.addr, time.Second, benchToken)
	warmPage(t, p, "/page", 10)
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, benchRemote, nil)
	serveOnce(p, &ctx, "/page")
	got := testing.AllocsPerRun(200, func() { serveOnce(p, &ctx, "/page") })
	const budget = 2 // as TestServeHitAllocations
	if got > budget {
		t.Errorf("with a debug token, a cached 10-include page costs %.1f allocations, want at most %d", got, budget)
	}
}

// TestPeekAllocations: the checks made on every reuse of a pooled
// connection and after every answer allocate nothing.
func TestPeekAllocations(t *testing.T) {
	c, _ := loopbackPair(t, newDialer("127.0.0.1:0", false, nil, 0, time.Second))
	c.answered = true
	br := bufio.NewReader(c)
	got := testing.AllocsPerRun(200, func() {
		if c.idleCheck() != peekNothing || c.surplus(br) {
			t.Fatal("an idle connection looks out of step")
		}
	})
	if got > 0 {
		t.Errorf("the idle check costs %.1f allocations, want 0", got)
	}
}
