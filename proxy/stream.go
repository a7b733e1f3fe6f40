package proxy

import (
	"bufio"
	"bytes"
	"time"

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
	n        int       // includes rendered so far, in depth-first page order
	open     int       // anchored includes not settled yet
	written  int64     // bytes of the response so far, against the output cap
}

// streamable decides whether the page ctx asks for, composed from tpl
// with the upstream's answer resp, may be streamed, and with which nonce.
func (p *Proxy) streamable(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, tpl *fragment.Template, budget time.Duration) (nonce string, ok bool) {
	if budget <= 0 || !ctx.IsGet() || !ctx.Request.Header.IsHTTP11() || p.draining.Load() || p.closed.Load() {
		return "", false
	}
	if !bytes.HasPrefix(resp.Header.ContentType(), []byte("text/html")) || tpl.HasMetaCSP() {
		return "", false
	}
	if enc := resp.Header.ContentEncoding(); len(enc) > 0 && !equalFold(enc, "identity") &&
		pickEncoding(ctx.Request.Header.Peek("Accept-Encoding")) != "" {
		return "", false // the page would be compressed whole
	}
	var policies []string
	for k, v := range resp.Header.All() {
		if equalFold(k, "Content-Security-Policy") || equalFold(k, "Content-Security-Policy-Report-Only") {
			policies = append(policies, string(v))
		}
	}
	return streamPolicy(policies)
}

// streamSlot reports whether a pending include is sent with an anchor and
// kept open: it is in element content, its fragment's rule lets it stream
// and its flight is still running.
func (c *composer) streamSlot(s *slot, inc *fragment.Include) bool {
	return c.stream != nil && inc.Streamable && !s.noStream && s.flight != nil &&
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
// with anchored placeholders), then each fill as its flight ends within
// the budget, then the tail and the end of the chunked body. It runs on
// fasthttp's body writer after the handler returned, and releases c.
func (c *composer) writeStream(w *bufio.Writer, root *node, head []byte, stop <-chan struct{}) {
	defer c.release()
	st := c.stream
	st.written = int64(len(head))
	if _, err := w.Write(head); err != nil || w.Flush() != nil {
		return // the client is gone
	}
	buf := head[:0]
	var timer *time.Timer
	for st.open > 0 {
		if s := c.arr.take(); s != nil {
			if s.streamN == 0 || s.filled {
				continue
			}
			s.filled = true
			st.open--
			buf = c.appendFill(buf[:0], s)
			if len(buf) == 0 {
				continue
			}
			st.written += int64(len(buf))
			if _, err := w.Write(buf); err != nil || w.Flush() != nil {
				return
			}
			continue
		}
		left := time.Until(st.deadline)
		if left <= 0 {
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
			st.deadline = time.Now() // shutdown: end well-formed, placeholders kept
		}
	}
	buf = root.tpl.RenderTail(buf[:0], &root.e, c)
	if _, err := w.Write(buf); err == nil {
		_ = w.Flush()
	}
}

// appendFill appends the fill of an anchored include whose flight ended,
// or nothing when it keeps its placeholder: failed (with onerror=
// "continue" an empty fill), not servable to this request, holding a
// script, or past the output cap.
func (c *composer) appendFill(dst []byte, s *slot) []byte {
	st := c.stream
	inc := &s.owner.e.Includes[s.idx]
	e, err := s.flight.Result()
	if err != nil {
		if inc.Continue {
			dst = st.wire.appendFillStart(dst, s.streamN)
			return st.wire.appendFillEnd(dst)
		}
		return dst
	}
	v := e.Value
	if !answerServable(v.serveScope, c.scope) || !fillable(v.body) {
		return dst
	}
	c.setValue(s.owner, s, v)
	hadRuntime := st.wire.runtime
	dst = st.wire.appendFillStart(dst, s.streamN)
	dst = c.appendValue(dst, s)
	if st.written+int64(len(dst)) > c.env.limits.maxPageSize {
		c.env.m.ESIErrors[metrics.ErrTooLarge].Inc()
		st.wire.runtime = hadRuntime
		return dst[:0]
	}
	return st.wire.appendFillEnd(dst)
}
