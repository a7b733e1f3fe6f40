package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/valyala/fasthttp"

	"fragcache/fragment"
	"fragcache/metrics"
)

// pageStream is the streaming late fill of one page (DESIGN.md,
// "Streaming late fill" and precise rules 29 to 31): the includes sent
// with anchors whose flights are still running, and the wire markup. It
// belongs to the page's composer.
type pageStream struct {
	wire     streamWire
	deadline time.Time // the start of the page's wait plus --stream-budget
	n        int       // includes rendered so far, in depth-first order
	open     int       // anchored includes not settled yet
	fills    int       // fills sent
	written  int64     // bytes of the response so far, against the output cap
	enc      string    // the response's Content-Encoding: "br", "gzip" or ""
	end      streamEnd
}

// streamEnd is what a stream reports when it ends: the request's metrics
// and access log line, which the handler leaves to the stream's writer.
// It is filled in before the writer starts and read only by the writer.
type streamEnd struct {
	p      *Proxy
	start  time.Time // when the request was read
	method string
	path   string
	remote string
	code   int
	ttfb   time.Duration // to the end of the first flush
	st     reqStats      // the counts of the composition
	done   func()        // gives back the page's place among the open streams
}

// streamable decides whether the page ctx asks for, composed from tpl
// with the upstream's answer resp, may be streamed, with which nonce and
// in which encoding ("" for identity).
func (p *Proxy) streamable(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, tpl *fragment.Template, budget time.Duration) (nonce, enc string, ok bool) {
	if budget <= 0 || !ctx.IsGet() || !ctx.Request.Header.IsHTTP11() || p.draining.Load() || p.closed.Load() {
		return "", "", false
	}
	if !bytes.HasPrefix(resp.Header.ContentType(), []byte("text/html")) || tpl.HasMetaCSP() {
		return "", "", false
	}
	if e := resp.Header.ContentEncoding(); len(e) > 0 && !equalFold(e, "identity") {
		// Encoded as the composed page would be (rule 9), by a writer
		// that flushes each part.
		enc = pickEncoding(ctx.Request.Header.Peek("Accept-Encoding"))
	}
	var policies []string
	for k, v := range resp.Header.All() {
		if equalFold(k, "Content-Security-Policy") || equalFold(k, "Content-Security-Policy-Report-Only") {
			policies = append(policies, string(v))
		}
	}
	nonce, ok = streamPolicy(policies)
	return nonce, enc, ok
}

// openStream takes a place among the streams open at once, at most
// --fetch-concurrency of them (rule 29). ok is false when none is free.
func (p *Proxy) openStream() (done func(), ok bool) {
	if p.streams.Add(1) > int64(p.cfg.FetchConcurrency) {
		p.streams.Add(-1)
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { p.streams.Add(-1) }) }, true
}

// streamSlot reports whether a pending include is sent with an anchor and
// kept open: it is in element content, its fragment's rule lets it stream
// and its flight is still running.
func (c *composer) streamSlot(s *slot, inc *fragment.Include) bool {
	return inc.Streamable && !s.noStream && s.flight != nil &&
		(s.state == stWaiting || s.state == stPending)
}

// appendAnchored renders a pending include between its anchors and keeps
// it for a fill.
func (c *composer) appendAnchored(dst []byte, e *fragment.Eval, inc *fragment.Include, s *slot) []byte {
	st := c.stream
	s.state = stPending
	s.streamN = st.n
	st.open++
	dst = st.wire.appendOpen(dst, st.n)
	dst = e.AppendPlaceholder(dst, inc)
	return st.wire.appendClose(dst, st.n)
}

// detachRequest gives c its own copy of the request before the stream's
// writer takes over: the writer runs after the handler returned, when
// fasthttp's RequestCtx is no longer the handler's to read, yet a fill's
// nested includes still evaluate variables and start loads from it.
func (c *composer) detachRequest() {
	own := new(fasthttp.RequestCtx)
	own.Init(&c.ctx.Request, c.ctx.RemoteAddr(), nil)
	c.ctx, c.vars.ctx = own, own
}

