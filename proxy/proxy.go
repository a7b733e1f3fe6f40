package proxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/cachestore"
	"fragcache/l2"
	"fragcache/metrics"
)

// Proxy is fragcache's request handler with its upstream clients, fragment
// fetcher and fragment store. Create it with New, serve it with Serve and
// stop it with Shutdown, then Close. It is safe for concurrent use.
type Proxy struct {
	// cfg is the configuration New got. Its live fields (LiveFields) are
	// the start's: read them from live.
	cfg Config
	// live is the configuration as it runs now, replaced whole by Reload.
	live     atomic.Pointer[liveConfig]
	reloadMu sync.Mutex // serialises Reload
	log      *slog.Logger
	m        *metrics.Metrics
	// reach is the start's: the upstream's address and the dial rules,
	// which Reload does not change. Which hosts fragment URLs may reach
	// is the live sources' reach to say.
	reach  *reach
	store  *fragStore
	fetch  *fetcher
	tpls   *templateCache
	hints  *urlTable // shared hints, kept across reloads
	purges *purgeTable
	l2     *l2.Client // the shared L2; nil without Redis
	scopes scoper
	act    *activity  // what the admin page shows of the includes
	debug  debugToken // the Fragcache-Debug token; off without one

	page       *fasthttp.HostClient
	pageDialer *dialer
	pageUp     *metrics.Upstream
	transport  *transport // the exchange of every upstream client
	fw         *forwarding

	server   *fasthttp.Server
	closed   atomic.Bool
	pages    atomic.Uint64 // composed page requests so far: their load-queue group
	draining atomic.Bool   // every answer closes its connection
	// streamStop is closed when Shutdown begins: open streams end at once,
	// well-formed, with their placeholders (precise rule 30).
	streamStop chan struct{}
	streams    atomic.Int64 // streams open now, at most FetchConcurrency
	stopOnce   sync.Once
}

// rule is a FragmentRule with its resolved metrics children.
type rule struct {
	FragmentRule
	m *metrics.Fragment
}

