package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/fragment"
	"fragcache/metrics"
)

// debugHeader is the request header that asks for the debug Server-Timing
// (DESIGN "Seeing what happened", rule 32). fragcache never sends it on:
// not to the upstream, not to a fragment host.
const debugHeader = "Fragcache-Debug"

// outcome is what became of one include on one page: how its lookup went
// and what it rendered instead when it did not render its own content.
// The debug header and the demo's badges (rule 34) name it.
type outcome uint8

const (
	outNone      outcome = iota // not looked up
	outHit                      // fresh from the cache
	outUpdating                 // stale from the cache while its refresh runs
	outStale                    // stale from the cache
	outMiss                     // not in the cache, fetched within the page's wait
	outBypass                   // an answer never stored, fetched within the wait
	outPending                  // still loading when its wait ended: its placeholder
	outShed                     // the fetch queue was full: its placeholder
	outFailed                   // failed with no fallback: its placeholder
	outAlt                      // failed: its alt rendered
	outExcept                   // failed inside an attempt: the except rendered
	outRemoved                  // failed with onerror="continue": nothing rendered
	outDenied                   // its src may not be fetched (the host allowlist)
	outLoop                     // an ancestor's URL: its placeholder
	outDepth                    // deeper than --max-depth: its placeholder
	outLimit                    // past --max-includes: its placeholder
	outTooLarge                 // its content would pass --max-page-size
	outStreaming                // still loading: sent with anchors, to be filled in the stream
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	"none", "hit", "updating", "stale", "miss", "bypass", "pending", "shed", "failed",
	"alt", "except", "removed", "denied", "loop", "depth", "limit", "too_large",
	"streaming",
}

func (o outcome) String() string { return outcomeNames[o] }

// unserved is the outcome of an include that rendered neither content nor
// a fallback: cut by a limit, shed, or still pending.
func unserved(s *slot) outcome {
	switch s.lookup {
	case outLoop, outDepth, outLimit, outShed:
		return s.lookup
	}
	return outPending
}

// debugNote is one include's entry of the debug header, in the order the
// page renders its includes (depth first, as fc-N counts them).
type debugNote struct {
	frag *metrics.Fragment
	raw  string // the src as the page wrote it (fragment.Include.RawSrc)
	out  outcome
	at   time.Duration // since the page's wait began, when its fate was known
}

// stamp records when s's fate became known, if this page records
// outcomes.
func (c *composer) stamp(s *slot) {
	if c.record {
		s.at = time.Since(c.start)
	}
}

// note reserves the debug entry of an include about to render, in render
// order; -1 when this page records no outcomes. noted fills it in once
// the include's rendering is decided.
func (c *composer) note(s *slot, inc *fragment.Include) int {
	if !c.record {
		return -1
	}
	c.notes = append(c.notes, debugNote{frag: s.frag, raw: inc.RawSrc})
	return len(c.notes) - 1
}

func (c *composer) noted(d int, out outcome, at time.Duration) {
	if d >= 0 {
		c.notes[d].out, c.notes[d].at = out, at
	}
}

// appendMarked renders one of the page's own includes wrapped in an
// element whose data-fc-outcome names its outcome: the demo app's boxes
// show where their content came from without a debug token (rule 34).
// An except's include says "except", whatever its own outcome: what the
// visitor sees there is the fallback of a failed attempt, whose own
// includes' marks went with the attempt's output.
func (c *composer) appendMarked(dst []byte, e *fragment.Eval, inc *fragment.Include, n *node) ([]byte, bool) {
	mark, d := len(dst), len(c.notes)
	dst, failed := c.appendInclude(dst, e, inc, n)
	if d >= len(c.notes) {
		return dst, failed
	}
	out := c.notes[d].out
	if inc.Deferred {
		out = outExcept
	}
	var open [64]byte
	tag := append(append(append(open[:0], `<div class="fc-box" data-fc-outcome="`...), out.String()...), `">`...)
	dst = slices.Insert(dst, mark, tag...)
	return append(dst, "</div>"...), failed
}

// maxTimingBytes bounds fragcache's entries of a Server-Timing header: a
// page with hundreds of includes gets the first ones, then one fc-more
// entry counting the rest by outcome (rule 32).
const maxTimingBytes = 1024

