package proxy

import (
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/cachestore"
	"fragcache/fragment"
	"fragcache/metrics"
)

// slotState is where one include stands in a composition.
type slotState uint8

const (
	stNone    slotState = iota // not looked up (an except's include before it renders)
	stWaiting                  // a load is running; the page may still wait for it
	stValue                    // content available from its own src
	stPending                  // the load is running and the budget ran out, or it was shed
	stFailed                   // the load failed (or the key backs off) with no stale copy
	stSkipped                  // never fetched: depth, loop or include limit
)

// slot is one include's (or one alt's) state in a composition.
type slot struct {
	state    slotState
	val      *fragRecord
	flight   *fragFlight
	deadline time.Time
	frag     *metrics.Fragment
	url      string
	child    *node // the fragment's own template, evaluated for this request
	alt      *slot
	owner    *node
	idx      int
	isAlt    bool
	again    bool // looked up a second time after a flight answered for another user
}

// node is one template evaluated for this request: the page's or a
// fragment's.
type node struct {
	tpl    *fragment.Template
	e      fragment.Eval
	depth  int    // the page is 0; its includes are depth 1
	url    string // the fragment's URL; "" for the page
	parent *node
	slots  []slot
}

// composer composes one page. It is used by one handler goroutine and
// returned to a pool afterwards.
type composer struct {
	p       *Proxy
	ctx     *fasthttp.RequestCtx
	vars    reqVars
	start   time.Time
	pageURI string
	scope   string
	cookie  []byte // the request's Cookie lines joined, as sent; reused
	fwd     fragFwd
	// fetchCookie is the Cookie header of this request's fragment fetches,
	// computed once per page when a load starts.
	fetchCookie    string
	hasFetchCookie bool
	lang           string // the normalised Accept-Language; set by lang()
	langDone       bool
	varyLang       bool // a fragment fetched with the language is on the page
	count          int
	degraded       bool
	private        bool
	tooLarge       bool   // the output cap cut an include
	group          uint64 // this page request, for the store's fair load queue
	minFresh       time.Time
	nodes          []*node
	work           []*slot
	timer          *time.Timer
	st             reqStats
}

var composerPool = sync.Pool{New: func() any { return new(composer) }}

func (c *composer) reset() {
	for _, n := range c.nodes {
		n.e.Reset()
		clear(n.slots)
		n.slots = n.slots[:0]
		*n = node{e: n.e, slots: n.slots}
	}
	clear(c.work)
	*c = composer{nodes: c.nodes[:0], work: c.work[:0], timer: c.timer, cookie: c.cookie[:0]}
}

func (c *composer) newNode() *node {
	if len(c.nodes) < cap(c.nodes) {
		c.nodes = c.nodes[:len(c.nodes)+1]
		if n := c.nodes[len(c.nodes)-1]; n != nil {
			return n
		}
	} else {
		c.nodes = append(c.nodes, nil)
	}
	n := &node{}
	c.nodes[len(c.nodes)-1] = n
	return n
}