// New builds a Proxy. It validates cfg and returns every problem found.
func New(cfg Config) (*Proxy, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r, err := newReach(cfg.Upstream, cfg.AllowHosts)
	if err != nil {
		return nil, fmt.Errorf("proxy: upstream: %w", err)
	}
	sharedSecret := len(cfg.ScopeSecret) > 0
	if len(cfg.ScopeSecret) == 0 {
		cfg.ScopeSecret = make([]byte, 32)
		if _, err := rand.Read(cfg.ScopeSecret); err != nil {
			return nil, fmt.Errorf("proxy: scope secret: %w", err)
		}
	}
	trusted, err := parseTrustedList(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{
		streamStop: make(chan struct{}),
		cfg:        cfg,
		log:        cfg.Logger,
		m:          cfg.Metrics,
		reach:      r,
		scopes:     newScoper(cfg.ScopeSecret, cfg.ScopeCookies),
		fw:         newForwarding(&cfg, r.base, trusted),
		act:        newActivity(),
		debug:      newDebugToken(cfg.DebugToken),
	}
	p.hints = newURLTable()
	p.pageUp = p.m.Upstream(r.entries[0].name)
	p.transport = &transport{log: p.log}
	p.pageDialer, p.page = newPageClient(&cfg, r.base, p.transport)
	p.tpls = newTemplateCache(64<<20, p.m)
	p.purges = newPurgeTable(cfg.StaleTTL, cfg.Redis != "")
	p.fetch = newFetcher(&p.cfg, &p.live, r.dial, p.transport, p.m, p.hints, p.purges)
	var loader cachestore.Loader[*fragRecord, *loadArg] = p.fetch
	if cfg.Redis != "" {
		c, err := l2.New(l2.Config{
			URL:            cfg.Redis,
			Password:       cfg.RedisPassword,
			Prefix:         cfg.RedisPrefix,
			Timeout:        cfg.RedisTimeout,
			MaxBodySize:    int(cfg.MaxFragmentSize) + recordOverhead,
			PurgeRetention: 24*time.Hour + cfg.StaleTTL,
			Observer:       l2Observer{p.m},
			Listener:       p.purges,
			Logger:         p.log,
		})
		if err != nil {
			return nil, fmt.Errorf("proxy: redis: %w", err)
		}
		p.l2 = c
		l2Observer{p.m}.prewarm()
		// The L2's breaker starts open until its first probe answers: give
		// a reachable Redis a moment, so that the first pages use it. A
		// Redis that is down costs the start this much, then nothing.
		for end := time.Now().Add(max(10*cfg.RedisTimeout, 250*time.Millisecond)); !c.Up() && time.Now().Before(end); {
			time.Sleep(5 * time.Millisecond)
		}
		loader = &tier{l2: c, origin: p.fetch, purges: p.purges, users: sharedSecret, bypassFor: cfg.FragmentTTL, failFor: cachestore.DefaultBackoffMin, timeout: cfg.RedisTimeout}
	}
	st, err := cachestore.New(cachestore.Config{
		MaxCost:      cfg.CacheSize,
		MaxLoads:     cfg.FetchConcurrency,
		LoadQueue:    cfg.FetchQueue,
		RefreshQueue: cfg.RefreshQueue,
		LoadTimeout:  cfg.FetchTimeout,
	}, loader, storeObserver{m: p.m, backoff: newBackoffLog(p.log)})
	if err != nil {
		if p.l2 != nil {
			p.l2.Close()
		}
		return nil, fmt.Errorf("proxy: store: %w", err)
	}
	p.store = st
	p.live.Store(p.newLive(cfg, r))
	p.m.CacheMaxCost.Set(float64(cfg.CacheSize))
	p.server = newServer(&cfg, p.Handler, p.serverError, p.log)
	return p, nil
}

// newPageClient builds the client of page requests to the upstream.
func newPageClient(cfg *Config, base *url.URL, t *transport) (*dialer, *fasthttp.HostClient) {
	pageAddr := net.JoinHostPort(base.Hostname(), portOf(base))
	// Deadlines are managed per read and write by the connection (the
	// dialer's idle bound), so that a long download is bounded by
	// inactivity, not by its total time.
	d := newDialer(pageAddr, base.Scheme == "https", nil, cfg.UpstreamTimeout, 10*time.Second)
	hc := &fasthttp.HostClient{
		Addr: pageAddr,
		// No Name: fasthttp sends it as the User-Agent of a request that
		// came without one, and a page request carries only the client's.
		IsTLS:                         base.Scheme == "https",
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		SecureErrorLogMessage:         true,
		MaxConns:                      4096,
		MaxConnWaitTimeout:            cfg.UpstreamTimeout,
		MaxIdleConnDuration:           30 * time.Second,
		MaxIdemponentCallAttempts:     maxAttempts,
		RetryIfErr:                    retryStaleConn,
		ReadBufferSize:                cfg.MaxHeaderBytes,
		WriteBufferSize:               16 << 10,
		ReadTimeout:                   cfg.UpstreamTimeout,
		WriteTimeout:                  cfg.UpstreamTimeout,
		MaxResponseBodySize:           1 << 40,
		StreamResponseBody:            true,
		Transport:                     t,
		DialTimeout:                   d.dial,
	}
	return d, hc
}

// newServer builds the front listener's server.
func newServer(cfg *Config, handler fasthttp.RequestHandler, onError func(*fasthttp.RequestCtx, error), log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       handler,
		ErrorHandler:                  onError,
		ReadTimeout:                   cfg.ReadTimeout,
		WriteTimeout:                  60 * time.Second,
		IdleTimeout:                   90 * time.Second,
		ReadBufferSize:                cfg.MaxHeaderBytes,
		WriteBufferSize:               16 << 10,
		MaxRequestBodySize:            cfg.MaxRequestBodySize,
		StreamRequestBody:             true,
		DisablePreParseMultipartForm:  true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		Concurrency:                   64 << 10,
		Logger:                        fasthttpLogger{log},
		// fasthttp's parse errors quote the raw request head, cookies
		// and tokens included, and they reach the log.
		SecureErrorLogMessage: true,
	}
}

// L2 reports whether the shared L2 is configured.
func (p *Proxy) L2() bool { return p.l2 != nil }

// Serve accepts connections on ln until Shutdown. A TLS front is served by
// passing a TLS listener: the checks of request heads see the decrypted
// bytes.
func (p *Proxy) Serve(ln net.Listener) error {
	return p.server.Serve(frontListener{ln})
}

// Drain makes every answer from now on say Connection: close, so that
// keep-alive clients reconnect (to another replica, behind a load
// balancer) instead of sending their next request on a connection that
// Shutdown will close. Call it when the drain delay begins, then Shutdown
// once it ends.
func (p *Proxy) Drain() {
	p.draining.Store(true)
}

// Shutdown stops accepting connections and waits, until ctx ends, for the
// requests in flight to finish.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() { close(p.streamStop) })
	return p.server.ShutdownWithContext(ctx)
}

