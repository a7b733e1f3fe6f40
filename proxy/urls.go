package proxy

import (
	"strings"
	"sync"
	"sync/atomic"

	"fragcache/fragment"
	"fragcache/metrics"
)

// resolvedSrc is an include src resolved once: for srcs that do not
// depend on the page's URL (absolute paths and absolute URLs), the target,
// its rule and its shared key are computed on first use and reused by
// every request. Immutable.
type resolvedSrc struct {
	t    target
	err  error
	rule *rule
	frag *metrics.Fragment
	// sharedKeys and anonKeys are the keys of the shared and anonymous
	// scopes, without language, by fragFwd.variant.
	sharedKeys [2]string
	anonKeys   [2]string
}

// key is the key of this src in scope for a request that forwards f, with
// the normalised language lang or "": a precomputed one where it can.
func (r *resolvedSrc) key(scope string, f *fragFwd, lang string) string {
	if lang == "" && f.variant >= 0 {
		switch scope {
		case scopeShared:
			return r.sharedKeys[f.variant]
		case scopeAnon:
			return r.anonKeys[f.variant]
		}
	}
	return fragmentKeyOf(scope, &r.t, f, lang)
}

// urlTable remembers which fragment URLs were last stored under the
// shared key: a hint that lets concurrent first requests of different
// users join one flight. It is keyed by values a visitor can choose, and
// so bounded and forgetful (a genMap). The resolution of page-independent
// srcs is kept the same way, in the sources of the live configuration it
// depends on (sources.srcs). Forgetting either costs a lookup its
// shortcut, never the cache: a URL without a hint is still found under
// the shared key (planLookup peeks there first). Safe for concurrent use.
type urlTable struct {
	shared *genMap[struct{}]
}

// Bounds of the two tables, per generation (so at most twice this is
// held): URLs and srcs may be up to 8 KiB long.
const (
	maxSharedURLs  = 50_000
	maxSharedBytes = 16 << 20
	maxSrcs        = 8_192
	maxSrcBytes    = 8 << 20
	maxSrcLen      = 2048 // longer srcs are resolved per request
)

func newURLTable() *urlTable {
	return &urlTable{shared: newGenMap[struct{}](maxSharedURLs, maxSharedBytes)}
}

func (u *urlTable) isShared(url string) bool {
	_, ok := u.shared.get(url)
	return ok
}

func (u *urlTable) setShared(url string, on bool) {
	if on {
		u.shared.put(url, struct{}{}, len(url))
	} else {
		u.shared.del(url)
	}
}

// genMap is a map bounded in entries and bytes that forgets its least
// recently used entries in bulk: it keeps two generations, puts go to the
// current one, a get that finds an entry only in the previous one moves
// it to the current one, and when the current one is full it becomes the
// previous one and the old previous one is dropped. Reads take no lock.
// Safe for concurrent use.
type genMap[V any] struct {
	maxN, maxBytes int64
	mu             sync.Mutex // serialises rotation
	cur, prev      atomic.Pointer[generation[V]]
}

type generation[V any] struct {
	m        sync.Map // string -> V
	n, bytes atomic.Int64
}

func newGenMap[V any](maxN, maxBytes int64) *genMap[V] {
	g := &genMap[V]{maxN: maxN, maxBytes: maxBytes}
	g.cur.Store(new(generation[V]))
	g.prev.Store(new(generation[V]))
	return g
}

func (g *genMap[V]) get(k string) (V, bool) {
	if v, ok := g.cur.Load().m.Load(k); ok {
		return v.(V), true
	}
	if v, ok := g.prev.Load().m.Load(k); ok {
		g.put(k, v.(V), len(k))
		return v.(V), true
	}
	var zero V
	return zero, false
}

// put stores v under k, counting size bytes toward the bound. It returns
// the value now under k in the current generation (an earlier put's, if
// one raced this one).
func (g *genMap[V]) put(k string, v V, size int) V {
	cur := g.cur.Load()
	if cur.n.Load() >= g.maxN || cur.bytes.Load()+int64(size) > g.maxBytes {
		g.mu.Lock()
		if g.cur.Load() == cur {
			g.prev.Store(cur)
			g.cur.Store(new(generation[V]))
		}
		g.mu.Unlock()
		cur = g.cur.Load()
	}
	old, loaded := cur.m.LoadOrStore(k, v)
	if !loaded {
		cur.n.Add(1)
		cur.bytes.Add(int64(size))
	}
	return old.(V)
}

func (g *genMap[V]) del(k string) {
	// Counts are not lowered: a deleted entry's room comes back at the
	// next rotation.
	g.cur.Load().m.Delete(k)
	g.prev.Load().m.Delete(k)
}

