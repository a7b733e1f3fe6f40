package proxy

import (
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// pageFacts is what composing a page found that its response headers
// depend on.
type pageFacts struct {
	varyLang bool      // a fragment was fetched with the request's language
	noStore  bool      // placeholders, a private or unstored fragment, personalised or cut
	minFresh time.Time // the earliest end of freshness of its fragments
	timing   []byte    // the debug Server-Timing entries; nil unless asked for
	streamed bool      // the body follows in a stream (stream.go)
	stream   string    // the stream's Content-Encoding when the page was encoded; "": identity
}

// writePage sets the composed page's headers and body (DESIGN.md, precise
// rule 7).
func writePage(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, body []byte, f pageFacts) {
	h := &ctx.Response.Header
	resp.Header.CopyTo(h)
	stripHop(h)
	dropBadReason(h)
	for _, k := range []string{"Surrogate-Control", "Etag", "Last-Modified", "Content-Encoding", "Content-Length"} {
		h.Del(k)
	}
	if f.varyLang {
		addVary(h, "Accept-Language")
	}
	if f.noStore {
		h.Set("Cache-Control", "private, no-store")
	} else if cc := resp.Header.Peek("Cache-Control"); len(cc) > 0 && !f.minFresh.IsZero() {
		var buf [256]byte
		h.SetBytesV("Cache-Control", lowerMaxAge(buf[:0], cc, time.Until(f.minFresh)))
	}
	if enc := resp.Header.ContentEncoding(); len(enc) > 0 && !equalFold(enc, "identity") {
		// The page goes out in the encoding this client accepts: a cache
		// in front must not hand it to one that accepts another.
		addVary(h, "Accept-Encoding")
		if f.streamed {
			if f.stream != "" {
				h.Set("Content-Encoding", f.stream) // the stream's writer encodes
			}
		} else if out := pickEncoding(ctx.Request.Header.Peek("Accept-Encoding")); out != "" {
			encoded := encodeBody(nil, body, out)
			h.Set("Content-Encoding", out)
			body = append(body[:0], encoded...)
		}
	}
	if f.timing != nil {
		addServerTiming(h, f.timing)
	}
	if f.streamed {
		h.Set("X-Accel-Buffering", "no") // a proxy in front must not hold the parts back
	}
	ctx.Response.SwapBody(body)
}

// writeUnchanged sends an opted-in answer that holds no ESI directive as
// a passthrough would: status, headers and the body as received, but for
// hop-by-hop headers and Surrogate-Control.
func writeUnchanged(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, body []byte) {
	h := &ctx.Response.Header
	resp.Header.CopyTo(h)
	stripHop(h)
	dropBadReason(h)
	h.Del("Surrogate-Control")
	ctx.Response.SetBody(body)
}

// lowerMaxAge rewrites a Cache-Control value so that max-age and s-maxage
// say no more than left.
func lowerMaxAge(dst, cc []byte, left time.Duration) []byte {
	secs := int64(left / time.Second)
	if secs < 0 {
		secs = 0
	}
	first := true
	forEachDirective(cc, func(name, val, item []byte) {
		if !first {
			dst = append(dst, ", "...)
		}
		first = false
		if equalFold(name, "max-age") || equalFold(name, "s-maxage") {
			v := parseSeconds(val)
			if v < 0 || int64(v/time.Second) > secs {
				v = time.Duration(secs) * time.Second
			}
			dst = append(dst, name...)
			dst = append(dst, '=')
			dst = strconv.AppendInt(dst, int64(v/time.Second), 10)
			return
		}
		dst = append(dst, item...) // as sent: a quoted value keeps its quotes
	})
	return dst
}

// addVary merges token into the response's Vary headers (one header
// afterwards), unless they already name it or say `*`.
func addVary(h *fasthttp.ResponseHeader, token string) {
	var buf [128]byte
	merged := buf[:0]
	for k, v := range h.All() {
		if !equalFold(k, "Vary") {
			continue
		}
		for _, t := range strings.Split(string(v), ",") {
			t = strings.TrimSpace(t)
			if t == "*" || strings.EqualFold(t, token) {
				return
			}
		}
		if len(merged) > 0 {
			merged = append(merged, ", "...)
		}
		merged = append(merged, v...)
	}
	if len(merged) > 0 {
		merged = append(merged, ", "...)
	}
	merged = append(merged, token...)
	h.Del("Vary")
	h.SetBytesV("Vary", merged)
}