// Close stops the fragment store: running fetches are cancelled and every
// goroutine the store started has returned when Close returns.
func (p *Proxy) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	// Cut the fetches' connections first, so the store's Close does not
	// wait for fetches that nobody will read.
	p.fetch.close()
	err := p.store.Close()
	if p.l2 != nil {
		err = errors.Join(err, p.l2.Close())
	}
	p.page.CloseIdleConnections()
	return err
}

// serverError answers requests fasthttp could not parse.
func (p *Proxy) serverError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, errBareLFHead):
		ctx.Error("bad request: bare LF line end", fasthttp.StatusBadRequest)
	case errors.As(err, &small):
		ctx.Error("request header too large", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("request body too large", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &netErr) && netErr.Timeout():
		ctx.Error("request timeout", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("malformed request", fasthttp.StatusBadRequest)
	}
	ctx.SetConnectionClose()
	p.m.Request(methodLabel(ctx.Method()), ctx.Response.StatusCode()).Inc()
}

// Handler serves one request: it forwards it to the upstream and either
// streams the answer back unchanged or composes it.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	p.m.RequestsInFlight.Inc()
	st := reqStats{start: start}
	p.serve(ctx, &st)
	if p.draining.Load() {
		ctx.SetConnectionClose()
	}
	p.m.RequestsInFlight.Dec()
	code := ctx.Response.StatusCode()
	p.m.Request(methodLabel(ctx.Method()), code).Inc()
	if st.streamed {
		return // the stream's writer observes the duration and logs (stream.go)
	}
	d := time.Since(start)
	p.m.RequestDuration.Observe(d.Seconds())
	if p.cfg.AccessLog {
		p.logRequest(string(ctx.Method()), string(ctx.Path()), ctx.RemoteIP().String(), code, d, d, &st)
	}
}

// reqStats are the fragment counts of one request, for the access log.
type reqStats struct {
	start        time.Time // when the request was read
	streamed     bool      // the page is streamed: its writer logs it
	fills        int       // fills a streamed page sent
	composed     bool
	includes     int
	hits         int
	stale        int
	misses       int
	placeholders int
	fallbacks    int
}

func methodLabel(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "HEAD":
		return "HEAD"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	}
	return "other"
}

// serve answers one request: refused, passed through, composed, or an
// upstream error.
func (p *Proxy) serve(ctx *fasthttp.RequestCtx, st *reqStats) {
	if refuse(ctx) {
		return
	}
	debug := p.debug.asked(ctx)
	resp := fasthttp.AcquireResponse()
	err := p.pageAnswer(ctx, resp)
	switch {
	case err != nil:
		fasthttp.ReleaseResponse(resp)
		p.upstreamError(ctx, err)
	case p.eligible(ctx, resp):
		st.composed = true
		p.composePage(ctx, resp, st, debug)
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
	default:
		var reason string
		if debug {
			reason = p.passReason(ctx, resp)
		}
		p.passthrough(ctx, resp) // releases resp when the body is sent
		if debug {
			markUncomposed(&ctx.Response.Header, reason)
		}
	}
}

