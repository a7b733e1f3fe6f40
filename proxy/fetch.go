package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/cachestore"
	"fragcache/fragment"
	"fragcache/l2"
	"fragcache/metrics"
)

// loadArg is everything a fragment fetch needs beyond its key. It is
// built by the handler, owns all its strings, and is handed to the store
// only when a load starts.
type loadArg struct {
	t         target
	keyURL    string // the URL part of the fragment's keys (fragmentKeyURL)
	frag      *metrics.Fragment
	rule      *rule
	cookie    string // credentials, only for the upstream and unshared rules
	auth      string
	scope     string // the scope the fetch is made in (fetchScope)
	lang      string // normalised Accept-Language, sent and keyed on; upstream only
	proto     string // X-Forwarded-Proto, only for the upstream
	host      string // the Host with PreserveHost, only for the upstream; "" = t.hostHdr
	ttlAttr   time.Duration
	hasTTL    bool
	esiParsed bool     // execute ESI in the fragment's body
	stat      *srcStat // the admin page's row of the include's src; nil in tests
}

// fetchError is a failed fetch, classified for metrics.
type fetchError struct {
	result int // metrics.Fetch*
	status int
	err    error
	at     int64 // when the fetch started, on the purge timeline
}

// failedAt is when the failed fetch started, on the purge timeline: a
// purge of the fragment's tags since then ends its backoff.
func (e *fetchError) failedAt() int64 { return e.at }

func (e *fetchError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("fragment fetch: status %d", e.status)
	}
	return "fragment fetch: " + e.err.Error()
}

func (e *fetchError) Unwrap() error { return e.err }

// fetcher loads fragments for the store over per-host fasthttp clients.
// It is safe for concurrent use.
type fetcher struct {
	cfg       *Config // the start's; per fetch, the live one is live.Load()
	live      *atomic.Pointer[liveConfig]
	dial      func(addr string, timeout time.Duration) (net.Conn, error)
	transport *transport
	m         *metrics.Metrics
	hints     *urlTable // where answers leave their shared hint
	purges    *purgeTable

	// trust, when set (tests only, before the first fetch), is the TLS
	// configuration https fragment hosts are dialled with; nil: the
	// system's roots.
	trust *tls.Config

	// mu protects clients, breakers, conns and closed.
	mu       sync.Mutex
	clients  map[string]*fasthttp.HostClient
	breakers map[string]*breaker
	conns    map[*upConn]struct{}
	closed   bool
}

func newFetcher(cfg *Config, live *atomic.Pointer[liveConfig], dial func(string, time.Duration) (net.Conn, error), t *transport, m *metrics.Metrics, hints *urlTable, purges *purgeTable) *fetcher {
	return &fetcher{
		cfg:       cfg,
		live:      live,
		dial:      dial,
		transport: t,
		m:         m,
		hints:     hints,
		purges:    purges,
		clients:   make(map[string]*fasthttp.HostClient),
		breakers:  make(map[string]*breaker),
		conns:     make(map[*upConn]struct{}),
	}
}

// maxFetchClients bounds the clients kept for hosts allowed on any port.
const maxFetchClients = 1024

// client returns the client of t's host whose answers are cut at
// maxBody bytes (--max-fragment-size, which fasthttp reads from the
// client): a reload that changes it replaces the host's client, whose
// idle connections are closed; its breaker stays.
func (f *fetcher) client(t *target, maxBody int64) (*fasthttp.HostClient, *breaker, error) {
	hc, replaced, br, err := f.clientLocked(t, maxBody)
	if replaced != nil {
		// Outside f.mu, which closing a connection takes (forget). The
		// replaced client's fetches in flight finish on their connections.
		replaced.CloseIdleConnections()
	}
	return hc, br, err
}

