package proxy

import (
	"strings"
	"sync"
	"sync/atomic"

	"fragcache/metrics"
)

// urlInfo is what fragcache has learnt about one fragment URL from its
// responses. The flags are hints for choosing the key to look up: a wrong
// hint costs one fetch, never a leak, because the fetcher decides where a
// response is stored from the response itself.
type urlInfo struct {
	flags atomic.Uint32
}

const (
	urlShared   = 1 << iota // the last response was stored under the shared key
	urlVaryLang             // the response varies on Accept-Language
)

// resolvedSrc is an include src resolved once: for srcs that do not
// depend on the page's URL (absolute paths and absolute URLs), the target,
// its rule and its keys are computed on first use and reused by every
// request. Immutable but for info's flags.
type resolvedSrc struct {
	t    target
	err  error
	rule *rule
	frag *metrics.Fragment
	// sharedKeys and anonKeys are the keys of the shared and anonymous
	// scopes, without language, by fragFwd.variant.
	sharedKeys [2]string
	anonKeys   [2]string
	info       *urlInfo
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

// urlTable holds urlInfo by URL and resolvedSrc by src. Both maps are
// bounded: past their limits nothing new is remembered and lookups take
// the slow path (resolve per request, no hints). A URL gets an entry only
// once one of its responses sets a flag. Safe for concurrent use.
type urlTable struct {
	infos  sync.Map // string URL -> *urlInfo
	srcs   sync.Map // string src -> *resolvedSrc
	nInfo  atomic.Int64
	nBytes atomic.Int64 // length of the URLs in infos
	nSrc   atomic.Int64
}

// maxURLs and maxURLBytes bound the URLs with a hint (only URLs whose
// responses set a flag are remembered), in number and in bytes: URLs may
// be up to 8 KiB long and are never forgotten. maxSrcs bounds the srcs
// resolved once.
const (
	maxURLs     = 100_000
	maxSrcs     = 16_384
	maxURLBytes = 32 << 20
)

// info returns the urlInfo of url, creating it when create is true and
// the table has room; it may return nil.
func (u *urlTable) info(url string, create bool) *urlInfo {
	if v, ok := u.infos.Load(url); ok {
		return v.(*urlInfo)
	}
	if !create || u.nInfo.Load() >= maxURLs || u.nBytes.Load()+int64(len(url)) > maxURLBytes {
		return nil
	}
	v, loaded := u.infos.LoadOrStore(url, new(urlInfo))
	if !loaded {
		u.nInfo.Add(1)
		u.nBytes.Add(int64(len(url)))
	}
	return v.(*urlInfo)
}

func (u *urlTable) setFlag(url string, flag uint32, on bool) {
	in := u.info(url, on)
	if in == nil {
		return
	}
	for {
		old := in.flags.Load()
		nw := old &^ flag
		if on {
			nw = old | flag
		}
		if nw == old || in.flags.CompareAndSwap(old, nw) {
			return
		}
	}
}

// pageIndependent reports whether src resolves the same on every page.
func pageIndependent(src string) bool {
	if strings.HasPrefix(src, "/") {
		return true // an absolute path, or //host/... (scheme-relative)
	}
	return strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
}

// resolve returns the resolution of src on the page pageURI (computed by
// pageURI() only when needed).
func (p *Proxy) resolveSrc(src string, pageURI func() string) *resolvedSrc {
	if v, ok := p.urls.srcs.Load(src); ok {
		return v.(*resolvedSrc)
	}
	indep := pageIndependent(src)
	base := "/"
	if !indep {
		base = pageURI()
	}
	r := &resolvedSrc{frag: p.m.Fragment(metrics.OtherFragment)}
	r.t, r.err = p.reach.resolve(base, src)
	if r.err == nil {
		r.rule = p.matchRule(&r.t)
		if r.rule != nil {
			r.frag = r.rule.m
		}
		for i, f := range p.forwardVariants() {
			u := fragmentKeyURL(&r.t, &f)
			r.sharedKeys[i] = fragmentKey(scopeShared, u, "")
			r.anonKeys[i] = fragmentKey(scopeAnon, u, "")
		}
		r.info = p.urls.info(r.t.url, false)
	}
	if indep && len(src) <= 2048 {
		if p.urls.nSrc.Load() >= maxSrcs {
			// Srcs built from request variables can fill the table with
			// ones never seen again; start over rather than resolve every
			// src on every page from then on.
			p.urls.srcs.Clear()
			p.urls.nSrc.Store(0)
		}
		if v, loaded := p.urls.srcs.LoadOrStore(src, r); loaded {
			return v.(*resolvedSrc)
		}
		p.urls.nSrc.Add(1)
	}
	return r
}
