package metrics

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "fragcache"

// OtherFragment is the label value of fragments that no operator rule names.
const OtherFragment = "other"

// Lookup results, the values of the result label of
// fragcache_fragment_lookups_total.
const (
	LookupHit = iota
	LookupUpdating
	LookupStale
	LookupMiss
	LookupBypass
	numLookups
)

var lookupNames = [numLookups]string{"hit", "updating", "stale", "miss", "bypass"}

// Fallback actions, the values of the action label of
// fragcache_fragment_fallbacks_total.
const (
	FallbackPlaceholder = iota
	FallbackAlt
	FallbackExcept
	FallbackRemoved
	numFallbacks
)

var fallbackNames = [numFallbacks]string{"placeholder", "alt", "except", "removed"}

// Fetch triggers, the values of the trigger label of
// fragcache_fragment_fetches_total.
const (
	TriggerForeground = iota
	TriggerBackground
	numTriggers
)

var triggerNames = [numTriggers]string{"foreground", "background"}

// Fetch results, the values of the result label of
// fragcache_fragment_fetches_total.
const (
	FetchSuccess = iota
	FetchStatusError
	FetchTimeout
	FetchConnectError
	FetchTooLarge
	FetchDenied
	numFetchResults
)

var fetchResultNames = [numFetchResults]string{"success", "status_error", "timeout", "connect_error", "too_large", "denied"}

// FetchResultName is the result label value of a Fetch* constant.
func FetchResultName(r int) string {
	if r < 0 || r >= numFetchResults {
		return "unknown"
	}
	return fetchResultNames[r]
}

// FetchDurationBuckets returns the upper bounds, in seconds, of the
// buckets of fragcache_fragment_fetch_duration_seconds, in a new slice:
// the admin page's per-src fetch times are counted in the same buckets.
func FetchDurationBuckets() []float64 {
	return []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
}

// ESI error reasons, the values of the reason label of
// fragcache_esi_errors_total.
const (
	ErrParse = iota
	ErrDepthExceeded
	ErrIncludeLimit
	ErrSrcNotAllowed
	ErrLoop
	ErrTooLarge
	numErrReasons
)

var errReasonNames = [numErrReasons]string{"parse", "depth_exceeded", "include_limit", "src_not_allowed", "loop", "too_large"}

// Stream outcomes, the values of the outcome label of
// fragcache_stream_fills_total (DESIGN.md, precise rule 30): what became
// of an include sent with anchors in a streamed page, or of one that would
// have been but for the cap on open streams (shed).
const (
	StreamFilled = iota
	StreamAlt
	StreamFailed
	StreamBudget
	StreamClientGone
	StreamShutdown
	StreamSkipped
	StreamTooLarge
	StreamShed
	numStreamOutcomes
)

var streamOutcomeNames = [numStreamOutcomes]string{"filled", "alt", "failed", "budget", "client_gone", "shutdown", "skipped", "too_large", "shed"}

// Purge modes and kinds, the labels of fragcache_purges_total.
const (
	PurgeSoft = iota
	PurgeHard
	numPurgeModes
)

const (
	PurgeKindTag = iota
	PurgeKindURL
	PurgeKindPrefix
	numPurgeKinds
)

var (
	purgeModeNames = [numPurgeModes]string{"soft", "hard"}
	purgeKindNames = [numPurgeKinds]string{"tag", "url", "prefix"}
)

// Breaker states, the values of fragcache_upstream_breaker_state.
const (
	BreakerClosed   = 0
	BreakerOpen     = 1
	BreakerHalfOpen = 2
)

// Fragment holds the resolved children of one fragment class. Its fields
// are safe for concurrent use.
type Fragment struct {
	Name      string
	Lookups   [numLookups]prometheus.Counter
	Fallbacks [numFallbacks]prometheus.Counter
	Coalesced prometheus.Counter
	Fetches   [numTriggers][numFetchResults]prometheus.Counter
	FetchTime prometheus.Observer
	// StreamFills counts streamed includes by outcome (Stream*);
	// StreamFillTime observes, for each fill sent, the time from the
	// page's start.
	StreamFills    [numStreamOutcomes]prometheus.Counter
	StreamFillTime prometheus.Observer
}

