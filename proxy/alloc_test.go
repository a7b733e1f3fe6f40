//go:build !race

package proxy

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestServeHitAllocations pins the allocations of composing a page whose
// ten includes are all cached, through the whole handler. What remains is
// fasthttp's streamed upstream body (its stream reader and the closures
// that give the connection back); the composition itself allocates
// nothing per include.
func TestServeHitAllocations(t *testing.T) {
	o := newBenchOrigin(t, 10)
	p := newBenchProxy(t, o.addr, time.Second)
	warmPage(t, p, "/page", 10)
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, benchRemote, nil)
	serveOnce(p, &ctx, "/page")
	got := testing.AllocsPerRun(200, func() { serveOnce(p, &ctx, "/page") })
	const budget = 5 // fasthttp's body stream: 4
	if got > budget {
		t.Errorf("a cached 10-include page costs %.1f allocations, want at most %d", got, budget)
	}
}