func (f *fetcher) clientLocked(t *target, maxBody int64) (hc, replaced *fasthttp.HostClient, br *breaker, err error) {
	id := t.scheme + "://" + t.addr
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.clients[id]
	if ok && int64(old.MaxResponseBodySize) == maxBody {
		return old, nil, f.breakers[id], nil
	}
	if f.closed {
		return nil, nil, nil, cachestore.ErrClosed
	}
	if !ok && len(f.clients) >= maxFetchClients {
		return nil, nil, nil, errors.New("too many fragment hosts")
	}
	cfg := f.cfg
	d := newDialer(t.addr, t.scheme == "https", f.trust, 0, cfg.FetchTimeout)
	d.opened, d.closed = f.opened, f.forget
	d.dialTCP = f.dial // DESIGN rule 19: allow-host names never reach loopback
	hc = &fasthttp.HostClient{
		Addr:                      t.addr,
		Name:                      "fragcache",
		IsTLS:                     t.scheme == "https",
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
		SecureErrorLogMessage:     true,
		MaxConns:                  cfg.FetchPerHost,
		MaxConnWaitTimeout:        cfg.FetchTimeout,
		MaxIdleConnDuration:       30 * time.Second,
		MaxIdemponentCallAttempts: maxAttempts,
		RetryIfErr:                retryStaleConn,
		ReadTimeout:               cfg.FetchTimeout,
		WriteTimeout:              cfg.FetchTimeout,
		ReadBufferSize:            cfg.MaxHeaderBytes,
		WriteBufferSize:           8 << 10,
		MaxResponseBodySize:       int(maxBody),
		Transport:                 f.transport,
		DialTimeout:               d.dial,
	}
	f.clients[id] = hc
	br = f.breakers[id]
	if br == nil {
		br = &breaker{}
		if up := f.m.Upstream(t.label); up != nil {
			br.gauge = up.Breaker
		}
		f.breakers[id] = br
	}
	return hc, old, br, nil
}

// opened tracks a new fragment connection, so that close can cut it and
// Close does not wait for fetches that the store has given up on.
func (f *fetcher) opened(c *upConn) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return cachestore.ErrClosed
	}
	f.conns[c] = struct{}{}
	return nil
}

