package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"fragcache/l2"
	"fragcache/metrics"
)

// MaxPurgeItems is the most tags, URLs and prefixes one purge names
// (DESIGN rule 28).
const MaxPurgeItems = 1000

// maxPurgeTag bounds one tag a purge names: an upstream's tags are at
// most maxRecordTag bytes, but url: and path: tags hold a URL.
const maxPurgeTag = 16 << 10

// PurgeRequest is one purge (DESIGN "Invalidation"). At least one item,
// at most MaxPurgeItems in all.
type PurgeRequest struct {
	// Tags are tags as fragments carry them: the ones an upstream named
	// (Surrogate-Key, xkey, Cache-Tag) or the automatic url:…, path:…,
	// rule:<name> and all.
	Tags []string
	// URLs are fragment URLs, resolved against the upstream as an
	// include's src is (/widgets/weather, or an absolute URL of an allowed
	// host); every query variant of each is purged.
	URLs []string
	// Prefixes are path prefixes of 1 to 4 whole segments, resolved
	// likewise (/widgets purges /widgets/weather, not /widgetsx); no query.
	Prefixes []string
	// Hard makes the purged fragments missing; otherwise (soft) they are
	// stale: served while one refresh runs.
	Hard bool
	// Source says who asked, for the log (an address, "reload").
	Source string
}

// PurgeResult is what a recorded purge reports.
type PurgeResult struct {
	// ID names the purge in the log.
	ID string
	// At is the purge's time: fragments whose fetch started at or before
	// it are purged. Redis's clock with the shared L2, else this process's.
	At time.Time
	// Cluster is true when the purge was recorded in Redis, and so reaches
	// every replica; false when it holds on this replica only (no --redis,
	// or Redis unavailable).
	Cluster bool
	// Tags is the number of distinct tags recorded.
	Tags int
}

// ErrBadPurge is wrapped by every error Purge returns for a request it
// refuses; nothing is purged then.
var ErrBadPurge = errors.New("bad purge")

// Purge records a purge: one time per tag, on this replica and, with the
// shared L2, in Redis, whence it reaches every replica. Nothing is
// scanned: each fragment is judged the next time it is looked up. A
// request with a bad item (an empty or over-long tag, a URL or prefix
// that does not resolve to an allowed host, a prefix with a query, an
// empty segment or more than 4 segments, too many items) is refused as a
// whole with an error wrapping ErrBadPurge. Redis being unavailable is no
// error: the purge then holds on this replica only (Cluster false). Every
// purge is logged and counted. Safe for concurrent use.
func (p *Proxy) Purge(ctx context.Context, r PurgeRequest) (PurgeResult, error) {
	texts, err := p.purgeTags(&r)
	if err != nil {
		return PurgeResult{}, err
	}
	ids := make([]l2.Tag, 0, len(texts))
	for _, t := range texts {
		if id := l2.TagOf(t); !hasID(ids, id) {
			ids = append(ids, id)
		}
	}
	res := PurgeResult{ID: randomID(), Tags: len(ids)}
	mode := l2.Soft
	if r.Hard {
		mode = l2.Hard
	}
	var redisErr error
	if p.l2 != nil {
		at, err := p.l2.Purge(ctx, ids, mode)
		if err == nil {
			p.purges.clock.observe(at)
			res.At, res.Cluster = at, true
		}
		redisErr = err
	}
	if !res.Cluster {
		at := p.purges.clock.now()
		if p.l2 != nil {
			// The local clock lags Redis's by up to a round trip: a purge
			// recorded on it alone is put that much later, so that it
			// covers every fetch that started before it.
			at += p.cfg.RedisTimeout.Microseconds()
		}
		res.At = time.UnixMicro(at)
	}
	p.purges.add(ids, r.Hard, res.At.UnixMicro())

	mi := metrics.PurgeSoft
	if r.Hard {
		mi = metrics.PurgeHard
	}
	p.m.Purges[mi][metrics.PurgeKindTag].Add(float64(len(r.Tags)))
	p.m.Purges[mi][metrics.PurgeKindURL].Add(float64(len(r.URLs)))
	p.m.Purges[mi][metrics.PurgeKindPrefix].Add(float64(len(r.Prefixes)))
	scope := "local"
	if res.Cluster {
		scope = "cluster"
	}
	attrs := []slog.Attr{
		slog.String("id", res.ID), slog.String("mode", mode.String()), slog.String("scope", scope),
		slog.String("source", r.Source), slog.Time("at", res.At),
		slog.Int("tags", len(r.Tags)), slog.Int("urls", len(r.URLs)), slog.Int("prefixes", len(r.Prefixes)),
		slog.String("items", purgeSample(&r)),
	}
	switch {
	case redisErr != nil:
		p.log.LogAttrs(ctx, slog.LevelWarn, "purge recorded on this replica only: redis unavailable",
			append(attrs, slog.String("error", redisErr.Error()))...)
	default:
		p.log.LogAttrs(ctx, slog.LevelInfo, "purge", attrs...)
	}
	return res, nil
}

// purgeTags checks r's items and returns the text of the tags they purge.
func (p *Proxy) purgeTags(r *PurgeRequest) ([]string, error) {
	n := len(r.Tags) + len(r.URLs) + len(r.Prefixes)
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: no tags, urls or prefixes", ErrBadPurge)
	case n > MaxPurgeItems:
		return nil, fmt.Errorf("%w: %d items, at most %d", ErrBadPurge, n, MaxPurgeItems)
	}
	texts := make([]string, 0, n)
	for _, t := range r.Tags {
		if t == "" || len(t) > maxPurgeTag {
			return nil, fmt.Errorf("%w: a tag of %d bytes (1 to %d)", ErrBadPurge, len(t), maxPurgeTag)
		}
		texts = append(texts, t)
	}
	lv := p.live.Load()
	for _, u := range r.URLs {
		t, err := lv.env.src.reach.resolve("/", u)
		if err != nil {
			return nil, fmt.Errorf("%w: url %.200q: not a URL of the upstream or an allowed host", ErrBadPurge, u)
		}
		base, path := urlBase(&t)
		texts = append(texts, tagURL+base+path)
	}
	for _, pre := range r.Prefixes {
		tag, err := prefixTag(lv.env.src.reach, pre)
		if err != nil {
			return nil, fmt.Errorf("%w: prefix %.200q: %v", ErrBadPurge, pre, err)
		}
		texts = append(texts, tag)
	}
	return texts, nil
}

// purgeSample names the first items of a purge for its log line, each
// cut at 100 bytes, at most 5 of each kind.
func purgeSample(r *PurgeRequest) string {
	var b strings.Builder
	for _, kind := range []struct {
		name  string
		items []string
	}{{"tag", r.Tags}, {"url", r.URLs}, {"prefix", r.Prefixes}} {
		for i, it := range kind.items {
			if i == 5 {
				fmt.Fprintf(&b, " …(%d more)", len(kind.items)-5)
				break
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			if len(it) > 100 {
				it = it[:100] + "…"
			}
			fmt.Fprintf(&b, "%s=%q", kind.name, it)
		}
	}
	return b.String()
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
