package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"fragcache/metrics"
)

// benchOrigin serves a 20 KB page with n includes, its fragments, a
// static page and ever-new (cold) fragments, on loopback.
type benchOrigin struct {
	addr string
	srv  *fasthttp.Server
	ln   net.Listener
}

func newBenchOrigin(tb testing.TB, n int) *benchOrigin {
	tb.Helper()
	var page strings.Builder
	filler := strings.Repeat("<tr><td>legacy row</td><td>with some cells</td><td>and text</td></tr>\n", 20)
	page.WriteString("<html><body><table>\n")
	for i := 0; i < n; i++ {
		page.WriteString(filler)
		fmt.Fprintf(&page, `<esi:include src="/frag/%d"/>`, i)
	}
	page.WriteString("</table></body></html>\n")
	pageBody := []byte(page.String())
	fragBody := []byte(strings.Repeat("<p>fragment content</p>", 40))
	static := []byte(strings.Repeat("<p>static</p>", 1500))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	o := &benchOrigin{addr: ln.Addr().String(), ln: ln}
	o.srv = &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		p := ctx.Path()
		switch {
		case string(p) == "/page":
			ctx.Response.Header.Set("Surrogate-Control", `content="ESI/1.0"`)
			ctx.Response.Header.Set("Cache-Control", "no-store")
			ctx.SetContentType("text/html; charset=utf-8")
			if v := ctx.QueryArgs().Peek("v"); len(v) > 0 {
				// Every tag makes every fragment URL new.
				ctx.SetBody(bytesReplaceAll(pageBody, []byte(`"/>`), append(append([]byte("?v="), v...), `"/>`...)))
				return
			}
			ctx.SetBody(pageBody)
		case string(p) == "/static":
			ctx.SetContentType("text/html")
			ctx.SetBody(static)
		default:
			ctx.Response.Header.Set("Cache-Control", "max-age=600")
			ctx.SetContentType("text/html")
			ctx.SetBody(fragBody)
		}
	}}
	go o.srv.Serve(ln)
	tb.Cleanup(func() { o.srv.Shutdown() })
	return o
}

func newBenchProxy(tb testing.TB, upstream string, wait time.Duration) *Proxy {
	tb.Helper()
	return newBenchProxyToken(tb, upstream, wait, "")
}

// newBenchProxyToken is newBenchProxy with a --debug-token.
func newBenchProxyToken(tb testing.TB, upstream string, wait time.Duration, token string) *Proxy {
	tb.Helper()
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "bench", Upstreams: []string{upstream}})
	m.Prewarm()
	p, err := New(Config{Upstream: "http://" + upstream, Wait: wait, Metrics: m, StaleTTL: time.Minute, DebugToken: []byte(token)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

var benchRemote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

// serveOnce runs the handler on ctx for uri, as the server would.
func serveOnce(p *Proxy, ctx *fasthttp.RequestCtx, uri string) {
	serveAs(p, ctx, uri, "", discard)
}

var discard = bufio.NewWriterSize(io.Discard, 32<<10)

// serveAs runs the handler on ctx for uri, sent with cookie if not empty,
// and writes the response to bw as the server would.
func serveAs(p *Proxy, ctx *fasthttp.RequestCtx, uri, cookie string, bw *bufio.Writer) {
	serveDebug(p, ctx, uri, cookie, "", bw)
}

// serveDebug is serveAs with a Fragcache-Debug header, if not empty.
func serveDebug(p *Proxy, ctx *fasthttp.RequestCtx, uri, cookie, debug string, bw *bufio.Writer) {
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI(uri)
	ctx.Request.Header.SetHost("bench.example")
	if cookie != "" {
		ctx.Request.Header.Set("Cookie", cookie)
	}
	if debug != "" {
		ctx.Request.Header.Set(debugHeader, debug)
	}
	p.Handler(ctx)
	// Write the response as the server would: a streamed body is read to
	// its end and closed.
	_ = ctx.Response.Write(bw)
	_ = bw.Flush()
}

func warmPage(tb testing.TB, p *Proxy, uri string, n int) {
	tb.Helper()
	warmPageAs(tb, p, uri, "", n)
}

func warmPageAs(tb testing.TB, p *Proxy, uri, cookie string, n int) {
	tb.Helper()
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, benchRemote, nil)
	for i := 0; i < 50; i++ {
		serveAs(p, &ctx, uri, cookie, discard)
		if ctx.Response.StatusCode() == 200 && strings.Count(string(ctx.Response.Body()), "<p>fragment content</p>") == 40*n {
			p.store.Wait()
			serveAs(p, &ctx, uri, cookie, discard) // the template cache admits on the second sighting
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("page %s never complete: %d %.200q", uri, ctx.Response.StatusCode(), ctx.Response.Body())
}

// BenchmarkServeHit composes a 20 KB page with 10 cached includes: the
// page comes from the upstream each time, the fragments from the cache.
func BenchmarkServeHit(b *testing.B) { benchHit(b, "") }

// BenchmarkServeHitLoggedIn is BenchmarkServeHit for a visitor with a
// session cookie: the fragments are cached in the visitor's own scope.
func BenchmarkServeHitLoggedIn(b *testing.B) {
	benchHit(b, "session=0123456789abcdef0123456789abcdef; lang=en")
}

func benchHit(b *testing.B, cookie string) {
	o := newBenchOrigin(b, 10)
	p := newBenchProxy(b, o.addr, time.Second)
	warmPageAs(b, p, "/page", cookie, 10)
	serveParallel(b, p, "/page", cookie)
}

// serveParallel serves uri (as a visitor with cookie, if not empty) on
// every P until the benchmark ends; every answer must be a 200.
func serveParallel(b *testing.B, p *Proxy, uri, cookie string) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, benchRemote, nil)
		bw := bufio.NewWriterSize(io.Discard, 32<<10)
		for pb.Next() {
			serveAs(p, &ctx, uri, cookie, bw)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		}
	})
}

