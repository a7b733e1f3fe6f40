package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"net/url"
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
	cl, te, under := 0, 0, 0
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
		if bytes.IndexByte(name, '_') >= 0 {
			// Each is dropped (dropRequestHeaders) at the cost of a pass
			// over the header: thousands would cost seconds.
			if under++; under > maxUnderscoreNames {
				return "too many header names with an underscore"
			}
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

// maxUnderscoreNames is the most header lines with an underscore in their
// name a request may carry; they are dropped, and no client sends many.
const maxUnderscoreNames = 32

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

// rewriteHeaders are request headers fragcache never forwards: they let a
// client change the URL or the method the app acts on behind its front
// controller (X-Original-URL and X-Rewrite-URL in IIS, Symfony and Zend;
// the method overrides of Rails, Laravel, Spring, ASP.NET), past whatever
// looked at the request line on the way in. DESIGN rule 12.
var rewriteHeaders = []string{
	"X-Original-Url",
	"X-Rewrite-Url",
	"X-Http-Method-Override",
	"X-Http-Method",
	"X-Method-Override",
}

// forwardingHeaders say where a request came from and which URL it was
// for, as a proxy in front of the app saw it; frameworks build the client's
// address, scheme and host from them. A client's own are dropped unless
// the client is a trusted proxy (DESIGN rules 12 and 18): otherwise a
// visitor chooses the address the app logs and rate-limits, and the scheme
// and host it builds links and redirects with. X-Forwarded-For, -Proto and
// -Host are not listed: fragcache writes those itself.
var forwardingHeaders = []string{
	"Forwarded",
	"X-Real-Ip",
	"True-Client-Ip",
	"X-Client-Ip",
	"X-Cluster-Client-Ip",
	"X-Forwarded-Port",
	"X-Forwarded-Scheme",
	"X-Forwarded-Ssl",
	"X-Forwarded-Prefix",
	"X-Forwarded-Server",
	"X-Url-Scheme",
	"Front-End-Https",
	"X-Host",
	"X-Original-Host",
}

// parseTrustedList reads Config.TrustedProxies: CIDRs or single
// addresses (Validate has refused the malformed ones with their index).
func parseTrustedList(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if strings.Contains(s, "%") {
			return nil, fmt.Errorf("trusted proxy %q: zones are not supported", s)
		}
		var p netip.Prefix
		var err error
		if strings.Contains(s, "/") {
			p, err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		switch {
		case err != nil || !p.IsValid():
			return nil, fmt.Errorf("trusted proxy %q is not an address or a CIDR", s)
		case p.Addr().Is4In6():
			// Peers are compared unmapped: such a prefix would never match.
			return nil, fmt.Errorf("trusted proxy %q: write IPv4 addresses in dotted form", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// forwarding is the forwarding stage's state: which peers are trusted
// proxies, which hosts the site is served as, and what the upstream is
// called. It decides every header a request to the upstream carries.
type forwarding struct {
	trusted        []netip.Prefix
	publicHosts    []string // never empty: the upstream's host without PublicHosts
	publicListed   bool     // PublicHosts was configured
	preserveHost   bool
	pageHost       string // the Host of page requests without PreserveHost
	upstreamScheme string
}

func newForwarding(cfg *Config, base *url.URL, trusted []netip.Prefix) *forwarding {
	fw := &forwarding{
		trusted:        trusted,
		publicHosts:    cfg.PublicHosts,
		publicListed:   len(cfg.PublicHosts) > 0,
		preserveHost:   cfg.PreserveHost,
		pageHost:       base.Host,
		upstreamScheme: base.Scheme,
	}
	if len(fw.publicHosts) == 0 {
		fw.publicHosts = []string{base.Host}
	}
	return fw
}

// trustedPeer reports whether the request's TCP peer is a trusted proxy.
// Only the peer address counts, never a header (DESIGN rule 18).
func (fw *forwarding) trustedPeer(ctx *fasthttp.RequestCtx) bool {
	if len(fw.trusted) == 0 {
		return false
	}
	ta, ok := ctx.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return false
	}
	a := ta.AddrPort().Addr().Unmap()
	for _, pr := range fw.trusted {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// firstItem is the first element of a comma-separated header value,
// trimmed: the one the proxy nearest the client wrote.
func firstItem(v []byte) []byte {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return bytes.TrimSpace(v)
}

// publicHost is the host a request is served as (DESIGN rules 11 and 12):
// its Host, or a trusted proxy's X-Forwarded-Host, when PublicHosts lists
// it (in the configured spelling), else the first listed host. It is never
// a value only the client chose.
func (fw *forwarding) publicHost(h *fasthttp.RequestHeader, trusted bool) string {
	cand := h.Host()
	if trusted {
		if xfh := firstItem(h.Peek("X-Forwarded-Host")); len(xfh) > 0 {
			cand = xfh
		}
	}
	for _, ph := range fw.publicHosts {
		if equalFold(cand, ph) {
			return ph
		}
	}
	return fw.publicHosts[0]
}

// scheme is the scheme of the client's connection to fragcache.
func scheme(ctx *fasthttp.RequestCtx) string {
	if ctx.IsTLS() {
		return "https"
	}
	return "http"
}

// setForwarded writes the X-Forwarded-* headers of a page request to the
// upstream and drops the forwarding headers of a client that is not a
// trusted proxy (DESIGN rules 12 and 18). in is the client's request, out
// the copy for the upstream. Every header written replaces all the lines
// of its name: a second X-Forwarded-For line would survive a plain Set.
func (fw *forwarding) setForwarded(ctx *fasthttp.RequestCtx, out *fasthttp.RequestHeader, trusted bool, public string) {
	in := &ctx.Request.Header
	if !trusted {
		for _, k := range forwardingHeaders {
			out.Del(k)
		}
	}

	// X-Forwarded-For: a trusted proxy's list, appended to; else only the
	// peer.
	var buf [256]byte
	b := buf[:0]
	if trusted {
		for _, v := range in.PeekAll("X-Forwarded-For") {
			if v = bytes.TrimSpace(v); len(v) > 0 {
				b = append(append(b, v...), ", "...)
			}
		}
	}
	out.Del("X-Forwarded-For")
	out.SetBytesV("X-Forwarded-For", appendRemoteIP(b, ctx))

	// X-Forwarded-Proto: a trusted proxy knows the scheme the client used
	// (a TLS load balancer in front); else it is the connection's.
	if !trusted || len(in.Peek("X-Forwarded-Proto")) == 0 {
		out.Del("X-Forwarded-Proto")
		out.Set("X-Forwarded-Proto", scheme(ctx))
	}

	// X-Forwarded-Host: with PublicHosts, always a listed host; else a
	// trusted proxy's as sent, or the Host the client sent.
	switch {
	case fw.publicListed:
		out.Del("X-Forwarded-Host")
		out.Set("X-Forwarded-Host", public)
	case trusted && len(in.Peek("X-Forwarded-Host")) > 0:
	case len(in.Host()) > 0:
		out.Del("X-Forwarded-Host")
		out.SetBytesV("X-Forwarded-Host", in.Host())
	default:
		out.Del("X-Forwarded-Host")
	}
}

// dropRequestHeaders removes from out, the upstream's copy of in, the
// headers no request may carry on: the URL and method rewrites, and every
// header whose name holds an underscore. CGI and the frameworks built on
// it (PHP, Rack, WSGI) read X_Forwarded_For as X-Forwarded-For, so such a
// name slips a forwarding header past any check that compares names.
// Names are read from in, which is not modified, so no name aliases
// memory a deletion moves.
func dropRequestHeaders(in, out *fasthttp.RequestHeader) {
	for _, k := range rewriteHeaders {
		out.Del(k)
	}
	for k := range in.All() {
		if bytes.IndexByte(k, '_') >= 0 {
			out.DelBytes(k)
		}
	}
}

// originForm returns the path and query of a request-target: an
// absolute-form target (http://user:pass@host/p?q) loses its scheme and
// authority, so its userinfo goes nowhere; an origin-form one is returned
// as it is.
func originForm(target []byte) []byte {
	if len(target) == 0 || target[0] == '/' || target[0] == '*' {
		return target
	}
	i := bytes.Index(target, []byte("://"))
	if i <= 0 {
		return target
	}
	rest := target[i+3:]
	if j := bytes.IndexAny(rest, "/?"); j >= 0 {
		if rest[j] == '?' {
			// http://host?q: the path is "/", the query stays.
			return append([]byte("/"), rest[j:]...)
		}
		return rest[j:]
	}
	return []byte("/")
}

// setRequestTarget sets the request-target of an upstream request: the
// client's path and query, byte for byte. fasthttp parses the target it is
// given and writes it back from the parse: it turns the userinfo of an
// absolute-form target into an Authorization header, and reads a path such
// as //host/x?u=http://y as a host and a shorter path. Path and query are
// therefore set from the bytes, the userinfo cleared, and the scheme set to
// the upstream's (a HostClient refuses a request whose scheme is not its
// own). A #fragment, which no client should send, is cut off, as
// fasthttp's parse did.
func setRequestTarget(req *fasthttp.Request, target []byte, scheme string) {
	target = originForm(target)
	if i := bytes.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	req.SetRequestURIBytes(target)
	u := req.URI()
	u.DisablePathNormalizing = true
	path, query, _ := bytes.Cut(target, []byte("?"))
	u.SetPathBytes(path)
	u.SetQueryStringBytes(query)
	u.SetUsernameBytes(nil)
	u.SetPasswordBytes(nil)
	u.SetScheme(scheme)
}

// fragFwd is what a page request passes on to its fragment fetches from
// the upstream (DESIGN rule 18): the scheme the client used, as
// X-Forwarded-Proto, and with PreserveHost the public host, as Host. The
// app may answer differently for each (an https redirect, absolute links,
// a virtual host), so both are part of the fragments' keys. Each takes
// few values, whatever the client sends: http or https, and a host that
// PublicHosts lists. Fetches to other hosts carry neither.
type fragFwd struct {
	proto string // "http" or "https"
	host  string // the Host of fetches from the upstream; "" = the upstream's
	// variant indexes the keys resolvedSrc precomputes: the scheme (0
	// http, 1 https) for the upstream's host or the first public host;
	// -1 for the other public hosts, whose keys are built per request.
	variant int
}

// fragmentForwarding computes a page request's fragFwd. A trusted proxy's
// X-Forwarded-Proto gives the scheme when its first element is http or
// https; any other value, and any value from another client, leaves the
// connection's.
func (fw *forwarding) fragmentForwarding(ctx *fasthttp.RequestCtx) fragFwd {
	trusted := fw.trustedPeer(ctx)
	f := fragFwd{proto: scheme(ctx)}
	if trusted {
		switch v := firstItem(ctx.Request.Header.Peek("X-Forwarded-Proto")); {
		case equalFold(v, "https"):
			f.proto = "https"
		case equalFold(v, "http"):
			f.proto = "http"
		}
	}
	if f.proto == "https" {
		f.variant = 1
	}
	if fw.preserveHost {
		f.host = fw.publicHost(&ctx.Request.Header, trusted)
		if f.host != fw.publicHosts[0] {
			f.variant = -1
		}
	}
	return f
}

// forwardVariants are the fragFwd of the precomputed keys, by variant, for
// the upstream's host (the first public host with PreserveHost).
func (fw *forwarding) forwardVariants() [2]fragFwd {
	v := [2]fragFwd{{proto: "http", variant: 0}, {proto: "https", variant: 1}}
	if fw.preserveHost {
		v[0].host, v[1].host = fw.publicHosts[0], fw.publicHosts[0]
	}
	return v
}