// Upstream holds the resolved children of one upstream host.
type Upstream struct {
	Name     string
	Duration prometheus.Observer
	InFlight prometheus.Gauge
	Breaker  prometheus.Gauge
}

// Metrics bundles every fragcache collector. Construct it with New; all
// fields are safe for concurrent use and must not be replaced.
type Metrics struct {
	Requests         *prometheus.CounterVec
	RequestDuration  prometheus.Histogram
	RequestsInFlight prometheus.Gauge

	CompositionsComplete prometheus.Counter
	CompositionsDegraded prometheus.Counter
	PageIncludes         prometheus.Histogram
	// StreamDuration observes streamed pages from the request to the end
	// of the response; http_request_duration_seconds observes them to the
	// end of the first flush.
	StreamDuration prometheus.Histogram

	ESIErrors [numErrReasons]prometheus.Counter

	RefreshQueueLength prometheus.Gauge
	RefreshDropped     prometheus.Counter
	FetchQueueLength   prometheus.Gauge
	FetchShed          prometheus.Counter

	// The shared L2 (--redis): requests by op and result, their
	// duration, whether it is up (0 while its breaker holds it for down;
	// not exported without --redis), and waits for another replica's fill
	// lock by how they ended.
	L2Requests  *prometheus.CounterVec
	L2Duration  *prometheus.HistogramVec
	L2Up        prometheus.Gauge
	L2LockWaits *prometheus.CounterVec

	// Purges counts the items of recorded purges (tags, URLs, prefixes)
	// by mode and kind: [PurgeSoft|PurgeHard][PurgeKind*].
	Purges [numPurgeModes][numPurgeKinds]prometheus.Counter
	// PurgeTagsDropped counts the tags an upstream named for a fragment
	// that were not kept: longer than 128 bytes, or beyond the 64th.
	PurgeTagsDropped prometheus.Counter

	CacheCost         prometheus.Gauge
	CacheMaxCost      prometheus.Gauge
	CacheEvictions    prometheus.Counter
	CacheSetsRejected prometheus.Counter
	CacheSetsDropped  prometheus.Counter

	TemplateHits   prometheus.Counter
	TemplateMisses prometheus.Counter

	// ConfigReloadSuccessful is 1 when the last reload (SIGHUP) applied,
	// 0 when it failed and the running configuration was kept; 1 at start.
	ConfigReloadSuccessful prometheus.Gauge
	// ConfigReloadTime is the Unix time of the last successful reload,
	// or of the start.
	ConfigReloadTime prometheus.Gauge

	// fragments and upstreams are replaced whole (copy on write) by
	// SetFragments and AddUpstreams, and read without a lock; mu
	// serialises the writers.
	mu        sync.Mutex
	fragments atomic.Pointer[map[string]*Fragment]
	other     *Fragment
	upstreams atomic.Pointer[map[string]*Upstream]
	fragVecs  fragmentVecs
	upVecs    upstreamVecs

	// codes caches the request counter children of the common
	// method/status pairs, so the hot path does no label lookup.
	codes map[codeKey]prometheus.Counter
}

// fragmentVecs are the vectors labelled by fragment.
type fragmentVecs struct {
	lookups, fallbacks, coalesced, fetches, streamFills *prometheus.CounterVec
	fetchTime, streamFillTime                           *prometheus.HistogramVec
}

// upstreamVecs are the vectors labelled by upstream.
type upstreamVecs struct {
	duration        *prometheus.HistogramVec
	inFlight, state *prometheus.GaugeVec
}

type codeKey struct {
	method string
	code   int
}

