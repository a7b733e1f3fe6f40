package proxy

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// hopHeaders are removed in both directions (RFC 9110 section 7.6.1),
// together with every header the Connection header names.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// connectionTokens appends to dst the header names listed in a
// Connection header value.
func connectionTokens(dst [][]byte, v []byte) [][]byte {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		if tok = bytes.TrimSpace(tok); len(tok) > 0 {
			dst = append(dst, tok)
		}
	}
	return dst
}

// hopHeader is what stripHop needs of a request or response header.
type hopHeader interface {
	Peek(key string) []byte
	Del(key string)
	DelBytes(key []byte)
	ResetConnectionClose()
}

// stripHop removes hop-by-hop headers, and those the Connection header
// names, from a request or response header.
func stripHop(h hopHeader) {
	var named [8][]byte
	toks := connectionTokens(named[:0], h.Peek("Connection"))
	for _, t := range toks {
		if !equalFold(t, "close") && !equalFold(t, "keep-alive") {
			h.DelBytes(t)
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.ResetConnectionClose()
}

// dropBadReason removes a reason phrase that holds a control byte, so the
// status line fragcache writes is only HTAB, SP, VCHAR and obs-text (RFC
// 9112 section 4); fasthttp then writes the standard reason of the status
// code. fasthttp's response parser turns CR and LF in a status line into
// spaces but keeps NUL and the other control bytes, and a client must not
// rely on the reason phrase anyway.
func dropBadReason(h *fasthttp.ResponseHeader) {
	for _, c := range h.StatusMessage() {
		if c < ' ' && c != '\t' || c == 0x7f {
			h.SetStatusMessage(nil)
			return
		}
	}
}

// smuggling reports why a request's raw header block must be refused, or
// "" when it is clean. fasthttp accepts a request with both Content-Length
// and Transfer-Encoding, duplicate Content-Length, obs-fold and bare-LF
// line ends; a proxy that forwards such a request lets two parsers disagree
// on where it ends (request smuggling), so fragcache refuses them.
func smuggling(raw []byte) string {
	cl, te := 0, 0
	var firstCL []byte
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\n')
		if j < 0 {
			j = len(raw) - i
		}
		line := raw[i : i+j]
		if i+j < len(raw) && (j == 0 || line[j-1] != '\r') {
			return "bare LF line end"
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		i += j + 1
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return "obsolete line folding"
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return "malformed header line"
		}
		name := line[:c]
		if bytes.ContainsAny(name, " \t") {
			return "white space in a header name"
		}
		val := bytes.TrimSpace(line[c+1:])
		switch {
		case equalFold(name, "content-length"):
			cl++
			if cl > 1 && !bytes.Equal(val, firstCL) {
				return "conflicting Content-Length headers"
			}
			if cl > 1 {
				return "duplicate Content-Length headers"
			}
			firstCL = val
		case equalFold(name, "transfer-encoding"):
			te++
			if !equalFold(val, "chunked") || te > 1 {
				return "unsupported Transfer-Encoding"
			}
		}
	}
	if cl > 0 && te > 0 {
		return "both Content-Length and Transfer-Encoding"
	}
	return ""
}

// cacheDirectives is what fragcache reads of a fragment response's
// Cache-Control and Surrogate-Control headers.
type cacheDirectives struct {
	public, private, noStore, noCache bool
	maxAge, sMaxAge, surrogateMaxAge  time.Duration // -1 = absent
	surrogateNoStore                  bool
	esi                               bool // Surrogate-Control content="ESI/1.0"
}

func parseCacheDirectives(h *fasthttp.ResponseHeader) cacheDirectives {
	d := cacheDirectives{maxAge: -1, sMaxAge: -1, surrogateMaxAge: -1}
	for k, v := range h.All() {
		switch {
		case equalFold(k, "Cache-Control"):
			forEachDirective(v, func(name, val, _ []byte) {
				switch {
				case equalFold(name, "public"):
					d.public = true
				case equalFold(name, "private"):
					d.private = true
				case equalFold(name, "no-store"):
					d.noStore = true
				case equalFold(name, "no-cache"):
					d.noCache = true
				case equalFold(name, "max-age"):
					d.maxAge = parseSeconds(val)
				case equalFold(name, "s-maxage"):
					d.sMaxAge = parseSeconds(val)
				}
			})
		case equalFold(k, "Surrogate-Control"):
			forEachDirective(v, func(name, val, _ []byte) {
				switch {
				case equalFold(name, "max-age"):
					// max-age=30+60 gives freshness and a stale extension.
					if i := bytes.IndexByte(val, '+'); i >= 0 {
						val = val[:i]
					}
					d.surrogateMaxAge = parseSeconds(val)
				case equalFold(name, "no-store"):
					d.surrogateNoStore = true
				case equalFold(name, "content"):
					if containsFold(val, "esi/1.0") {
						d.esi = true
					}
				}
			})
		}
	}
	return d
}

// hasESITrigger reports whether Surrogate-Control says content="ESI/1.0".
func hasESITrigger(h *fasthttp.ResponseHeader) bool {
	found := false
	for k, v := range h.All() {
		if !equalFold(k, "Surrogate-Control") {
			continue
		}
		forEachDirective(v, func(name, val, _ []byte) {
			if equalFold(name, "content") && containsFold(val, "esi/1.0") {
				found = true
			}
		})
	}
	return found
}

// forEachDirective splits a Cache-Control-style list into name[=value]
// pairs; quoted values lose their quotes.
func forEachDirective(v []byte, fn func(name, val, item []byte)) {
	for len(v) > 0 {
		var item []byte
		inQuote := false
		end := len(v)
		for i, c := range v {
			if c == '"' {
				inQuote = !inQuote
			}
			if c == ',' && !inQuote {
				end = i
				break
			}
		}
		item = v[:end]
		if end < len(v) {
			v = v[end+1:]
		} else {
			v = nil
		}
		name, val := item, []byte(nil)
		if i := bytes.IndexByte(item, '='); i >= 0 {
			name, val = item[:i], bytes.TrimSpace(item[i+1:])
			val = bytes.Trim(val, `"`)
		}
		name = bytes.TrimSpace(name)
		if len(name) > 0 {
			fn(name, val, bytes.TrimSpace(item))
		}
	}
}

// parseSeconds reads a delta-seconds value; malformed values are absent.
func parseSeconds(v []byte) time.Duration {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	if n > 365*24*3600 {
		n = 365 * 24 * 3600
	}
	return time.Duration(n) * time.Second
}

// varyInfo is what fragcache reads of a fragment response's Vary header.
type varyInfo struct {
	star, lang, user bool
}

func parseVary(h *fasthttp.ResponseHeader) varyInfo {
	var vi varyInfo
	for k, v := range h.All() {
		if !equalFold(k, "Vary") {
			continue
		}
		for _, tok := range bytes.Split(v, []byte(",")) {
			tok = bytes.TrimSpace(tok)
			switch {
			case equalFold(tok, "*"):
				vi.star = true
			case equalFold(tok, "accept-language"):
				vi.lang = true
			case equalFold(tok, "cookie") || equalFold(tok, "authorization"):
				vi.user = true
			}
		}
	}
	return vi
}

// containsFold reports whether s (lower case) occurs in b, ASCII
// case-insensitively.
func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if equalFold(b[i:i+len(s)], s) {
			return true
		}
	}
	return false
}

// scrubHeaderValues removes from a message of fasthttp's the header
// values it quotes. SecureErrorLogMessage keeps the raw head out of
// fasthttp's parse errors, but "invalid header value %q" and "malformed
// mime header line: %q" still quote the one line they refuse, and that
// line may be a Cookie, an Authorization or a Set-Cookie.
func scrubHeaderValues(msg string) string {
	for _, prefix := range []string{"invalid header value ", "invalid header key ", "malformed mime header line: "} {
		from := 0
		for {
			i := strings.Index(msg[from:], prefix)
			if i < 0 {
				break
			}
			start := from + i + len(prefix)
			end := quotedEnd(msg, start)
			if end < 0 {
				break
			}
			msg = msg[:start] + `"<redacted>"` + msg[end:]
			from = start + len(`"<redacted>"`)
		}
	}
	return msg
}

// quotedEnd returns the index just past the Go-quoted string that starts
// at msg[i], or -1 when none starts there.
func quotedEnd(msg string, i int) int {
	if i >= len(msg) || msg[i] != '"' {
		return -1
	}
	for j := i + 1; j < len(msg); j++ {
		switch msg[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}