// pageIndependent reports whether src resolves the same on every page.
func pageIndependent(src string) bool {
	if strings.HasPrefix(src, "/") {
		return true // an absolute path, or //host/... (scheme-relative)
	}
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// sources turns a src into a fragment target under one live
// configuration: its resolution against the page and the host allowlist,
// the rule that matches it with the rule's metrics, and the keys that do
// not depend on the request. Each configuration has its own (Reload
// builds new ones, with an empty table of resolutions); the shared hints
// are the Proxy's, kept across reloads.
type sources struct {
	reach    *reach
	rules    []rule
	hints    *urlTable
	srcs     *genMap[*resolvedSrc]
	gen      uint64 // from sourcesGen: which memos (srcMemo) are this one's
	m        *metrics.Metrics
	variants [2]fragFwd // the forwardings whose keys are precomputed
}

func newSources(r *reach, cfg *Config, m *metrics.Metrics, fw *forwarding, hints *urlTable) *sources {
	sr := &sources{reach: r, hints: hints, srcs: newGenMap[*resolvedSrc](maxSrcs, maxSrcBytes), gen: sourcesGen.Add(1),
		m: m, variants: fw.forwardVariants()}
	for _, fr := range cfg.Fragments {
		name := fr.Name
		if name == "" {
			name = metrics.OtherFragment
		}
		sr.rules = append(sr.rules, rule{FragmentRule: fr, m: m.Fragment(name)})
	}
	return sr
}

// matchRule returns the first rule whose prefix matches an upstream
// target's path, or nil.
func (sr *sources) matchRule(t *target) *rule {
	if !t.upstream || len(sr.rules) == 0 {
		return nil
	}
	path := t.uri
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for i := range sr.rules {
		if strings.HasPrefix(path, sr.rules[i].Match) {
			return &sr.rules[i]
		}
	}
	return nil
}

// srcMemo is a resolution kept with a template's include element
// (fragment.Eval.Memo), valid for the sources that made it. It names them
// by their generation, not by pointer: a template that outlives a reload
// must not keep the old sources' table of srcs alive.
type srcMemo struct {
	gen uint64
	rs  *resolvedSrc
}

// sourcesGen numbers the sources each configuration builds.
var sourcesGen atomic.Uint64

// resolveMemo is resolveSrc for an include whose src is literal, with its
// template's memo m (nil for any other src). A template that is cached
// keeps its includes' resolutions as long as it is, so a page is not
// resolved again when the table of srcs has forgotten them: with more
// distinct srcs in use than the table holds, most lookups would miss it
// and pay the resolution, the keys and a put.
func (sr *sources) resolveMemo(m *atomic.Value, src string, pageURI func() string) *resolvedSrc {
	if m == nil || !pageIndependent(src) || len(src) > maxSrcLen {
		return sr.resolveSrc(src, pageURI)
	}
	if v, _ := m.Load().(*srcMemo); v != nil && v.gen == sr.gen {
		return v.rs
	}
	rs := sr.resolveSrc(src, pageURI)
	m.Store(&srcMemo{gen: sr.gen, rs: rs})
	return rs
}

// memoCost is what the memos of tpl's includes may hold: a srcMemo and a
// resolution each, sized as the table of srcs sizes one.
func memoCost(tpl *fragment.Template) int64 {
	n, srcBytes := tpl.IncludeSrcs()
	return int64(n)*(256+32) + 3*int64(srcBytes)
}

// resolveSrc returns the resolution of src on the page pageURI (computed
// by pageURI() only when needed).
func (sr *sources) resolveSrc(src string, pageURI func() string) *resolvedSrc {
	indep := pageIndependent(src) && len(src) <= maxSrcLen
	if indep {
		if r, ok := sr.srcs.get(src); ok {
			return r
		}
	}
	base := "/"
	if !pageIndependent(src) {
		base = pageURI()
	}
	r := &resolvedSrc{frag: sr.m.Fragment(metrics.OtherFragment)}
	r.t, r.err = sr.reach.resolve(base, src)
	if r.err == nil {
		r.rule = sr.matchRule(&r.t)
		if r.rule != nil {
			r.frag = r.rule.m
		}
		for i, f := range sr.variants {
			u := fragmentKeyURL(&r.t, &f)
			r.sharedKeys[i] = fragmentKey(scopeShared, u, "")
			r.anonKeys[i] = fragmentKey(scopeAnon, u, "")
		}
	}
	if indep {
		// src, the URL and the key are about three copies of src.
		return sr.srcs.put(src, r, 3*len(src)+256)
	}
	return r
}