// writeStream sends a streamed page: the head at once (up to the tail,
// with anchored placeholders), then each fill as its include settles
// within the budget, then the tail and the end of the chunked body. It
// runs on fasthttp's body writer after the handler returned, and releases
// c. stop closes when the server shuts down: the stream ends at once.
func (c *composer) writeStream(w *bufio.Writer, root *node, head []byte, stop <-chan struct{}) {
	st := c.stream
	out := newStreamOut(w, st.enc)
	defer func() {
		out.release()
		st.finish()
		c.release()
	}()
	st.written = int64(len(head))
	sent := out.send(head)
	st.end.ttfb = time.Since(st.end.start)
	st.end.p.m.RequestDuration.Observe(st.end.ttfb.Seconds())
	if !sent {
		c.endOpen(metrics.StreamClientGone)
		return
	}
	buf := head[:0]
	var timer *time.Timer
	for st.open > 0 {
		if s := c.arr.take(); s != nil {
			var fill *slot
			var outcome int
			if buf, fill, outcome = c.streamSettle(buf[:0], s); fill == nil {
				continue
			}
			if !out.send(buf) {
				c.endOpen(metrics.StreamClientGone)
				return
			}
			st.written += int64(len(buf))
			st.fills++
			fill.frag.StreamFillTime.Observe(time.Since(c.start).Seconds())
			c.settled(fill, outcome)
			continue
		}
		left := time.Until(st.deadline)
		if left <= 0 {
			c.endOpen(metrics.StreamBudget)
			break
		}
		if timer == nil {
			timer = time.NewTimer(left)
			defer timer.Stop()
		} else {
			timer.Reset(left)
		}
		select {
		case <-c.arr.wake:
			timer.Stop()
		case <-timer.C:
		case <-stop:
			c.endOpen(metrics.StreamShutdown) // well-formed, placeholders kept
		}
	}
	buf = root.tpl.RenderTail(buf[:0], &root.e, c)
	out.close(buf)
}

// endOpen settles every anchored include still open with outcome: each
// keeps its placeholder.
func (c *composer) endOpen(outcome int) {
	for _, n := range c.nodes {
		for i := range n.slots {
			if s := &n.slots[i]; s.streamN != 0 && !s.filled {
				s.filled = true
				s.frag.StreamFills[outcome].Inc()
			}
		}
	}
	c.stream.open = 0
}

// streamSettle handles the end of a flight during the stream: that of an
// anchored include, of its alt, or of a fetch looked up again. It settles
// the include by rule 3 as the page's wait would have (DESIGN rule 30).
// When the include has a fill, streamSettle appends it to dst and returns
// the include and the outcome to count once the fill is sent; else fill
// is nil: nothing to send yet (still loading) or ever (the placeholder
// stays, and the outcome is counted).
func (c *composer) streamSettle(dst []byte, s *slot) (_ []byte, fill *slot, outcome int) {
	a := s // the slot whose flight ended
	if s.isAlt {
		s = &s.owner.slots[s.idx]
	}
	if s.streamN == 0 || s.filled || a.state != stPending && a.state != stWaiting {
		return dst, nil, 0 // not anchored, settled already, or an old report
	}
	inc := &s.owner.e.Includes[s.idx]
	keep := func(outcome int) ([]byte, *slot, int) {
		c.settled(s, outcome)
		return dst, nil, 0
	}
	if e, err := a.flight.Result(); err == nil && !fillable(e.Value.body) {
		return keep(metrics.StreamSkipped)
	}
	a.state = stWaiting
	c.waiting++ // settle counts it down
	c.settle(a)
	switch {
	case a.state == stWaiting:
		return dst, nil, 0 // looked up again: a new flight runs
	case a == s && s.state == stValue:
		return c.appendFill(dst, s, s, metrics.StreamFilled)
	case s.alt != nil && s.alt.state == stValue:
		return c.appendFill(dst, s, s.alt, metrics.StreamAlt)
	case s.alt != nil && s.alt.state == stWaiting:
		return dst, nil, 0 // the alt's flight runs
	case a.state == stPending:
		// Twice an answer this request may not be served.
		return keep(metrics.StreamSkipped)
	case inc.Continue:
		// onerror="continue": an empty fill removes the placeholder.
		dst = c.stream.wire.appendFillStart(dst, s.streamN)
		return c.stream.wire.appendFillEnd(dst), s, metrics.StreamFailed
	}
	return keep(metrics.StreamFailed)
}

// settled marks anchored include s as handled with outcome; it keeps its
// placeholder unless its fill was sent.
func (c *composer) settled(s *slot, outcome int) {
	s.filled = true
	c.stream.open--
	s.frag.StreamFills[outcome].Inc()
}

