package proxy

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// backoffLog writes one line per backoff step of a failing fragment: its
// rule name, its src path without the query (which may carry data), the
// status or error, and when it is tried next. A fragment name gets at
// most backoffLinesPerSecond lines a second; the rest are counted and
// summarised in one line a minute (DESIGN.md, precise rule 36). Safe for
// concurrent use.
type backoffLog struct {
	log *slog.Logger

	mu      sync.Mutex
	byName  map[string]*nameBudget // fragment names are bounded (rules + "other")
	summary time.Time              // when the last summary line went out
}

type nameBudget struct {
	second     time.Time // start of the current second
	lines      int       // lines written in it
	suppressed int       // lines dropped since the last summary
}

const backoffLinesPerSecond = 10

func newBackoffLog(l *slog.Logger) *backoffLog {
	return &backoffLog{log: l, byName: make(map[string]*nameBudget), summary: time.Now()}
}

// step reports one backoff step of the fragment fetched with a.
func (b *backoffLog) step(a *loadArg, err error, until time.Time) {
	now := time.Now()
	name := a.frag.Name
	b.mu.Lock()
	nb := b.byName[name]
	if nb == nil {
		nb = &nameBudget{}
		b.byName[name] = nb
	}
	if now.Sub(nb.second) >= time.Second {
		nb.second, nb.lines = now, 0
	}
	write := nb.lines < backoffLinesPerSecond
	if write {
		nb.lines++
	} else {
		nb.suppressed++
	}
	var dropped map[string]int
	if now.Sub(b.summary) >= time.Minute {
		b.summary = now
		for n, x := range b.byName {
			if x.suppressed > 0 {
				if dropped == nil {
					dropped = make(map[string]int)
				}
				dropped[n] = x.suppressed
				x.suppressed = 0
			}
		}
	}
	b.mu.Unlock()
	if write {
		attrs := []slog.Attr{
			slog.String("fragment", name),
			slog.String("src", srcPath(a.t.uri)),
			slog.Time("retry_at", until),
			slog.Duration("retry_in", until.Sub(now).Round(time.Millisecond)),
		}
		var fe *fetchError
		if errors.As(err, &fe) && fe.status != 0 {
			attrs = append(attrs, slog.Int("status", fe.status))
		} else {
			attrs = append(attrs, slog.String("error", err.Error()))
		}
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "fragment fetch failed, backing off", attrs...)
	}
	for n, c := range dropped {
		b.log.Warn("fragment backoff lines suppressed", slog.String("fragment", n), slog.Int("lines", c), slog.Duration("over", time.Minute))
	}
}

// srcPath is a request URI without its query.
func srcPath(uri string) string {
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		return uri[:i]
	}
	return uri
}