const benchToken = "bench-debug-token-0123456789"

// BenchmarkServeHitDebugToken is BenchmarkServeHit on a proxy with a
// debug token, for requests without the Fragcache-Debug header: what a
// configured token costs everyone else.
func BenchmarkServeHitDebugToken(b *testing.B) {
	o := newBenchOrigin(b, 10)
	p := newBenchProxyToken(b, o.addr, time.Second, benchToken)
	warmPage(b, p, "/page", 10)
	serveParallel(b, p, "/page", "")
}

// BenchmarkServeHitDebug is the same page asked for with the token: its
// answer carries the per-include Server-Timing.
func BenchmarkServeHitDebug(b *testing.B) {
	o := newBenchOrigin(b, 10)
	p := newBenchProxyToken(b, o.addr, time.Second, benchToken)
	warmPage(b, p, "/page", 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, benchRemote, nil)
		bw := bufio.NewWriterSize(io.Discard, 32<<10)
		for pb.Next() {
			serveDebug(p, &ctx, "/page", "", benchToken, bw)
			if ctx.Response.StatusCode() != 200 || len(ctx.Response.Header.Peek("Server-Timing")) == 0 {
				b.Fatalf("status %d, Server-Timing %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Server-Timing"))
			}
		}
	})
}

// BenchmarkServeMiss composes a page whose 10 includes are new to the
// cache on every request, with --wait 0: the cost of starting loads and
// rendering placeholders (the loads themselves run in the background).
func BenchmarkServeMiss(b *testing.B) {
	o := newBenchOrigin(b, 10)
	p := newBenchProxy(b, o.addr, 0)
	b.ReportAllocs()
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, benchRemote, nil)
	i := 0
	for b.Loop() {
		i++
		serveOnce(p, &ctx, fmt.Sprintf("/page?v=%d", i))
	}
}

// BenchmarkServePassthrough proxies a 20 KB page that is not composed.
func BenchmarkServePassthrough(b *testing.B) {
	o := newBenchOrigin(b, 0)
	p := newBenchProxy(b, o.addr, 0)
	serveParallel(b, p, "/static", "")
}

func bytesReplaceAll(s, old, nw []byte) []byte {
	return []byte(strings.ReplaceAll(string(s), string(old), string(nw)))
}

// BenchmarkScope is the per-page cost of a credentialed request's scope.
func BenchmarkScope(b *testing.B) {
	s := newScoper([]byte("secret"), nil)
	auth, cookie := []byte("Bearer abc"), []byte("session=0123456789abcdef; lang=en")
	b.ReportAllocs()
	for b.Loop() {
		s.user(auth, cookie)
	}
}