// refuse answers the requests fragcache never forwards (DESIGN rule 12)
// and reports whether it did: smuggling attempts, control characters in
// the target, tunnels and traces.
func refuse(ctx *fasthttp.RequestCtx) bool {
	switch {
	case smuggling(ctx.Request.Header.RawHeaders()) != "":
		ctx.Error("bad request: "+smuggling(ctx.Request.Header.RawHeaders()), fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
	case hasCRLF(ctx.Request.Header.RequestURI()):
		ctx.Error("bad request", fasthttp.StatusBadRequest)
		ctx.SetConnectionClose()
	case ctx.IsConnect() || ctx.IsTrace():
		// No tunnels, and no echo of the request (its cookies) to a
		// script that can read the answer.
		ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
		ctx.Response.Header.Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		if ctx.IsConnect() {
			ctx.SetConnectionClose() // what follows a CONNECT is not HTTP
		}
	default:
		return false
	}
	return true
}

// pageAnswer forwards the request to the upstream and reads the answer's
// head into resp; the body stays a stream.
func (p *Proxy) pageAnswer(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) error {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	// An answer without a Content-Type keeps none: fasthttp would report
	// (and CopyTo would pass on) text/plain.
	resp.Header.SetNoDefaultContentType(true)
	p.fw.upstreamRequest(ctx, req)
	if p.page.IsTLS {
		// The request URI is relative, which fasthttp reads as http; its
		// TLS client refuses such a request ("redirect to a different
		// protocol"), so an https upstream never got one.
		req.URI().SetScheme("https")
	}
	err := p.doPage(req, resp)
	if err == nil && resp.StatusCode() == fasthttp.StatusPartialContent && p.rangeOfComposedPage(ctx, req, resp) {
		// A slice of a template is no page: ask for the whole of it and
		// compose that (rule 8). An upstream that answers 206 again gets
		// its answer passed through.
		_ = resp.CloseBodyStream()
		resp.Reset()
		resp.Header.SetNoDefaultContentType(true)
		req.Header.Del("Range")
		req.Header.Del("If-Range")
		err = p.doPage(req, resp)
	}
	return err
}

// doPage sends a page request to the upstream, measured.
func (p *Proxy) doPage(req *fasthttp.Request, resp *fasthttp.Response) error {
	t0 := time.Now()
	if p.pageUp != nil {
		p.pageUp.InFlight.Inc()
	}
	err := p.page.Do(req, resp)
	if p.pageUp != nil {
		p.pageUp.InFlight.Dec()
		p.pageUp.Duration.Observe(time.Since(t0).Seconds())
	}
	return err
}

// rangeOfComposedPage reports whether a 206 answers a Range request for a
// page that opted in, and the request can be sent again (it carries no
// body): fragcache never composes a slice, and never sends a slice of a
// template either.
func (p *Proxy) rangeOfComposedPage(ctx *fasthttp.RequestCtx, req *fasthttp.Request, resp *fasthttp.Response) bool {
	if ctx.IsHead() || len(ctx.Request.Header.Peek("Range")) == 0 || req.IsBodyStream() || len(req.Body()) > 0 {
		return false
	}
	return isHTML(resp.Header.ContentType()) && (p.cfg.Trigger == TriggerHTML || hasESITrigger(&resp.Header))
}

// appendRemoteIP appends the client's address without allocating.
func appendRemoteIP(dst []byte, ctx *fasthttp.RequestCtx) []byte {
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().AppendTo(dst)
	}
	return append(dst, ctx.RemoteIP().String()...)
}

func hasCRLF(b []byte) bool {
	for _, c := range b {
		if c == '\r' || c == '\n' || c == 0 {
			return true
		}
	}
	return false
}

// upstreamRequest copies the client's request for the upstream
// (DESIGN rule 12): hop-by-hop, rewrite and underscore headers dropped,
// HTTP/1.1 whatever the client spoke, the request-target in origin form
// byte for byte, Host the upstream's (or the public host with
// PreserveHost), X-Forwarded-* set by the trust rules, nothing added that
// the client did not send, the body streamed.
func (fw *forwarding) upstreamRequest(ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	in := &ctx.Request.Header
	in.CopyTo(&req.Header)
	stripHop(&req.Header)
	req.Header.Del(debugHeader) // rule 32: it never leaves fragcache
	req.Header.SetProtocol("HTTP/1.1")
	// fasthttp writes a Content-Type of its own for a body sent without one.
	req.Header.SetNoDefaultContentType(true)
	dropRequestHeaders(in, &req.Header)

	trusted := fw.trustedPeer(ctx)
	public := fw.publicHost(in, trusted)
	if fw.preserveHost {
		req.Header.SetHost(public)
	} else {
		req.Header.SetHost(fw.pageHost)
	}
	req.UseHostHeader = true
	setRequestTarget(req, in.RequestURI(), fw.upstreamScheme)
	fw.setForwarded(ctx, &req.Header, trusted, public)

	if ae := ctx.Request.Header.Peek("Accept-Encoding"); len(ae) > 0 {
		var buf [64]byte
		if enc := decodableEncodings(buf[:0], ae); len(enc) > 0 {
			req.Header.SetBytesV("Accept-Encoding", enc)
		} else {
			req.Header.Del("Accept-Encoding")
		}
	}
	if ctx.Request.IsBodyStream() {
		req.SetBodyStream(ctx.RequestBodyStream(), ctx.Request.Header.ContentLength())
	} else if b := ctx.Request.Body(); len(b) > 0 {
		req.SetBodyRaw(b)
	}
}

func (p *Proxy) upstreamError(ctx *fasthttp.RequestCtx, err error) {
	ctx.Response.Reset()
	var netErr net.Error
	var bad *malformedError
	switch {
	case errors.As(err, &bad):
		// An answer fasthttp would misread, or one that came before the
		// request was written (DESIGN.md, precise rules 13 and 20).
		ctx.Error("malformed upstream response", fasthttp.StatusBadGateway)
		p.log.Warn("malformed upstream response", slog.String("path", string(ctx.Path())), slog.String("error", scrubHeaderValues(err.Error())))
		return
	case errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &netErr) && netErr.Timeout():
		ctx.Error("upstream timed out", fasthttp.StatusGatewayTimeout)
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		ctx.Error("upstream busy", fasthttp.StatusServiceUnavailable)
	default:
		ctx.Error("upstream unreachable", fasthttp.StatusBadGateway)
	}
	p.log.Warn("upstream request failed", slog.String("path", string(ctx.Path())), slog.String("error", scrubHeaderValues(err.Error())))
}