// forget stops tracking a closed fragment connection.
func (f *fetcher) forget(c *upConn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

func (f *fetcher) close() {
	f.mu.Lock()
	f.closed = true
	conns := make([]*upConn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	clients := f.clients
	f.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	for _, hc := range clients {
		hc.CloseIdleConnections()
	}
}

// Load fetches one fragment, under the live configuration as it is when
// the fetch starts. It implements cachestore.Loader.
func (f *fetcher) Load(ctx context.Context, key string, a *loadArg, refresh bool) (fragEntry, error) {
	trig := metrics.TriggerForeground
	if refresh {
		trig = metrics.TriggerBackground
	}
	start := time.Now()
	stored := f.purges.clock.nowTime()
	e, res, err := f.load(ctx, key, a, f.live.Load(), stored)
	a.frag.Fetches[trig][res].Inc()
	a.frag.FetchTime.Observe(time.Since(start).Seconds())
	a.stat.fetched(a.frag.Name, time.Since(start), res, err)
	var fe *fetchError
	if errors.As(err, &fe) {
		fe.at = stored.UnixMicro()
	}
	if err == nil && !e.NoStore {
		f.fence(&e)
	}
	return e, err
}

// fence applies the purges made while the fetch ran (DESIGN rule 27): an
// answer whose fetch started at or before a purge of one of its tags is
// never stored as fresh. After a soft purge it is stored already stale
// (served while one refresh runs); after a hard one it is not stored, and
// the requests waiting for it look the fragment up again. (An answer that
// is not stored anyway reaches only its waiters, who judge it.)
func (f *fetcher) fence(e *fragEntry) {
	v := e.Value
	switch f.purges.verdict(v) {
	case verdictSoft:
		v.fresh = v.stored
		e.FreshUntil = v.stored
	case verdictHard:
		now := time.Now()
		e.NoStore, e.StoreKey = true, ""
		e.FreshUntil, e.StaleUntil = now, now // no memory of it as uncacheable
	}
}

func (f *fetcher) load(ctx context.Context, key string, a *loadArg, lv *liveConfig, start time.Time) (fragEntry, int, error) {
	hc, br, err := f.client(&a.t, lv.MaxFragmentSize)
	if err != nil {
		return fragEntry{}, metrics.FetchConnectError, &fetchError{result: metrics.FetchConnectError, err: err}
	}
	if ok, wait := br.allow(time.Now()); !ok {
		return fragEntry{}, metrics.FetchDenied, &fetchError{result: metrics.FetchDenied, err: errBreakerOpen{wait}}
	}
	e, res, err := f.fetch(ctx, key, a, hc, lv, start)
	br.record(time.Now(), hostFailure(res, err))
	return e, res, err
}

// hostFailure reports whether a fetch's failure says the host is unwell
// (DESIGN rule 9): it could not be reached (a refused or timed-out dial, a
// TLS failure) or closed the connection before any byte of the answer.
// An answer that is slow, cut short mid-body or a 5xx is the fragment's
// own failure: it backs off per fragment (a visitor can make one URL fail
// at will, and must not stop the healthy fragments of the same host).
func hostFailure(res int, err error) bool {
	if res != metrics.FetchConnectError && res != metrics.FetchTimeout {
		return false
	}
	var op *net.OpError
	var rec tls.RecordHeaderError
	var cert *tls.CertificateVerificationError
	switch {
	case errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, fasthttp.ErrConnectionClosed):
		return true
	case errors.As(err, &op) && op.Op == "dial":
		return true
	case errors.As(err, &rec), errors.As(err, &cert):
		return true
	}
	return false
}

func (f *fetcher) fetch(ctx context.Context, key string, a *loadArg, hc *fasthttp.HostClient, lv *liveConfig, start time.Time) (fragEntry, int, error) {
	cfg := &lv.Config
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(cfg.FetchTimeout)
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	f.request(req, a)

	up := f.m.Upstream(a.t.label)
	if up != nil {
		up.InFlight.Inc()
	}
	t0 := time.Now()
	err := hc.DoDeadline(req, resp, deadline)
	if up != nil {
		up.InFlight.Dec()
		up.Duration.Observe(time.Since(t0).Seconds())
	}
	if err != nil {
		res := metrics.FetchConnectError
		var netErr net.Error
		var bad *malformedError
		switch {
		case errors.Is(err, errDialDenied):
			res = metrics.FetchDenied
		case errors.As(err, &bad):
			// The host answered, but not in a form that can be read
			// unambiguously (DESIGN.md, precise rules 13 and 20).
			res = metrics.FetchStatusError
		case errors.Is(err, fasthttp.ErrBodyTooLarge):
			res = metrics.FetchTooLarge
		case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
			errors.Is(err, fasthttp.ErrNoFreeConns), errors.As(err, &netErr) && netErr.Timeout():
			res = metrics.FetchTimeout
		}
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return fragEntry{}, res, &fetchError{result: res, err: err}
	}
	code := resp.StatusCode()
	if code < 200 || code > 299 {
		return fragEntry{}, metrics.FetchStatusError, &fetchError{result: metrics.FetchStatusError, status: code}
	}
	body, err := decodeBody(nil, resp.Body(), resp.Header.ContentEncoding(), cfg.MaxFragmentSize)
	if err != nil {
		res := metrics.FetchStatusError
		if errors.Is(err, errTooLarge) {
			res = metrics.FetchTooLarge
		}
		return fragEntry{}, res, &fetchError{result: res, err: err}
	}
	return f.entry(key, a, &resp.Header, body, lv, start), metrics.FetchSuccess, nil
}

// request writes a fragment fetch: a GET of the target with exactly the
// headers its key accounts for (DESIGN rule 2), and no others.
func (f *fetcher) request(req *fasthttp.Request, a *loadArg) {
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(a.t.uri)
	req.URI().DisablePathNormalizing = true
	// A HostClient refuses a request whose scheme is not its own, and an
	// origin-form target parses as http.
	req.URI().SetScheme(a.t.scheme)
	if a.host != "" {
		req.Header.SetHost(a.host)
	} else {
		req.Header.SetHost(a.t.hostHdr)
	}
	req.UseHostHeader = true
	if a.proto != "" {
		req.Header.Set("X-Forwarded-Proto", a.proto)
	}
	req.Header.Set("User-Agent", "fragcache/"+f.cfg.Version)
	req.Header.Set("Accept-Encoding", "gzip, deflate, br")
	if a.cookie != "" {
		req.Header.Set("Cookie", a.cookie)
	}
	if a.auth != "" {
		req.Header.Set("Authorization", a.auth)
	}
	if a.lang != "" {
		req.Header.Set("Accept-Language", a.lang)
	}
}

// entry applies the freshness order and the privacy rule to a successful
// fetch that started at start.
func (f *fetcher) entry(key string, a *loadArg, h *fasthttp.ResponseHeader, body []byte, lv *liveConfig, start time.Time) fragEntry {
	cfg := &lv.Config
	now := time.Now()
	cd := parseCacheDirectives(h)
	vary := parseVary(h)
	setCookie := len(h.Peek("Set-Cookie")) > 0

	ttl := cfg.FragmentTTL
	switch {
	case a.rule != nil && a.rule.TTL > 0:
		ttl = a.rule.TTL
	case cd.surrogateMaxAge >= 0:
		ttl = cd.surrogateMaxAge
	case cd.sMaxAge >= 0:
		ttl = cd.sMaxAge
	case cd.maxAge >= 0:
		ttl = cd.maxAge
	case a.hasTTL:
		ttl = a.ttlAttr
	}
	ttl = min(ttl, maxFreshness)

	v := &fragRecord{
		body:        body,
		contentType: recordContentType(h),
		fresh:       now.Add(ttl),
		stored:      start,
	}
	if a.t.upstream {
		var dropped int
		v.tags, dropped = upstreamTags(h)
		if dropped > 0 {
			f.m.PurgeTagsDropped.Add(float64(dropped))
		}
	}
	v.tagIDs = tagIDs(autoTagIDs(make([]l2.Tag, 0, maxAutoTags+len(v.tags)), &a.t, a.rule), v.tags)
	v.stale = v.fresh.Add(cfg.StaleTTL)
	if a.esiParsed && isHTML(h.ContentType()) && (cfg.Trigger == TriggerHTML || cd.esi) {
		tpl, err := fragment.Parse(body, fragment.Limits{Stream: cfg.StreamBudget > 0})
		if err != nil {
			f.m.ESIErrors[metrics.ErrParse].Inc()
		}
		if tpl != nil && tpl.HasESI() {
			v.tpl, v.esi = tpl, true
		}
	}
	e := fragEntry{
		Value:      v,
		Cost:       entryCost(len(body), len(key)) + int64(len(v.contentType)) + tagsCost(v),
		FreshUntil: v.fresh,
		StaleUntil: v.stale,
	}
	if v.tpl != nil {
		e.Cost += int64(v.tpl.Size()) + memoCost(v.tpl)
	}

	// Where the response may be stored, and who may be served it, is
	// decided by placeAnswer from the response and the scope the fetch was
	// made in, never from the key the lookup happened to use.
	noStore := cd.noStore || cd.noCache || cd.surrogateNoStore || setCookie || vary.star || ttl <= 0
	pl := placeAnswer(answerFacts{
		private:    cd.private,
		sharedHint: cd.surrogateMaxAge >= 0 || cd.public || cd.sMaxAge >= 0,
		varyUser:   vary.user,
		unstorable: noStore,
	}, a.rule != nil && a.rule.Share, a.scope)
	v.serveScope = pl.serveScope
	v.private = isUserScope(pl.serveScope)
	f.hints.setShared(a.t.url, pl.storeScope == scopeShared)
	if pl.storeScope == "" {
		v.unstored = true
		e.NoStore = true
		e.FreshUntil = now.Add(cfg.FragmentTTL)
		e.StaleUntil = e.FreshUntil
		return e
	}
	if target := fragmentKey(pl.storeScope, a.keyURL, a.lang); target != key {
		e.StoreKey = target
	}
	return e
}

// entryOverhead is what one stored fragment costs beyond its body and key:
// the fragment record, the store's item, ristretto's entry and the maps
// that index them. Measured with the memory soak (about 600 bytes per
// 1 KiB fragment); counting it keeps the process within --cache-size of
// fragments plus a fixed allowance, rather than letting a cache of small
// fragments grow past its budget.
const entryOverhead = 640

func entryCost(body, key int) int64 {
	return int64(body) + 2*int64(key) + entryOverhead
}

// tagsCost is what a record's tags hold: their text, the string headers
// and the hashes.
func tagsCost(v *fragRecord) int64 {
	n := int64(len(v.tagIDs)) * int64(len(l2.Tag{}))
	for _, t := range v.tags {
		n += int64(len(t)) + 16
	}
	return n
}
