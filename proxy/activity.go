package proxy

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fragcache/cachestore"
	"fragcache/metrics"
)

// activity is what the admin page shows of the includes beyond the
// metrics, whose labels never name a URL (DESIGN rule 33): per src in the
// form its page wrote it (srcName), how often it was looked up and found
// in the cache, how its fetches went; per fragment group, its last error.
// It never holds a substituted value, a query or a scope. The srcs are a
// bounded table that forgets (srcTable). Safe for concurrent use.
type activity struct {
	srcs   srcTable
	bounds []float64 // fetch duration buckets, as fragment_fetch_duration_seconds has them
	// groups maps a fragment rule's name to its *errNote: the last failed
	// fetch of the group. Names come from the operator's rules.
	groups sync.Map
}

func newActivity() *activity {
	a := &activity{bounds: metrics.FetchDurationBuckets()}
	a.srcs.init()
	return a
}

// srcStat is one row of the srcs table. Its counters are updated without
// a lock.
type srcStat struct {
	name    string // srcName of the src as written
	group   string // the fragment rule's name when it was first seen
	act     *activity
	lookups atomic.Uint64
	misses  atomic.Uint64 // lookups not answered from the cache
	fetches atomic.Uint64
	buckets []atomic.Uint64 // fetch durations, per bound of act.bounds and +Inf
	lastErr atomic.Pointer[errNote]
}

// errNote is a failed fetch: what went wrong, and when.
type errNote struct {
	what string
	at   time.Time
}

// src returns the row of the include src raw (fragment.Include.RawSrc or
// RawAlt), made when it is new; nil for a nil a (tests without a table).
func (a *activity) src(raw, group string) *srcStat {
	if a == nil {
		return nil
	}
	return a.srcs.get(srcName(raw), group, a)
}

// looked counts one lookup of s's src; hit says it was served from the
// cache (fresh or stale).
func (s *srcStat) looked(st cachestore.Status) {
	if s == nil {
		return
	}
	s.lookups.Add(1)
	switch st {
	case cachestore.Hit, cachestore.Updating, cachestore.Stale:
	default:
		s.misses.Add(1)
	}
}

// fetched counts one fetch of s's src for group, which took d and ended
// with result res (metrics.Fetch*) and err.
func (s *srcStat) fetched(group string, d time.Duration, res int, err error) {
	if s == nil {
		return
	}
	s.fetches.Add(1)
	secs := d.Seconds()
	i, _ := slices.BinarySearch(s.act.bounds, secs)
	s.buckets[i].Add(1)
	if err == nil || errors.Is(err, cachestore.ErrClosed) {
		return
	}
	n := &errNote{what: fetchErrorText(res, err), at: time.Now()}
	s.lastErr.Store(n)
	s.act.groups.Store(group, n)
}

// fetchErrorText says what a failed fetch met, in words that hold no URL,
// address or header value.
func fetchErrorText(res int, err error) string {
	var fe *fetchError
	var open errBreakerOpen
	switch {
	case errors.As(err, &fe) && fe.status != 0:
		return "status " + strconv.Itoa(fe.status)
	case errors.As(err, &open):
		return "host's circuit breaker open"
	}
	return metrics.FetchResultName(res)
}