// Options names what the label sets are made of.
type Options struct {
	// Version is reported by fragcache_build_info.
	Version string
	// Fragments are the operator's fragment rule names; "other" is
	// always added.
	Fragments []string
	// Upstreams are the names of the hosts fragcache contacts (the
	// upstream first, then every allowed host).
	Upstreams []string
	// L2 registers the shared L2's metrics (--redis is set).
	L2 bool
}

// New creates every collector and registers it, with the Go and process
// collectors, on reg. It panics if registration fails, which only happens
// when the same registry is used twice (a programming error).
func New(reg prometheus.Registerer, o Options) *Metrics {
	m := &Metrics{codes: make(map[codeKey]prometheus.Counter)}
	f := factory{reg: reg}

	m.Requests = f.counterVec("http_requests_total", "Requests answered by the front listener, by method and status code.", "method", "code")
	m.RequestDuration = f.histogram("http_request_duration_seconds", "Time from reading a request to handing its response to the connection.",
		[]float64{.001, .0025, .005, .01, .025, .05, .075, .1, .25, .5, 1, 2.5, 5, 10, 30})
	m.RequestsInFlight = f.gauge("http_requests_in_flight", "Requests being handled now.")

	comp := f.counterVec("page_compositions_total", "Composed pages, by outcome: complete (every include served from its own src) or degraded.", "outcome")
	m.CompositionsComplete = comp.WithLabelValues("complete")
	m.CompositionsDegraded = comp.WithLabelValues("degraded")
	m.PageIncludes = f.histogram("page_includes", "Includes processed per composed page, at every depth.",
		[]float64{0, 1, 2, 5, 10, 20, 50, 100, 256, 1000})

	m.StreamDuration = f.histogram("stream_duration_seconds", "Streamed pages (--stream-budget): time from reading the request to the end of the response.",
		[]float64{.05, .1, .25, .5, 1, 2, 3, 5, 10, 30})

	errs := f.counterVec("esi_errors_total", "ESI problems met while composing pages, by reason.", "reason")
	for i, r := range errReasonNames {
		m.ESIErrors[i] = errs.WithLabelValues(r)
	}

	m.RefreshQueueLength = f.gauge("refresh_queue_length", "Background refreshes waiting for a worker.")
	m.RefreshDropped = f.counter("refresh_dropped_total", "Background refreshes shed because the refresh queue was full.")
	m.FetchQueueLength = f.gauge("fetch_queue_length", "Cold fragment loads waiting for one of --fetch-concurrency.")
	m.FetchShed = f.counter("fetch_shed_total", "Cold fragment loads shed because the fetch queue was full.")
	if o.L2 {
		m.L2Requests = f.counterVec("l2_requests_total", "Requests to the shared L2 on Redis, by op and result.", "op", "result")
		m.L2Duration = f.histogramVec("l2_request_duration_seconds", "Time of one request to the shared L2, by op.",
			[]float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1}, "op")
		m.L2Up = f.gauge("l2_up", "1 while the shared L2 answers, 0 while its breaker holds it for down.")
		m.L2LockWaits = f.counterVec("l2_lock_waits_total", "Waits for another replica's fill lock, by how they ended.", "result")
	}

	purges := f.counterVec("purges_total", "Items (tags, URLs, prefixes) of the purges recorded, by mode and kind.", "mode", "kind")
	for mi, mode := range purgeModeNames {
		for ki, kind := range purgeKindNames {
			m.Purges[mi][ki] = purges.WithLabelValues(mode, kind)
		}
	}
	m.PurgeTagsDropped = f.counter("purge_tags_dropped_total", "Purge tags named by fragment responses and dropped: over 128 bytes, or beyond 64 per fragment.")

	m.CacheCost = f.gauge("cache_cost_bytes", "Bytes of fragments held by the cache.")
	m.CacheMaxCost = f.gauge("cache_max_cost_bytes", "The cache's budget in bytes (--cache-size).")
	m.CacheEvictions = f.counter("cache_evictions_total", "Fragments evicted from the cache to make room.")
	m.CacheSetsRejected = f.counter("cache_sets_rejected_total", "Fragments the cache's admission policy refused to keep.")
	m.CacheSetsDropped = f.counter("cache_sets_dropped_total", "Fragment writes the cache dropped under contention.")

	tpl := f.counterVec("template_cache_lookups_total", "Parsed page templates looked up by body hash, by result.", "result")
	m.TemplateHits = tpl.WithLabelValues("hit")
	m.TemplateMisses = tpl.WithLabelValues("miss")

	m.ConfigReloadSuccessful = f.gauge("config_last_reload_successful", "1 if the last configuration reload (SIGHUP) succeeded, 0 if it failed and the running configuration was kept.")
	m.ConfigReloadTime = f.gauge("config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration reload, or of the start.")

	m.fragVecs = fragmentVecs{
		lookups:   f.counterVec("fragment_lookups_total", "Fragment lookups, by fragment and result (updating = stale served while a refresh runs).", "fragment", "result"),
		fallbacks: f.counterVec("fragment_fallbacks_total", "Includes not rendered from their own src, by fragment and what was rendered instead.", "fragment", "action"),
		coalesced: f.counterVec("fragment_coalesced_total", "Lookups that joined a fetch already running instead of starting one.", "fragment"),
		fetches:   f.counterVec("fragment_fetches_total", "Fragment fetches, by fragment, trigger and result.", "fragment", "trigger", "result"),
		fetchTime: f.histogramVec("fragment_fetch_duration_seconds", "Time one fragment fetch took, by fragment.",
			FetchDurationBuckets(), "fragment"),
		streamFills: f.counterVec("stream_fills_total", "Includes sent with anchors in streamed pages (--stream-budget), by fragment and what became of them; shed: not streamed, the cap on open streams was reached.", "fragment", "outcome"),
		streamFillTime: f.histogramVec("stream_fill_seconds", "Time from a streamed page's start to each fill sent, by fragment.",
			[]float64{.05, .1, .25, .5, 1, 2, 3, 5, 10, 30}, "fragment"),
	}
	frags := make(map[string]*Fragment, len(o.Fragments)+1)
	for _, n := range append(append([]string(nil), o.Fragments...), OtherFragment) {
		if _, dup := frags[n]; !dup {
			frags[n] = m.fragVecs.children(n)
		}
	}
	m.other = frags[OtherFragment]
	m.fragments.Store(&frags)

	m.upVecs = upstreamVecs{
		duration: f.histogramVec("upstream_request_duration_seconds", "Time to response headers of requests to upstream hosts (pages and fragments), by host.",
			[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "upstream"),
		inFlight: f.gaugeVec("upstream_requests_in_flight", "Requests to upstream hosts running now, by host.", "upstream"),
		state:    f.gaugeVec("upstream_breaker_state", "Circuit breaker of fragment fetches per host: 0 closed, 1 open, 2 half-open.", "upstream"),
	}
	ups := make(map[string]*Upstream, len(o.Upstreams))
	m.upstreams.Store(&ups)
	m.AddUpstreams(o.Upstreams)

	bi := f.gaugeVec("build_info", "Always 1; its labels name the running build.", "version", "goversion")
	bi.WithLabelValues(o.Version, runtime.Version()).Set(1)

	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// children resolves every series of fragment class n.
func (v fragmentVecs) children(n string) *Fragment {
	fr := &Fragment{Name: n}
	for i, r := range lookupNames {
		fr.Lookups[i] = v.lookups.WithLabelValues(n, r)
	}
	for i, a := range fallbackNames {
		fr.Fallbacks[i] = v.fallbacks.WithLabelValues(n, a)
	}
	fr.Coalesced = v.coalesced.WithLabelValues(n)
	for t, tn := range triggerNames {
		for r, rn := range fetchResultNames {
			fr.Fetches[t][r] = v.fetches.WithLabelValues(n, tn, rn)
		}
	}
	fr.FetchTime = v.fetchTime.WithLabelValues(n)
	for i, o := range streamOutcomeNames {
		fr.StreamFills[i] = v.streamFills.WithLabelValues(n, o)
	}
	fr.StreamFillTime = v.streamFillTime.WithLabelValues(n)
	return fr
}

// delete removes every series of fragment class n.
func (v fragmentVecs) delete(n string) {
	l := prometheus.Labels{"fragment": n}
	v.lookups.DeletePartialMatch(l)
	v.fallbacks.DeletePartialMatch(l)
	v.coalesced.DeletePartialMatch(l)
	v.fetches.DeletePartialMatch(l)
	v.fetchTime.DeletePartialMatch(l)
	v.streamFills.DeletePartialMatch(l)
	v.streamFillTime.DeletePartialMatch(l)
}

// Fragment returns the children of the named fragment class, or those of
// "other" when name is not configured. Safe for concurrent use with
// SetFragments: a caller keeps the children it got, whose counts no longer
// reach /metrics once SetFragments removed or restarted their class.
func (m *Metrics) Fragment(name string) *Fragment {
	if f, ok := (*m.fragments.Load())[name]; ok {
		return f
	}
	return m.other
}

// SetFragments makes names (and "other", always) the fragment classes, as
// a configuration reload changes the operator's rules: the series of a
// class no longer named are deleted, those of the classes in fresh are
// deleted and start again at zero (a rule whose meaning changed under the
// same name), and new names get theirs. fresh names not in names are
// ignored, as is "other" in either list. Safe for concurrent use.
func (m *Metrics) SetFragments(names, fresh []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.fragments.Load()
	next := make(map[string]*Fragment, len(names)+1)
	next[OtherFragment] = m.other
	restart := make(map[string]bool, len(fresh))
	for _, n := range fresh {
		restart[n] = true
	}
	for _, n := range names {
		if _, dup := next[n]; dup {
			continue
		}
		if f, ok := cur[n]; ok && !restart[n] {
			next[n] = f
			continue
		}
		if _, ok := cur[n]; ok {
			m.fragVecs.delete(n)
		}
		next[n] = m.fragVecs.children(n)
	}
	for n := range cur {
		if _, kept := next[n]; !kept {
			m.fragVecs.delete(n)
		}
	}
	m.fragments.Store(&next)
}

// Upstream returns the children of the named upstream host, or nil when
// the name was neither given to New nor added since. Safe for concurrent
// use.
func (m *Metrics) Upstream(name string) *Upstream {
	return (*m.upstreams.Load())[name]
}

// AddUpstreams gives series to the hosts of names that have none yet (a
// reload that allows more hosts). Hosts no longer allowed keep theirs:
// they stop changing, and come back in use if the host is allowed again.
// Safe for concurrent use.
func (m *Metrics) AddUpstreams(names []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.upstreams.Load()
	next := make(map[string]*Upstream, len(cur)+len(names))
	for n, u := range cur {
		next[n] = u
	}
	for _, n := range names {
		if _, ok := next[n]; ok {
			continue
		}
		next[n] = &Upstream{
			Name:     n,
			Duration: m.upVecs.duration.WithLabelValues(n),
			InFlight: m.upVecs.inFlight.WithLabelValues(n),
			Breaker:  m.upVecs.state.WithLabelValues(n),
		}
	}
	m.upstreams.Store(&next)
}

// Request counts one answered request. Common method and status pairs are
// resolved once and then cost a map read.
func (m *Metrics) Request(method string, code int) prometheus.Counter {
	k := codeKey{method, code}
	if c, ok := m.codes[k]; ok {
		return c
	}
	return m.Requests.WithLabelValues(method, strconv.Itoa(code))
}

// Prewarm resolves the request counters of the usual methods and status
// codes, so Request finds them without a label lookup. Call it before the
// Metrics is shared between goroutines.
func (m *Metrics) Prewarm() {
	for _, meth := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		for _, code := range []int{200, 201, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 413, 431, 500, 502, 503, 504} {
			m.codes[codeKey{meth, code}] = m.Requests.WithLabelValues(meth, strconv.Itoa(code))
		}
	}
}

type factory struct{ reg prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