// compose reads an opted-in page, composes it and writes the response.
func (p *Proxy) compose(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, st *reqStats) {
	bufp := pageBufPool.Get().(*[]byte)
	defer func() {
		if cap(*bufp) <= maxPooledPage {
			pageBufPool.Put(bufp)
		}
	}()
	raw, err := readLimited((*bufp)[:0], resp, p.cfg.MaxPageSize)
	*bufp = raw[:0]
	received := raw // as the upstream encoded it
	if err == nil {
		enc := resp.Header.ContentEncoding()
		if len(enc) > 0 && !equalFold(enc, "identity") {
			raw, err = decodeBody(nil, raw, enc, p.cfg.MaxPageSize)
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
	tpl, perr := p.tpls.get(raw, fragment.Limits{})
	if perr != nil {
		p.m.ESIErrors[metrics.ErrParse].Inc()
	}
	if !tpl.HasESI() {
		// Nothing to compose: the answer goes out as a passthrough, every
		// header (validators, length, encoding) as the upstream sent it
		// (rule 7).
		st.composed = false
		p.writeUnchanged(ctx, resp, received)
		return
	}

	c := composerPool.Get().(*composer)
	c.p, c.ctx = p, ctx
	c.vars = reqVars{ctx: ctx, p: p}
	c.start = time.Now()
	c.group = p.pages.Add(1)

	var out []byte
	{
		c.init()
		root := c.newNode()
		root.tpl = tpl
		c.evaluate(root)
		c.await()
		out = ctx.Response.SwapBody(nil)[:0]
		out = tpl.Render(out, &root.e, c)
		if int64(len(out)) > p.cfg.MaxPageSize {
			// Variables, not includes, took it past the cap (includes
			// are capped one by one in appendCapped).
			p.m.ESIErrors[metrics.ErrTooLarge].Inc()
			ctx.Response.SwapBody(out[:0])
			ctx.Error("composed page too large", fasthttp.StatusBadGateway)
			c.reset()
			composerPool.Put(c)
			return
		}
	}
	p.writePage(ctx, resp, out, c)
	*st = c.st
	st.composed = true
	st.includes = c.count
	p.m.PageIncludes.Observe(float64(c.count))
	if c.degraded {
		p.m.CompositionsDegraded.Inc()
	} else {
		p.m.CompositionsComplete.Inc()
	}
	c.reset()
	composerPool.Put(c)
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

// init computes what every lookup of this request shares: its scope.
func (c *composer) init() {
	h := &c.ctx.Request.Header
	c.cookie = joinCookieLines(c.cookie[:0], h.PeekAll("Cookie"))
	auth := h.Peek("Authorization")
	if !c.p.scopes.credentials(auth, c.cookie) {
		c.scope = scopeAnon
	} else {
		c.scope = c.p.scopes.user(auth, c.cookie)
	}
	c.fwd = c.p.fragmentForwarding(c.ctx)
}

// joinCookieLines appends a request's Cookie lines to dst as one value,
// as sent. The scope and the fragment fetches both use it: Peek returns
// only the first line until fasthttp collects the cookies (which a
// $(HTTP_COOKIE) variable does, re-serialising them), so two users
// sharing a first line would share a scope while their fetches carried
// different cookies.
func joinCookieLines(dst []byte, lines [][]byte) []byte {
	for _, l := range lines {
		if len(l) == 0 {
			continue
		}
		if len(dst) > 0 {
			dst = append(dst, "; "...)
		}
		dst = append(dst, l...)
	}
	return dst
}

// evaluate evaluates n's template and looks up its active includes.
func (c *composer) evaluate(n *node) {
	n.tpl.Evaluate(&c.vars, &n.e)
	if cap(n.slots) >= len(n.e.Includes) {
		n.slots = n.slots[:len(n.e.Includes)]
	} else {
		n.slots = make([]slot, len(n.e.Includes))
	}
	for i := range n.e.Includes {
		if !n.e.Includes[i].Deferred {
			c.startInclude(n, i)
		}
	}
}

// startInclude checks include i of n against the page's limits and looks
// it up.
func (c *composer) startInclude(n *node, i int) {
	inc := &n.e.Includes[i]
	s := &n.slots[i]
	s.owner, s.idx = n, i
	s.frag = c.p.m.Fragment(metrics.OtherFragment)
	c.count++
	switch {
	case c.count > c.p.cfg.MaxIncludes:
		c.p.m.ESIErrors[metrics.ErrIncludeLimit].Inc()
		s.state = stSkipped
		return
	case n.depth+1 > c.p.cfg.MaxDepth:
		c.p.m.ESIErrors[metrics.ErrDepthExceeded].Inc()
		s.state = stSkipped
		return
	case inc.Err != nil:
		s.state = stFailed
		c.startAlt(n, s, inc)
		return
	}
	c.startSrc(n, s, inc, inc.Src)
	if s.state == stFailed {
		c.startAlt(n, s, inc)
	}
}

func (c *composer) startAlt(n *node, s *slot, inc *fragment.Include) {
	if inc.Alt == "" || inc.AltErr != nil {
		return // no alt, or its variables did not substitute: nothing to fetch
	}
	a := &slot{owner: n, idx: s.idx, isAlt: true, frag: s.frag}
	s.alt = a
	c.startSrc(n, a, inc, inc.Alt)
}

// startSrc resolves src and looks it up in the store, leaving s with a
// value, a flight to wait for, or a final state.
func (c *composer) startSrc(n *node, s *slot, inc *fragment.Include, src string) {
	rs := c.p.resolveSrc(src, c.requestURI)
	if rs.err != nil {
		c.p.m.ESIErrors[metrics.ErrSrcNotAllowed].Inc()
		s.state = stFailed
		return
	}
	url := rs.t.url
	for a := n; a != nil; a = a.parent {
		if a.url == url {
			c.p.m.ESIErrors[metrics.ErrLoop].Inc()
			s.state = stSkipped
			return
		}
	}
	s.url = url
	s.frag = rs.frag
	lang := ""
	if rs.t.upstream && (rs.rule == nil || !rs.rule.NoLanguage) {
		c.varyLang = true
		lang = c.langValue()
	}
	bare := !rs.t.upstream || rs.rule != nil && rs.rule.Share
	plan := planLookup(c.scope, bare, c.p.urls.isShared(url))
	sharedKey := rs.key(scopeShared, &c.fwd, lang)
	var key string
	switch {
	case plan.flightScope == scopeShared:
		key = sharedKey
	default:
		key = rs.key(plan.flightScope, &c.fwd, lang)
	}
	wait := c.p.cfg.Wait
	if inc.HasTimeout {
		wait = min(max(inc.Timeout, 0), c.p.cfg.MaxWait)
	}
	s.deadline = c.start.Add(wait)
	detach := func() *loadArg { return c.loadArg(rs, inc, bare, lang) }
	var res fragResult
	if plan.peekShared {
		res = c.p.store.Peek(sharedKey, detach)
	}
	if res.Entry.Value == nil {
		res = c.p.store.LookupIn(c.group, key, detach)
	}
	fr := s.frag
	switch res.Status {
	case cachestore.Hit:
		fr.Lookups[metrics.LookupHit].Inc()
		c.st.hits++
		c.setValue(n, s, res.Entry.Value)
	case cachestore.Updating:
		fr.Lookups[metrics.LookupUpdating].Inc()
		c.st.stale++
		c.setValue(n, s, res.Entry.Value)
	case cachestore.Stale:
		fr.Lookups[metrics.LookupStale].Inc()
		c.st.stale++
		c.setValue(n, s, res.Entry.Value)
	case cachestore.Miss, cachestore.Bypass:
		if res.Status == cachestore.Miss {
			fr.Lookups[metrics.LookupMiss].Inc()
		} else {
			fr.Lookups[metrics.LookupBypass].Inc()
		}
		c.st.misses++
		if res.Joined {
			fr.Coalesced.Inc()
		}
		s.state = stWaiting
		s.flight = res.Flight
		c.work = append(c.work, s)
	case cachestore.Failed:
		fr.Lookups[metrics.LookupMiss].Inc()
		c.st.misses++
		s.state = stFailed
	default: // Shed
		fr.Lookups[metrics.LookupMiss].Inc()
		c.st.misses++
		s.state = stPending
	}
}

// requestURI is the page's path and query, against which relative srcs
// resolve.
func (c *composer) requestURI() string {
	if c.pageURI == "" {
		c.pageURI = string(c.ctx.Request.Header.RequestURI())
	}
	return c.pageURI
}

// loadArg builds the owned arguments of a load; it runs only when the
// store starts one.
func (c *composer) loadArg(rs *resolvedSrc, inc *fragment.Include, bare bool, lang string) *loadArg {
	a := &loadArg{
		t:         rs.t,
		keyURL:    fragmentKeyURL(&rs.t, &c.fwd),
		frag:      rs.frag,
		rule:      rs.rule,
		ttlAttr:   inc.TTL,
		hasTTL:    inc.HasTTL,
		esiParsed: rs.t.upstream,
		scope:     fetchScope(c.scope, bare),
		lang:      lang,
	}
	if rs.t.upstream {
		a.proto, a.host = c.fwd.proto, c.fwd.host
	}
	if !bare && c.scope != scopeAnon {
		if !c.hasFetchCookie {
			c.fetchCookie = c.p.scopes.fetchCookie(c.cookie)
			c.hasFetchCookie = true
		}
		a.cookie = c.fetchCookie
		a.auth = string(c.ctx.Request.Header.Peek("Authorization"))
	}
	return a
}

// langValue is the request's normalised Accept-Language (rule 16).
func (c *composer) langValue() string {
	if !c.langDone {
		c.lang = normalizeLang(c.ctx.Request.Header.Peek("Accept-Language"))
		c.langDone = true
	}
	return c.lang
}

// setValue records a fragment's content and, when it holds ESI,
// evaluates it and looks up its includes one level deeper.
func (c *composer) setValue(n *node, s *slot, v *fragRecord) {
	s.state = stValue
	s.val = v
	if v.private || v.unstored {
		c.private = true
	}
	if c.minFresh.IsZero() || v.fresh.Before(c.minFresh) {
		c.minFresh = v.fresh
	}
	if v.tpl == nil {
		return
	}
	child := c.newNode()
	child.tpl = v.tpl
	child.depth = n.depth + 1
	child.url = s.url
	child.parent = n
	s.child = child
	c.evaluate(child)
}

// await waits for the flights of the page, each until its own deadline,
// all counted from the same start. Nested includes found in arriving
// fragments join the list.
func (c *composer) await() {
	for i := 0; i < len(c.work); i++ {
		s := c.work[i]
		if s.state != stWaiting {
			continue
		}
		select {
		case <-s.flight.Done():
		default:
			rem := time.Until(s.deadline)
			if rem <= 0 {
				s.state = stPending
				continue
			}
			if c.timer == nil {
				c.timer = time.NewTimer(rem)
			} else {
				c.timer.Reset(rem)
			}
			select {
			case <-s.flight.Done():
				c.timer.Stop()
			case <-c.timer.C:
				s.state = stPending
				continue
			}
		}
		e, err := s.flight.Result()
		if err != nil {
			c.failed(s)
			continue
		}
		v := e.Value
		if !answerServable(v.serveScope, c.scope) {
			c.lookupAgain(s)
			continue
		}
		c.setValue(s.owner, s, v)
	}
}

// failed marks s as failed and starts the alt of a failed src.
func (c *composer) failed(s *slot) {
	s.state = stFailed
	if !s.isAlt {
		c.startAlt(s.owner, s, &s.owner.e.Includes[s.idx])
	}
}

// lookupAgain handles a flight that ended with an answer this request may
// not be served (answerServable): the lookup followed a per-URL hint to
// the shared key and joined a fetch made with someone else's credentials,
// whose answer was not shared after all. s is looked up once more, now
// under its own scope (the hint is gone), within the same deadline.
func (c *composer) lookupAgain(s *slot) {
	if s.again {
		s.state = stPending
		return
	}
	s.again = true
	inc := &s.owner.e.Includes[s.idx]
	src := inc.Src
	if s.isAlt {
		src = inc.Alt
	}
	c.startSrc(s.owner, s, inc, src)
	if s.state == stFailed && !s.isAlt {
		c.startAlt(s.owner, s, inc)
	}
}

// AppendInclude renders one include: it implements fragment.Resolver.
// Pending and failed includes are decided here and nowhere else
// (DESIGN.md, precise rule 3).
func (c *composer) AppendInclude(dst []byte, e *fragment.Eval, inc *fragment.Include) ([]byte, bool) {
	n := c.nodeOf(e)
	if n == nil || inc.Index >= len(n.slots) {
		return e.AppendPlaceholder(dst, inc), false
	}
	s := &n.slots[inc.Index]
	if s.state == stNone {
		// An except's include: looked up now, in the same request.
		from := len(c.work)
		c.startInclude(n, inc.Index)
		if len(c.work) > from {
			c.await()
		}
	}
	fr := s.frag
	switch s.state {
	case stValue:
		return c.appendCapped(dst, e, inc, s), false
	case stFailed:
		c.degraded = true
		if s.alt != nil && s.alt.state == stValue {
			fr.Fallbacks[metrics.FallbackAlt].Inc()
			c.st.fallbacks++
			return c.appendCapped(dst, e, inc, s.alt), false
		}
		if inc.Continue {
			fr.Fallbacks[metrics.FallbackRemoved].Inc()
			c.st.fallbacks++
			return dst, false
		}
		if inc.InAttempt {
			fr.Fallbacks[metrics.FallbackExcept].Inc()
			c.st.fallbacks++
			return e.AppendPlaceholder(dst, inc), true
		}
		fr.Fallbacks[metrics.FallbackPlaceholder].Inc()
		c.st.placeholders++
		return e.AppendPlaceholder(dst, inc), true
	default:
		c.degraded = true
		if s.state == stWaiting {
			s.state = stPending
		}
		fr.Fallbacks[metrics.FallbackPlaceholder].Inc()
		c.st.placeholders++
		return e.AppendPlaceholder(dst, inc), false
	}
}

// appendCapped appends the content of s unless it would take the page
// past --max-page-size (rule 21): then the include's placeholder, or
// nothing when that does not fit either, and the page is not a shared
// cache's to keep.
func (c *composer) appendCapped(dst []byte, e *fragment.Eval, inc *fragment.Include, s *slot) []byte {
	limit := int(c.p.cfg.MaxPageSize)
	if s.child == nil && len(dst)+len(s.val.body) <= limit {
		return append(dst, s.val.body...)
	}
	mark := len(dst)
	if dst = c.appendValue(dst, s); len(dst) <= limit {
		return dst
	}
	dst = dst[:mark]
	c.p.m.ESIErrors[metrics.ErrTooLarge].Inc()
	c.tooLarge = true
	if ph := e.AppendPlaceholder(dst, inc); len(ph) <= limit {
		return ph
	}
	return dst[:mark]
}

func (c *composer) appendValue(dst []byte, s *slot) []byte {
	if s.child != nil {
		return s.child.tpl.Render(dst, &s.child.e, c)
	}
	return append(dst, s.val.body...)
}

func (c *composer) nodeOf(e *fragment.Eval) *node {
	for _, n := range c.nodes {
		if &n.e == e {
			return n
		}
	}
	return nil
}

// matchRule returns the first rule whose prefix matches an upstream
// target's path, or nil.
func (p *Proxy) matchRule(t *target) *rule {
	if !t.upstream || len(p.rules) == 0 {
		return nil
	}
	path := t.uri
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for i := range p.rules {
		if strings.HasPrefix(path, p.rules[i].Match) {
			return &p.rules[i]
		}
	}
	return nil
}

// writePage sets the composed page's headers and body (DESIGN.md, precise
// rule 7).
func (p *Proxy) writePage(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, body []byte, c *composer) {
	h := &ctx.Response.Header
	resp.Header.CopyTo(h)
	stripHop(h)
	dropBadReason(h)
	for _, k := range []string{"Surrogate-Control", "Etag", "Last-Modified", "Content-Encoding", "Content-Length"} {
		h.Del(k)
	}
	if c.varyLang {
		addVary(h, "Accept-Language")
	}
	if c.degraded || c.private || c.vars.personal || c.tooLarge {
		h.Set("Cache-Control", "private, no-store")
	} else if cc := resp.Header.Peek("Cache-Control"); len(cc) > 0 && !c.minFresh.IsZero() {
		var buf [256]byte
		h.SetBytesV("Cache-Control", lowerMaxAge(buf[:0], cc, time.Until(c.minFresh)))
	}
	if enc := resp.Header.ContentEncoding(); len(enc) > 0 && !equalFold(enc, "identity") {
		// The page goes out in the encoding this client accepts: a cache
		// in front must not hand it to one that accepts another.
		addVary(h, "Accept-Encoding")
		if out := pickEncoding(ctx.Request.Header.Peek("Accept-Encoding")); out != "" {
			encoded := encodeBody(nil, body, out)
			h.Set("Content-Encoding", out)
			body = append(body[:0], encoded...)
		}
	}
	ctx.Response.SwapBody(body)
}

// writeUnchanged sends an opted-in answer that holds no ESI directive as
// a passthrough would: status, headers and the body as received, but for
// hop-by-hop headers and Surrogate-Control.
func (p *Proxy) writeUnchanged(ctx *fasthttp.RequestCtx, resp *fasthttp.Response, body []byte) {
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

// reqVars exposes one request's values to ESI variables. It implements
// fragment.Vars and lives as long as the handler call.
type reqVars struct {
	ctx *fasthttp.RequestCtx
	p   *Proxy
	// personal is set once a value that is not in the page's URL (a
	// cookie, the user agent, the language, the referer) was read: it
	// shaped the page, which then is no shared cache's to keep (rule 7).
	personal bool
}

func (v *reqVars) Host() string {
	return v.p.publicHost(&v.ctx.Request.Header, v.p.trustedPeer(v.ctx))
}

func (v *reqVars) Referer() string {
	v.personal = true
	return string(v.ctx.Request.Header.Referer())
}

func (v *reqVars) Cookie(name string) (string, bool) {
	for _, allowed := range v.p.cfg.ESICookies {
		if allowed == name {
			v.personal = true
			c := v.ctx.Request.Header.Cookie(name)
			if c == nil {
				return "", false
			}
			return string(c), true
		}
	}
	return "", false
}

func (v *reqVars) RawQuery() string { return string(v.ctx.URI().QueryString()) }

func (v *reqVars) AcceptLanguage() string {
	v.personal = true
	return string(v.ctx.Request.Header.Peek("Accept-Language"))
}

func (v *reqVars) UserAgent() string {
	v.personal = true
	return string(v.ctx.Request.Header.UserAgent())
}

// storeObserver feeds the store's events into the metrics that are not
// per fragment; lookups, coalescing and fetch results are counted by the
// handler and the fetcher, which know the fragment's name and the fetch's
// outcome.
type storeObserver struct {
	m       *metrics.Metrics
	backoff *backoffLog
}

func (o storeObserver) Backoff(a *loadArg, err error, until time.Time) {
	if a != nil && !errors.Is(err, cachestore.ErrClosed) {
		o.backoff.step(a, err, until)
	}
}

func (o storeObserver) RefreshShed()            { o.m.RefreshDropped.Inc() }
func (o storeObserver) RefreshQueueLen(n int)   { o.m.RefreshQueueLength.Set(float64(n)) }
func (o storeObserver) LoadQueueLen(n int)      { o.m.FetchQueueLength.Set(float64(n)) }
func (o storeObserver) LoadShed()               { o.m.FetchShed.Inc() }
func (o storeObserver) SetRejected()            { o.m.CacheSetsRejected.Inc() }
func (o storeObserver) SetDropped()             { o.m.CacheSetsDropped.Inc() }
func (o storeObserver) Evicted()                { o.m.CacheEvictions.Inc() }
func (o storeObserver) CostChanged(total int64) { o.m.CacheCost.Set(float64(total)) }

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