// appendFill appends the fill of anchored include s with the content of
// from (s itself or its alt), unless the content holds a script or would
// close the fill early (it is skipped), or takes the response past the
// output cap (too_large); then s keeps its placeholder. The fill's own
// pending includes get anchors of their own.
func (c *composer) appendFill(dst []byte, s, from *slot, outcome int) ([]byte, *slot, int) {
	st := c.stream
	hadRuntime := st.wire.runtime
	dst = st.wire.appendFillStart(dst, s.streamN)
	mark, open, n := len(dst), st.open, st.n
	dst = c.appendValue(dst, from)
	undo := func(o int) ([]byte, *slot, int) {
		// The fill's own anchors are not sent: they are not open.
		st.wire.runtime, st.open = hadRuntime, open
		for _, nd := range c.nodes {
			for i := range nd.slots {
				if x := &nd.slots[i]; x.streamN > n {
					x.streamN, x.filled = 0, true
				}
			}
		}
		c.settled(s, o)
		return dst[:0], nil, 0
	}
	if !st.wire.fillSafe(dst[mark:]) {
		return undo(metrics.StreamSkipped)
	}
	dst = st.wire.appendFillEnd(dst)
	if st.written+int64(len(dst)) > c.env.limits.maxPageSize {
		c.env.m.ESIErrors[metrics.ErrTooLarge].Inc()
		return undo(metrics.StreamTooLarge)
	}
	return dst, s, outcome
}

// finish records the end of the stream: its duration, and the access log
// line the handler left to it.
func (st *pageStream) finish() {
	e := &st.end
	e.done()
	d := time.Since(e.start)
	e.p.m.StreamDuration.Observe(d.Seconds())
	if e.p.cfg.AccessLog {
		e.st.fills = st.fills
		e.p.logRequest(e.method, e.path, e.remote, e.code, e.ttfb, d, &e.st)
	}
}

// streamOut writes a stream's parts, each flushed to the client at once,
// through a compressing writer when the response is encoded.
type streamOut struct {
	w   *bufio.Writer
	enc string
	z   interface {
		io.Writer
		Flush() error
		Close() error
	}
}

var (
	gzipPool   = sync.Pool{New: func() any { z, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression); return z }}
	brotliPool = sync.Pool{New: func() any {
		// A 256 KiB window rather than the default 4 MiB: a server holds
		// up to --fetch-concurrency of these at once.
		return brotli.NewWriterOptions(nil, brotli.WriterOptions{Quality: 5, LGWin: 18})
	}}
)

func newStreamOut(w *bufio.Writer, enc string) *streamOut {
	o := &streamOut{w: w, enc: enc}
	switch enc {
	case "gzip":
		z := gzipPool.Get().(*gzip.Writer)
		z.Reset(w)
		o.z = z
	case "br":
		z := brotliPool.Get().(*brotli.Writer)
		z.Reset(w)
		o.z = z
	}
	return o
}

// send writes b and flushes it to the client; false when the client is
// gone.
func (o *streamOut) send(b []byte) bool {
	if o.z == nil {
		_, err := o.w.Write(b)
		return err == nil && o.w.Flush() == nil
	}
	_, err := o.z.Write(b)
	return err == nil && o.z.Flush() == nil && o.w.Flush() == nil
}

// close writes the last part b and ends the encoding.
func (o *streamOut) close(b []byte) {
	if o.z == nil {
		o.send(b)
		return
	}
	if _, err := o.z.Write(b); err == nil && o.z.Close() == nil {
		_ = o.w.Flush()
	}
}

// release gives the compressing writer back for the next stream.
func (o *streamOut) release() {
	switch z := o.z.(type) {
	case *gzip.Writer:
		z.Reset(io.Discard)
		gzipPool.Put(z)
	case *brotli.Writer:
		z.Reset(io.Discard)
		brotliPool.Put(z)
	}
	o.z = nil
}

// logRequest writes one access log line. ttfb is the time to the end of
// the first flush, which for an answer that is not streamed is d.
func (p *Proxy) logRequest(method, path, remote string, code int, ttfb, d time.Duration, st *reqStats) {
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("path", path),
		slog.Int("status", code),
		slog.Float64("ttfb_ms", ms(ttfb)),
		slog.Float64("duration_ms", ms(d)),
		slog.String("remote", remote),
	}
	if st.composed {
		attrs = append(attrs,
			slog.Int("includes", st.includes),
			slog.Int("hits", st.hits),
			slog.Int("stale", st.stale),
			slog.Int("misses", st.misses),
			slog.Int("placeholders", st.placeholders),
			slog.Int("fallbacks", st.fallbacks),
		)
		if st.streamed {
			attrs = append(attrs, slog.Int("fills", st.fills))
		}
	}
	p.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