// snapshot is the table as the admin page shows it: the busiest srcs,
// most looked up first, at most max of them, and the groups' last errors.
func (a *activity) snapshot(max int) ([]metrics.SrcActivity, map[string]metrics.LastError) {
	var rows []metrics.SrcActivity
	for _, s := range a.srcs.all() {
		r := metrics.SrcActivity{
			Src:      s.name,
			Fragment: s.group,
			Lookups:  s.lookups.Load(),
			Fetches:  s.fetches.Load(),
		}
		if m := s.misses.Load(); m <= r.Lookups {
			r.Hits = r.Lookups - m
		}
		counts := make([]uint64, len(s.buckets))
		for i := range s.buckets {
			counts[i] = s.buckets[i].Load()
		}
		r.FetchP50 = metrics.Quantile(0.5, a.bounds, counts)
		r.FetchP99 = metrics.Quantile(0.99, a.bounds, counts)
		if n := s.lastErr.Load(); n != nil {
			r.LastError = metrics.LastError{What: n.what, At: n.at}
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(x, y metrics.SrcActivity) int {
		if c := cmp.Compare(y.Lookups+y.Fetches, x.Lookups+x.Fetches); c != 0 {
			return c
		}
		return strings.Compare(x.Src, y.Src)
	})
	if len(rows) > max {
		rows = rows[:max]
	}
	groups := map[string]metrics.LastError{}
	a.groups.Range(func(k, v any) bool {
		n := v.(*errNote)
		groups[k.(string)] = metrics.LastError{What: n.what, At: n.at}
		return true
	})
	return rows, groups
}

// Activity is what the admin page shows of this proxy beyond its metrics:
// the shared L2's state, the busiest include srcs and each fragment
// group's last error. Safe for concurrent use.
func (p *Proxy) Activity() metrics.Activity {
	act := metrics.Activity{L2: "off"}
	if p.l2 != nil {
		act.L2 = "down"
		if p.l2.Up() {
			act.L2 = "up"
		}
	}
	act.Srcs, act.LastErrors = p.act.snapshot(adminTopSrcs)
	return act
}

// adminTopSrcs is how many srcs the admin page lists (rule 33's top 100).
const adminTopSrcs = 100

// srcName is an include src as the admin page and the debug header name
// it: as its page wrote it, variables unsubstituted, without its query or
// #fragment and without the userinfo of an absolute URL, at most
// maxSrcName bytes. It is a substring of src.
func srcName(src string) string {
	if i := strings.IndexByte(src, '?'); i >= 0 {
		src = src[:i]
	}
	if i := strings.IndexByte(src, '#'); i >= 0 {
		src = src[:i]
	}
	auth := -1 // where the authority starts, if src has one
	switch {
	case strings.HasPrefix(src, "//"):
		auth = 2
	case len(src) > 0 && src[0] == '/':
	default:
		if i := strings.Index(src, "://"); i >= 0 {
			auth = i + 3
		}
	}
	if auth >= 0 {
		rest := src[auth:]
		end := strings.IndexByte(rest, '/')
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
			src = src[:auth] + rest[at+1:] // allocates; only for a src with userinfo
		}
	}
	if len(src) > maxSrcName {
		src = src[:maxSrcName]
	}
	return src
}

const maxSrcName = 200

// srcTable is a table of srcStat by name, bounded in entries, that
// forgets: it keeps two generations; new rows go to the current one, a
// row found only in the previous one moves to the current one, and the
// current one becomes the previous one (the old previous one is dropped)
// when it holds maxSrcRows rows or is older than srcGeneration. A src not
// looked up for one to two generations is forgotten. Lookups of a known
// row take no lock. Safe for concurrent use.
type srcTable struct {
	mu        sync.Mutex // serialises adding rows and rotating
	cur, prev atomic.Pointer[srcGen]
}

type srcGen struct {
	m    sync.Map // name -> *srcStat
	n    atomic.Int64
	born time.Time
}

// Bounds of the srcs table: rows per generation, and the longest a
// generation lives.
const (
	maxSrcRows    = 512
	srcGeneration = 10 * time.Minute
)

func (t *srcTable) init() {
	now := time.Now()
	t.cur.Store(&srcGen{born: now})
	t.prev.Store(&srcGen{born: now})
}

func (t *srcTable) get(name, group string, a *activity) *srcStat {
	if v, ok := t.cur.Load().m.Load(name); ok {
		return v.(*srcStat)
	}
	return t.add(name, group, a)
}

// add finds name's row in the previous generation or makes it, and puts
// it in the current one.
func (t *srcTable) add(name, group string, a *activity) *srcStat {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rotateLocked(time.Now())
	cur := t.cur.Load()
	if v, ok := cur.m.Load(name); ok {
		return v.(*srcStat)
	}
	var s *srcStat
	if v, ok := t.prev.Load().m.Load(name); ok {
		s = v.(*srcStat)
	} else {
		s = &srcStat{name: strings.Clone(name), group: group, act: a, buckets: make([]atomic.Uint64, len(a.bounds)+1)}
	}
	cur.m.Store(s.name, s)
	cur.n.Add(1)
	return s
}

// rotateLocked starts a new generation when the current one is full or
// old. t.mu is held.
func (t *srcTable) rotateLocked(now time.Time) {
	cur := t.cur.Load()
	if cur.n.Load() < maxSrcRows && now.Sub(cur.born) < srcGeneration {
		return
	}
	t.prev.Store(cur)
	t.cur.Store(&srcGen{born: now})
}

// all returns every row of both generations once.
func (t *srcTable) all() []*srcStat {
	t.mu.Lock()
	t.rotateLocked(time.Now())
	gens := [2]*srcGen{t.cur.Load(), t.prev.Load()}
	t.mu.Unlock()
	seen := map[string]bool{}
	var out []*srcStat
	for _, g := range gens {
		g.m.Range(func(k, v any) bool {
			if name := k.(string); !seen[name] {
				seen[name] = true
				out = append(out, v.(*srcStat))
			}
			return true
		})
	}
	return out
}
