package proxy

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/cachestore"
	"fragcache/fragment"
	"fragcache/l2"
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
	inWork   bool // listed in the composer's work
	noStream bool // its rule says stream: false
	streamN  int  // sent with anchors N (stream.go); 0: not
	filled   bool // its anchored flight was handled (stream.go)

	// What became of it, for the debug header and the demo's badges.
	lookup outcome       // how its lookup went (hit, miss, shed, loop…)
	at     time.Duration // when its fate was known, if the page records outcomes
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
	env     *composeEnv
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
	work           []*slot // every include that was awaited
	waiting        int     // how many of work are still stWaiting
	arr            *arrivals
	timer          *time.Timer
	st             reqStats
	stream         *pageStream // non-nil while the page may stream (stream.go)
	streamShed     bool        // it could have streamed, but every stream was taken
	// record is set when the page's outcomes are wanted, for the debug
	// header or the demo's badges; notes then holds them.
	record bool
	notes  []debugNote
}

var composerPool = sync.Pool{New: func() any { return new(composer) }}

// composeEnv is everything composition uses of the rest of the proxy:
// where fragments are looked up, how a src becomes a fragment, who the
// request is, and the page's limits. A Proxy builds one; a test can build
// its own.
type composeEnv struct {
	// store is concrete, not an interface: through an interface the
	// lookups' detach closures would escape and the hit path allocate.
	// A test gives it a store over a fake fetch.
	store      *fragStore
	purges     *purgeTable // judges what the store answers; nil: no purges
	src        *sources
	scopes     *scoper
	fw         *forwarding
	m          *metrics.Metrics
	act        *activity // the admin page's srcs; nil in tests
	limits     composeLimits
	esiCookies []string // the cookies $(HTTP_COOKIE{name}) may read
	// markOutcomes wraps each of the page's own includes in an element
	// naming its outcome: the embedded demo app's pages only (rule 34).
	markOutcomes bool
}

// composeLimits are the bounds of one page's composition.
type composeLimits struct {
	maxIncludes int
	maxDepth    int
	wait        time.Duration // the page's budget
	maxWait     time.Duration // the bound of an include's timeout attribute
	stream      time.Duration // --stream-budget; 0: pages are not streamed
	maxPageSize int64
}

// newComposer takes a composer from the pool for one page request; group
// is the page's in the store's fair load queue. Give it back with release.
func newComposer(env *composeEnv, ctx *fasthttp.RequestCtx, group uint64) *composer {
	c := composerPool.Get().(*composer)
	c.env, c.ctx = env, ctx
	c.vars = reqVars{ctx: ctx, env: env}
	c.start = time.Now()
	c.group = group
	c.record = env.markOutcomes
	return c
}

// setDebug makes the composer record what became of each include, for
// the debug header.
func (c *composer) setDebug() {
	c.record = true
}

// release returns c to the pool.
func (c *composer) release() {
	c.reset()
	composerPool.Put(c)
}

// compose fills tpl's includes for the request and renders the page into
// dst. ok is false when the page exceeds the page size cap.
func (c *composer) compose(tpl *fragment.Template, dst []byte) (out []byte, ok bool) {
	c.init()
	root := c.newNode()
	root.tpl = tpl
	c.evaluate(root)
	c.await()
	if c.stream == nil {
		out = tpl.Render(dst, &root.e, c)
		return out, int64(len(out)) <= c.env.limits.maxPageSize
	}
	out = tpl.RenderHead(dst, &root.e, c)
	if c.stream.open == 0 { // nothing to fill in: an ordinary page
		c.stream = nil
		out = tpl.RenderTail(out, &root.e, c)
	}
	return out, int64(len(out)) <= c.env.limits.maxPageSize
}

// facts is what the page's response headers depend on.
func (c *composer) facts() pageFacts {
	return pageFacts{
		varyLang: c.varyLang,
		noStore:  c.degraded || c.private || c.vars.personal || c.tooLarge,
		minFresh: c.minFresh,
	}
}