// appendServerTiming appends the page's debug entries to dst, one per
// include in page order, `fc-N;desc="<name> <outcome>";dur=<ms>`, at most
// maxTimingBytes in all, the fc-more entry included.
func (c *composer) appendServerTiming(dst []byte) []byte {
	start := len(dst)
	var ends []int // ends[i]: the length of the entries up to i's
	n := 0         // entries written
	for n < len(c.notes) && len(dst)-start <= maxTimingBytes {
		if n > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendTimingEntry(dst, n+1, &c.notes[n])
		ends = append(ends, len(dst)-start)
		n++
	}
	if n == len(c.notes) && len(dst)-start <= maxTimingBytes {
		return dst
	}
	// Keep the longest run of entries that leaves room for fc-more,
	// which counts the rest.
	var counts [numOutcomes]int
	for i := n; i < len(c.notes); i++ {
		counts[c.notes[i].out]++
	}
	var more []byte
	for k := n; k >= 0; k-- {
		if k < n {
			counts[c.notes[k].out]++
		}
		if k == len(c.notes) {
			continue
		}
		kept, sep := 0, 0
		if k > 0 {
			kept, sep = ends[k-1], 2
		}
		more = appendMore(more[:0], len(c.notes)-k, &counts)
		if kept+sep+len(more) <= maxTimingBytes {
			dst = dst[:start+kept]
			if k > 0 {
				dst = append(dst, ", "...)
			}
			return append(dst, more...)
		}
	}
	return dst[:start] // not reached: fc-more alone fits
}

func appendTimingEntry(dst []byte, n int, d *debugNote) []byte {
	dst = append(dst, "fc-"...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, `;desc="`...)
	if d.frag != nil && d.frag.Name != metrics.OtherFragment {
		dst = appendQuoted(dst, d.frag.Name)
	} else {
		dst = appendQuoted(dst, srcName(d.raw))
	}
	dst = append(dst, ' ')
	dst = append(dst, d.out.String()...)
	dst = append(dst, `";dur=`...)
	return strconv.AppendFloat(dst, float64(d.at)/float64(time.Millisecond), 'f', 1, 64)
}

// appendMore appends the fc-more entry: n includes not listed, counted
// by outcome.
func appendMore(dst []byte, n int, counts *[numOutcomes]int) []byte {
	dst = append(dst, `fc-more;desc="`...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	dst = append(dst, " more:"...)
	sep := byte(' ')
	for o, k := range counts {
		if k == 0 {
			continue
		}
		dst = append(dst, sep)
		sep = ','
		dst = append(dst, outcome(o).String()...)
		dst = append(dst, '=')
		dst = strconv.AppendInt(dst, int64(k), 10)
	}
	return append(dst, '"')
}

// appendQuoted appends s as the inside of a quoted-string (RFC 9110
// section 5.6.4): `"` and `\` escaped; control bytes and non-ASCII bytes,
// which have no place in a header value, become '?'.
func appendQuoted(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b == '"' || b == '\\':
			dst = append(dst, '\\', b)
		case b < 0x20 || b >= 0x7f:
			dst = append(dst, '?')
		default:
			dst = append(dst, b)
		}
	}
	return dst
}

// debugToken is the Fragcache-Debug token as the handler compares it: its
// SHA-256, so that the comparison takes the same time whatever the length
// of what a client sends.
type debugToken struct {
	on  bool
	sum [sha256.Size]byte
}

func newDebugToken(tok []byte) debugToken {
	if len(tok) == 0 {
		return debugToken{}
	}
	return debugToken{on: true, sum: sha256.Sum256(tok)}
}

// asked reports whether the request carries the right Fragcache-Debug
// token.
func (t *debugToken) asked(ctx *fasthttp.RequestCtx) bool {
	if !t.on {
		return false
	}
	v := ctx.Request.Header.Peek(debugHeader)
	if len(v) == 0 {
		return false
	}
	sum := sha256.Sum256(v)
	return subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1
}

// addServerTiming appends entries to the response's Server-Timing (after
// the upstream's own, merged into one header) and makes the answer
// private: a debug answer describes one request and is no cache's to
// keep (rule 32).
func addServerTiming(h *fasthttp.ResponseHeader, entries []byte) {
	var merged []byte
	for k, v := range h.All() {
		if equalFold(k, "Server-Timing") && len(v) > 0 {
			merged = append(append(merged, v...), ", "...)
		}
	}
	merged = append(merged, entries...)
	h.Del("Server-Timing")
	h.SetBytesV("Server-Timing", merged)
	h.Set("Cache-Control", "private, no-store")
}

// markUncomposed gives an answer the debug client asked about, but that
// was not composed, its one entry: fc-page;desc="passthrough <reason>".
func markUncomposed(h *fasthttp.ResponseHeader, reason string) {
	addServerTiming(h, append(append([]byte(`fc-page;desc="passthrough `), reason...), '"'))
}

// passReason says why an upstream answer is passed through rather than
// composed, for the debug header.
func (p *Proxy) passReason(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) string {
	switch code := resp.StatusCode(); {
	case ctx.IsHead():
		return "head"
	case code < 200 || code == fasthttp.StatusNoContent || code == fasthttp.StatusPartialContent || code == fasthttp.StatusNotModified:
		return "status=" + strconv.Itoa(code)
	case !isHTML(resp.Header.ContentType()):
		return "not-html"
	}
	return "not-opted-in"
}