// eligible reports whether an upstream response is composed: an answer
// to any method but HEAD (a POST's thank-you page has includes too; its
// fragments are GETs without the page's body) whose text/html opted in
// (or every text/html one with TriggerHTML), with a status that carries a
// full body (rule 8).
func (p *Proxy) eligible(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) bool {
	return !ctx.IsHead() && p.optedIn(resp)
}

// optedIn reports whether a response would be composed for a GET.
func (p *Proxy) optedIn(resp *fasthttp.Response) bool {
	switch resp.StatusCode() {
	case fasthttp.StatusNoContent, fasthttp.StatusPartialContent, fasthttp.StatusNotModified:
		return false
	}
	if resp.StatusCode() < 200 {
		return false
	}
	if !isHTML(resp.Header.ContentType()) {
		return false
	}
	return p.cfg.Trigger == TriggerHTML || hasESITrigger(&resp.Header)
}

func isHTML(ct []byte) bool {
	const h = "text/html"
	if len(ct) < len(h) || !equalFold(ct[:len(h)], h) {
		return false
	}
	return len(ct) == len(h) || ct[len(h)] == ';' || ct[len(h)] == ' '
}

// passthrough streams the upstream's answer to the client unchanged but
// for hop-by-hop headers and Surrogate-Control. The upstream response is
// released when fasthttp closes the body stream.
func (p *Proxy) passthrough(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) {
	resp.Header.CopyTo(&ctx.Response.Header)
	h := &ctx.Response.Header
	stripHop(h)
	dropBadReason(h)
	h.Del("Surrogate-Control")
	cl := resp.Header.ContentLength()
	if ctx.IsHead() || resp.StatusCode() == fasthttp.StatusNotModified || resp.StatusCode() == fasthttp.StatusNoContent || resp.StatusCode() < 200 {
		headComposed := ctx.IsHead() && p.optedIn(resp)
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		ctx.Response.SkipBody = ctx.IsHead()
		if headComposed {
			// The GET of this page is composed: its length, validators
			// and cacheability are not the upstream's.
			// Its length is unknown without composing it: announce none
			// (chunked) rather than the upstream's.
			h.Del("Etag")
			h.Del("Last-Modified")
			h.Set("Cache-Control", "private, no-store")
			h.SetContentLength(-1)
			return
		}
		if cl >= 0 {
			h.SetContentLength(cl)
		}
		return
	}
	body := resp.BodyStream()
	if body == nil || (cl >= 0 && cl <= maxBufferedBody) {
		// A small body of known length is read whole: the upstream
		// connection goes back to the pool at once, the client gets headers
		// and body in one write, and a body cut short upstream becomes a 502
		// instead of a truncated answer.
		buf, err := readLimited(ctx.Response.SwapBody(nil)[:0], resp, maxBufferedBody)
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		if err != nil || (cl >= 0 && len(buf) != cl) {
			ctx.Response.Reset()
			ctx.Error("upstream body cut short", fasthttp.StatusBadGateway)
			ctx.SetConnectionClose()
			return
		}
		ctx.Response.SwapBody(buf)
		return
	}
	if cl < 0 {
		cl = -1 // chunked to the client
	}
	ctx.Response.SetBodyStream(&releasingReader{resp: resp, r: body}, cl)
}

// maxBufferedBody is the largest passthrough body read whole; larger
// ones, and those of unknown length, are streamed.
const maxBufferedBody = 256 << 10

// releasingReader hands an upstream body to fasthttp's response writer and
// gives the upstream response (and its connection) back when fasthttp
// closes it.
type releasingReader struct {
	resp *fasthttp.Response
	r    io.Reader
	done bool
}

func (rr *releasingReader) Read(b []byte) (int, error) { return rr.r.Read(b) }

func (rr *releasingReader) Close() error {
	if rr.done {
		return nil
	}
	rr.done = true
	err := rr.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(rr.resp)
	return err
}

// fasthttpLogger routes fasthttp's own messages to slog.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(scrubHeaderValues(strings.TrimSpace(fmt.Sprintf(format, args...))), slog.String("component", "fasthttp"))
}