func (c *composer) reset() {
	for _, n := range c.nodes {
		n.e.Reset()
		clear(n.slots)
		n.slots = n.slots[:0]
		*n = node{e: n.e, slots: n.slots}
	}
	clear(c.work)
	clear(c.notes)
	*c = composer{nodes: c.nodes[:0], work: c.work[:0], timer: c.timer, cookie: c.cookie[:0], notes: c.notes[:0]}
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

// init computes what every lookup of this request shares: its scope.
func (c *composer) init() {
	h := &c.ctx.Request.Header
	c.cookie = joinCookieLines(c.cookie[:0], h.PeekAll("Cookie"))
	auth := h.Peek("Authorization")
	if !c.env.scopes.credentials(auth, c.cookie) {
		c.scope = scopeAnon
	} else {
		c.scope = c.env.scopes.user(auth, c.cookie)
	}
	c.fwd = c.env.fw.fragmentForwarding(c.ctx)
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
	s.frag = c.env.m.Fragment(metrics.OtherFragment)
	c.count++
	switch {
	case c.count > c.env.limits.maxIncludes:
		c.env.m.ESIErrors[metrics.ErrIncludeLimit].Inc()
		s.state, s.lookup = stSkipped, outLimit
		c.stamp(s)
		return
	case n.depth+1 > c.env.limits.maxDepth:
		c.env.m.ESIErrors[metrics.ErrDepthExceeded].Inc()
		s.state, s.lookup = stSkipped, outDepth
		c.stamp(s)
		return
	case inc.Err != nil:
		s.state, s.lookup = stFailed, outFailed
		c.stamp(s)
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
	var memo *atomic.Value
	if !s.isAlt {
		memo = n.e.Memo(inc)
	}
	rs := c.env.src.resolveMemo(memo, src, c.requestURI)
	if rs.err != nil {
		c.env.m.ESIErrors[metrics.ErrSrcNotAllowed].Inc()
		s.state, s.lookup = stFailed, outDenied
		c.stamp(s)
		return
	}
	url := rs.t.url
	for a := n; a != nil; a = a.parent {
		if a.url == url {
			c.env.m.ESIErrors[metrics.ErrLoop].Inc()
			s.state, s.lookup = stSkipped, outLoop
			c.stamp(s)
			return
		}
	}
	s.url = url
	s.frag = rs.frag
	s.noStream = rs.rule != nil && rs.rule.NoStream
	lang := ""
	if rs.t.upstream && (rs.rule == nil || !rs.rule.NoLanguage) {
		c.varyLang = true
		lang = c.langValue()
	}
	bare := !rs.t.upstream || rs.rule != nil && rs.rule.Share
	plan := planLookup(c.scope, bare, c.env.src.hints.isShared(url))
	sharedKey := rs.key(scopeShared, &c.fwd, lang)
	var key string
	switch {
	case plan.flightScope == scopeShared:
		key = sharedKey
	default:
		key = rs.key(plan.flightScope, &c.fwd, lang)
	}
	wait := c.env.limits.wait
	if inc.HasTimeout {
		wait = min(max(inc.Timeout, 0), c.env.limits.maxWait)
	}
	s.deadline = c.start.Add(wait)
	raw := inc.RawSrc
	if s.isAlt {
		raw = inc.RawAlt
	}
	stat := c.env.act.src(raw, rs.frag.Name)
	detach := func() *loadArg { return c.loadArg(rs, inc, bare, lang, stat) }
	res, found := c.lookup(plan.peekShared, sharedKey, key, detach)
	notFresh := false
	switch v := res.Entry.Value; {
	case v != nil:
		switch verdict := c.env.purges.verdict(v); {
		case verdict == verdictKeep:
		case verdict == verdictUnsure, verdict == verdictSoft && res.Status == cachestore.Updating:
			notFresh = true // stale already, and its refresh runs
		default:
			// Purged since it was stored (DESIGN "Invalidation"): the
			// store makes it stale (one refresh) or gone, and the lookup
			// is made again: a stale copy served at once, or a load.
			c.env.store.Expire(found, c.env.purges.expiry)
			res, _ = c.lookup(plan.peekShared, sharedKey, key, detach)
			if v := res.Entry.Value; v != nil {
				notFresh = true // the stale copy (a load's answer is judged when it comes)
				if c.env.purges.verdict(v) == verdictHard {
					res = fragResult{Status: cachestore.Shed} // purged again meanwhile: never served
				}
			}
		}
	case res.Status == cachestore.Failed && c.failurePurged(rs, res.Err):
		c.env.store.Forget(key)
		res, _ = c.lookup(false, sharedKey, key, detach)
	}
	stat.looked(res.Status)
	fr := s.frag
	switch res.Status {
	case cachestore.Hit:
		fr.Lookups[metrics.LookupHit].Inc()
		c.st.hits++
		s.lookup = outHit
		c.setValue(n, s, res.Entry.Value)
	case cachestore.Updating:
		fr.Lookups[metrics.LookupUpdating].Inc()
		c.st.stale++
		s.lookup = outUpdating
		c.setValue(n, s, res.Entry.Value)
	case cachestore.Stale:
		fr.Lookups[metrics.LookupStale].Inc()
		c.st.stale++
		s.lookup = outStale
		c.setValue(n, s, res.Entry.Value)
	case cachestore.Miss, cachestore.Bypass:
		if res.Status == cachestore.Miss {
			fr.Lookups[metrics.LookupMiss].Inc()
			s.lookup = outMiss
		} else {
			fr.Lookups[metrics.LookupBypass].Inc()
			s.lookup = outBypass
		}
		c.st.misses++
		if res.Joined {
			fr.Coalesced.Inc()
		}
		s.flight = res.Flight
		c.watch(s)
	case cachestore.Failed:
		fr.Lookups[metrics.LookupMiss].Inc()
		c.st.misses++
		s.state, s.lookup = stFailed, outFailed
		c.stamp(s)
	default: // Shed
		fr.Lookups[metrics.LookupMiss].Inc()
		c.st.misses++
		s.state, s.lookup = stPending, outShed
		c.stamp(s)
	}
	if notFresh {
		c.notFresh()
	}
}

// lookup looks a src up in the store by its lookup plan: the shared key
// first when peekShared (without starting a load), then key. It returns
// the answer and the key that gave it.
func (c *composer) lookup(peekShared bool, sharedKey, key string, detach func() *loadArg) (fragResult, string) {
	if peekShared {
		if res := c.env.store.Peek(sharedKey, detach); res.Entry.Value != nil {
			return res, sharedKey
		}
	}
	return c.env.store.LookupIn(c.group, key, detach), key
}

// failurePurged reports whether a src's remembered failure (err, the
// store's Result.Err for Failed) is older than a purge of its automatic
// tags: the purge ends its backoff (DESIGN rule 28).
func (c *composer) failurePurged(rs *resolvedSrc, err error) bool {
	var f interface{ failedAt() int64 }
	if c.env.purges == nil || !errors.As(err, &f) || f.failedAt() > c.env.purges.quick.Load() {
		return false
	}
	var buf [maxAutoTags]l2.Tag
	return c.env.purges.purgedSince(f.failedAt(), autoTagIDs(buf[:0], &rs.t, rs.rule))
}

// notFresh notes that a fragment on the page was served stale or with
// freshness in doubt: the page's max-age drops to 0.
func (c *composer) notFresh() {
	if c.minFresh.IsZero() || c.start.Before(c.minFresh) {
		c.minFresh = c.start
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
func (c *composer) loadArg(rs *resolvedSrc, inc *fragment.Include, bare bool, lang string, stat *srcStat) *loadArg {
	a := &loadArg{
		stat:      stat,
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
			c.fetchCookie = c.env.scopes.fetchCookie(c.cookie)
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
		c.lang = normalizeLangLines(c.ctx.Request.Header.PeekAll("Accept-Language"))
		c.langDone = true
	}
	return c.lang
}

// setValue records a fragment's content and, when it holds ESI,
// evaluates it and looks up its includes one level deeper.
func (c *composer) setValue(n *node, s *slot, v *fragRecord) {
	s.state = stValue
	s.val = v
	c.stamp(s)
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

// await waits until every include of the page is settled or past its
// deadline, all deadlines counted from the same start (rule 1). It reacts
// to each flight the moment it ends, in the order they end: a failed src
// starts its alt at once, an arriving fragment's own includes are looked
// up at once, while the others are still on their way.
func (c *composer) await() {
	for c.waiting > 0 {
		if s := c.arr.take(); s != nil {
			c.settle(s)
			continue
		}
		next, now := c.nextDeadline(), time.Now()
		if !next.After(now) {
			c.expire(now)
			continue
		}
		if c.timer == nil {
			c.timer = time.NewTimer(next.Sub(now))
		} else {
			c.timer.Reset(next.Sub(now))
		}
		select {
		case <-c.arr.wake:
			c.timer.Stop()
		case <-c.timer.C:
		}
	}
}

// watch makes s's flight report its end to the page's arrivals.
func (c *composer) watch(s *slot) {
	s.state = stWaiting
	c.waiting++
	if !s.inWork {
		s.inWork = true
		c.work = append(c.work, s)
	}
	if c.arr == nil {
		c.arr = newArrivals()
	}
	a := c.arr
	if !s.flight.Notify(func() { a.push(s) }) {
		a.push(s) // it ended already
	}
}

// settle handles the end of s's flight, unless s's deadline passed first.
func (c *composer) settle(s *slot) {
	if s.state != stWaiting {
		return
	}
	c.waiting--
	e, err := s.flight.Result()
	if err != nil {
		c.failed(s)
		return
	}
	v := e.Value
	if !answerServable(v.serveScope, c.scope) {
		c.lookupAgain(s)
		return
	}
	switch c.env.purges.verdict(v) {
	case verdictHard:
		// The fetch started before a hard purge of its fragment (the
		// page may have joined it after the purge): not served; the
		// fragment is looked up anew, within the same deadline.
		c.lookupAgain(s)
		return
	case verdictSoft, verdictUnsure:
		c.notFresh()
	}
	c.setValue(s.owner, s, v)
}

// nextDeadline is the earliest deadline of the includes still awaited.
func (c *composer) nextDeadline() time.Time {
	var next time.Time
	for _, s := range c.work {
		if s.state == stWaiting && (next.IsZero() || s.deadline.Before(next)) {
			next = s.deadline
		}
	}
	return next
}

// expire marks every awaited include whose deadline has passed as pending.
func (c *composer) expire(now time.Time) {
	for _, s := range c.work {
		if s.state == stWaiting && !s.deadline.After(now) {
			s.state = stPending
			c.waiting--
			if c.record {
				s.at = now.Sub(c.start)
			}
		}
	}
}

// arrivals collects the slots of one page whose flights ended. Flights
// report from their own goroutines, possibly after the page is written:
// an arrivals belongs to one page and is never reused, so a late report
// lands in an object nobody reads any more.
type arrivals struct {
	mu    sync.Mutex
	ready []*slot
	wake  chan struct{} // one buffered token: something is ready
}

func newArrivals() *arrivals { return &arrivals{wake: make(chan struct{}, 1)} }

func (a *arrivals) push(s *slot) {
	a.mu.Lock()
	a.ready = append(a.ready, s)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// take returns the oldest ready slot, or nil. A nil a has none.
func (a *arrivals) take() *slot {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ready) == 0 {
		return nil
	}
	s := a.ready[0]
	a.ready[0] = nil
	a.ready = a.ready[1:]
	return s
}

// failed marks s as failed and starts the alt of a failed src.
func (c *composer) failed(s *slot) {
	s.state = stFailed
	c.stamp(s)
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
	if c.env.markOutcomes && n.depth == 0 {
		return c.appendMarked(dst, e, inc, n)
	}
	return c.appendInclude(dst, e, inc, n)
}

func (c *composer) appendInclude(dst []byte, e *fragment.Eval, inc *fragment.Include, n *node) ([]byte, bool) {
	s := &n.slots[inc.Index]
	if c.stream != nil {
		c.stream.n++
	}
	if s.state == stNone {
		// An except's include: looked up now, in the same request.
		from := len(c.work)
		c.startInclude(n, inc.Index)
		if len(c.work) > from {
			c.await()
		}
	}
	fr := s.frag
	d := c.note(s, inc) // its debug entry, in render order; -1 when not recorded
	switch s.state {
	case stValue:
		c.noted(d, s.lookup, s.at)
		return c.appendCapped(dst, e, inc, s, d), false
	case stFailed:
		c.degraded = true
		if s.alt != nil && s.alt.state == stValue {
			fr.Fallbacks[metrics.FallbackAlt].Inc()
			c.st.fallbacks++
			c.noted(d, outAlt, s.alt.at)
			return c.appendCapped(dst, e, inc, s.alt, d), false
		}
		if inc.Continue {
			fr.Fallbacks[metrics.FallbackRemoved].Inc()
			c.st.fallbacks++
			c.noted(d, outRemoved, s.at)
			return dst, false
		}
		if inc.InAttempt {
			fr.Fallbacks[metrics.FallbackExcept].Inc()
			c.st.fallbacks++
			c.noted(d, outExcept, s.at)
			return e.AppendPlaceholder(dst, inc), true
		}
		fr.Fallbacks[metrics.FallbackPlaceholder].Inc()
		c.st.placeholders++
		if s.lookup == outDenied {
			c.noted(d, outDenied, s.at)
		} else {
			c.noted(d, outFailed, s.at)
		}
		return e.AppendPlaceholder(dst, inc), true
	default:
		c.degraded = true
		if c.stream != nil && c.streamSlot(s, inc) {
			fr.Fallbacks[metrics.FallbackPlaceholder].Inc()
			c.st.placeholders++
			c.noted(d, outStreaming, s.at)
			return c.appendAnchored(dst, e, inc, s), false
		}
		if c.streamShed && c.streamSlot(s, inc) {
			fr.StreamFills[metrics.StreamShed].Inc() // streams were all taken
		}
		if s.state == stWaiting {
			s.state = stPending
			c.stamp(s)
		}
		fr.Fallbacks[metrics.FallbackPlaceholder].Inc()
		c.st.placeholders++
		c.noted(d, unserved(s), s.at)
		return e.AppendPlaceholder(dst, inc), false
	}
}

// appendCapped appends the content of s unless it would take the page
// past --max-page-size (rule 21): then the include's placeholder, or
// nothing when that does not fit either, and the page is not a shared
// cache's to keep. d is the include's debug entry (-1: none).
func (c *composer) appendCapped(dst []byte, e *fragment.Eval, inc *fragment.Include, s *slot, d int) []byte {
	limit := int(c.env.limits.maxPageSize)
	if s.child == nil && len(dst)+len(s.val.body) <= limit {
		return append(dst, s.val.body...)
	}
	mark := len(dst)
	if dst = c.appendValue(dst, s); len(dst) <= limit {
		return dst
	}
	dst = dst[:mark]
	c.env.m.ESIErrors[metrics.ErrTooLarge].Inc()
	c.tooLarge = true
	if d >= 0 {
		c.notes[d].out = outTooLarge
	}
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

// reqVars exposes one request's values to ESI variables. It implements
// fragment.Vars and lives as long as the handler call.
type reqVars struct {
	ctx *fasthttp.RequestCtx
	env *composeEnv
	// personal is set once a value that is not in the page's URL (a
	// cookie, the user agent, the language, the referer) was read: it
	// shaped the page, which then is no shared cache's to keep (rule 7).
	personal bool
}

func (v *reqVars) Host() string {
	return v.env.fw.publicHost(&v.ctx.Request.Header, v.env.fw.trustedPeer(v.ctx))
}

func (v *reqVars) Referer() string {
	v.personal = true
	return string(v.ctx.Request.Header.Referer())
}

func (v *reqVars) Cookie(name string) (string, bool) {
	for _, allowed := range v.env.esiCookies {
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
