package proxy

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"sync"

	"github.com/valyala/fasthttp"

	"fragcache/fragment"
	"fragcache/metrics"
)

// composePage is the page stage: it reads an opted-in page (bounded,
// decoded), parses it (parsed templates are reused), has a composer fill
// its includes and writes the response.
//
// With debug, the answer carries the debug Server-Timing (rule 32).
func (p *Proxy) composePage(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, st *reqStats, debug bool) {
	bufp := pageBufPool.Get().(*[]byte)
	defer func() {
		if cap(*bufp) <= maxPooledPage {
			pageBufPool.Put(bufp)
		}
	}()
	live := p.live.Load()
	raw, err := readLimited((*bufp)[:0], resp, live.MaxPageSize)
	*bufp = raw[:0]
	received := raw // as the upstream encoded it
	if err == nil {
		enc := resp.Header.ContentEncoding()
		if len(enc) > 0 && !equalFold(enc, "identity") {
			raw, err = decodeBody(nil, raw, enc, live.MaxPageSize)
		}
	}
	if err != nil {
		if errors.Is(err, errTooLarge) {
			p.m.ESIErrors[metrics.ErrTooLarge].Inc()
			ctx.Error("upstream page too large", fasthttp.StatusBadGateway)
		} else {
			ctx.Error("upstream page unreadable", fasthttp.StatusBadGateway)
		}
		ctx.SetConnectionClose()
		return
	}
	tpl, perr := p.tpls.get(raw, fragment.Limits{Stream: live.StreamBudget > 0})
	if perr != nil {
		p.m.ESIErrors[metrics.ErrParse].Inc()
	}
	if !tpl.HasESI() {
		// Nothing to compose: the answer goes out as a passthrough, every
		// header (validators, length, encoding) as the upstream sent it
		// (rule 7).
		st.composed = false
		writeUnchanged(ctx, resp, received)
		if debug {
			markUncomposed(&ctx.Response.Header, "no-esi")
		}
		return
	}

	c := newComposer(live.env, ctx, p.pages.Add(1))
	streaming := false
	defer func() {
		if !streaming {
			c.release()
		}
	}()
	if debug {
		// The debug header names every include's fate, which a stream
		// only knows at its end: a debugged page is never streamed.
		c.setDebug()
	} else if nonce, enc, ok := p.streamable(ctx, resp, tpl, live.StreamBudget); ok {
		if done, free := p.openStream(); free {
			c.stream = &pageStream{wire: newStreamWire(nonce), deadline: c.start.Add(live.StreamBudget), enc: enc}
			c.stream.end.done = done
			defer func() {
				if !streaming {
					done() // composed whole after all
				}
			}()
		} else {
			c.streamShed = true
		}
	}
	out, ok := c.compose(tpl, ctx.Response.SwapBody(nil)[:0])
	if !ok {
		// Variables, not includes, took it past the cap (includes are
		// capped one by one in appendCapped).
		p.m.ESIErrors[metrics.ErrTooLarge].Inc()
		ctx.Response.SwapBody(out[:0])
		ctx.Error("composed page too large", fasthttp.StatusBadGateway)
		return
	}
	start := st.start
	*st = c.st
	st.start = start
	st.composed = true
	st.includes = c.count
	p.m.PageIncludes.Observe(float64(c.count))
	if c.degraded {
		p.m.CompositionsDegraded.Inc()
	} else {
		p.m.CompositionsComplete.Inc()
	}
	if c.stream == nil {
		f := c.facts()
		if debug {
			f.timing = c.appendServerTiming(nil)
		}
		writePage(ctx, resp, out, f)
		return
	}
	// The composer lives on in the body writer, which releases it; the
	// writer's goroutine starts at once, so c is not touched here after.
	streaming = true
	st.streamed = true
	f := c.facts()
	f.noStore = true
	f.streamed, f.stream = true, c.stream.enc
	writePage(ctx, resp, nil, f)
	c.detachRequest()
	c.stream.end = streamEnd{
		p: p, start: st.start, st: *st, done: c.stream.end.done,
		method: string(ctx.Method()), path: string(ctx.Path()), remote: ctx.RemoteIP().String(),
		code: ctx.Response.StatusCode(),
	}
	stop, root := p.streamStop, c.nodes[0]
	ctx.Response.SetBodyStreamWriter(func(w *bufio.Writer) { c.writeStream(w, root, out, stop) })
}

// pageBufPool holds the buffers upstream pages are read into; buffers
// that grew past maxPooledPage are dropped rather than kept.
var pageBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

const maxPooledPage = 1 << 20

// readLimited appends the upstream page's body to dst, refusing more than
// limit bytes.
func readLimited(dst []byte, resp *fasthttp.Response, limit int64) ([]byte, error) {
	r := resp.BodyStream()
	if r == nil {
		b := resp.Body()
		if int64(len(b)) > limit {
			return dst, errTooLarge
		}
		return append(dst, b...), nil
	}
	if cl := resp.Header.ContentLength(); cl > 0 && int64(cl) <= limit {
		dst = slices.Grow(dst, cl+1)
	}
	for {
		if len(dst) == cap(dst) {
			dst = slices.Grow(dst, 16<<10)
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)) > limit {
			return dst, errTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}
