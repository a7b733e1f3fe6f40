package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"fragcache/l2"
	"fragcache/metrics"
)

// tier is the store's Loader when the shared L2 is on (DESIGN "Beyond one
// machine"): a local flight (an L1 miss or a refresh) reads Redis first,
// and only the replica holding the key's cluster-wide fill lock fetches
// from the origin; the others wait for its event and read what it stored.
// An L1 hit never gets here. Whenever Redis cannot help (down, slow,
// breaker open), the flight fetches by itself: the L2 saves fetches, it
// never fails a page.
type tier struct {
	l2     *l2.Client
	origin *fetcher
	purges *purgeTable // judges every entry read from Redis
	// users: user-scoped entries may go to Redis, because --scope-secret
	// is set and every replica computes the same scope (DESIGN rule 2).
	users bool
	// bypassFor is how long an uncacheable answer is shared as a bypass
	// hint (--fragment-ttl, rule 26); failFor how long a failed fetch is
	// shared as a backoff.
	bypassFor, failFor time.Duration
	timeout            time.Duration // --redis-timeout
}

// errSharedBackoff is a load refused because another replica's fetch of
// the key failed a moment ago and recorded its backoff in Redis.
type errSharedBackoff struct {
	until time.Time
	since int64 // when it was recorded, on the purge timeline
}

func (e errSharedBackoff) Error() string {
	return fmt.Sprintf("another replica's fetch failed; backing off for %s", time.Until(e.until).Round(time.Millisecond))
}

// failedAt is when the failure was recorded: a purge of the fragment's
// tags since then ends the backoff.
func (e errSharedBackoff) failedAt() int64 { return e.since }

// Load implements the store's Loader.
func (t *tier) Load(ctx context.Context, key string, a *loadArg, refresh bool) (fragEntry, error) {
	shared := fragmentKey(scopeShared, a.keyURL, a.lang)
	if shared != key && !refresh {
		// A lookup under a scope finds what another replica stored for
		// everybody: this replica may not have the hint that sends it to
		// the shared key yet.
		if lk, err := t.l2.Get(ctx, shared); err == nil && (lk.Status == l2.Hit || lk.Status == l2.Stale) {
			if e, ok := t.decode(shared, a, &lk.Entry, false); ok && e.Value.serveScope == scopeShared {
				e.StoreKey = shared
				t.origin.hints.setShared(a.t.url, true)
				return e, nil
			}
		}
	}
	if !t.shareable(a) {
		// A user's fetch without a shared --scope-secret: its answer
		// reaches Redis only when it turns out to be everybody's.
		e, err := t.origin.Load(ctx, key, a, refresh)
		if err == nil && !e.NoStore && e.Value.serveScope == scopeShared && (e.StoreKey == shared || key == shared) {
			t.publish(ctx, shared, e)
		}
		return e, err
	}
	if e, ok, err := t.read(ctx, key, a, refresh); ok || err != nil {
		return e, err
	}
	acq, err := t.l2.Acquire(ctx, key)
	if err != nil {
		return t.origin.Load(ctx, key, a, refresh)
	}
	if acq.Lock == nil {
		return t.woken(ctx, key, a, refresh, acq)
	}
	t.purges.clock.observe(acq.Lock.Start)
	return t.fill(ctx, key, a, refresh, acq.Lock)
}

// shareable reports whether the fetch's answers may live in Redis: every
// scope but a user's without a shared --scope-secret.
func (t *tier) shareable(a *loadArg) bool {
	return t.users || !isUserScope(a.scope)
}

// read looks key up in Redis. ok: e is the answer (a hit, or a stale
// entry for a cold key, which L1 serves while it refreshes once). err: a
// shared backoff. Neither: go on to the lock.
func (t *tier) read(ctx context.Context, key string, a *loadArg, refresh bool) (e fragEntry, ok bool, err error) {
	lk, gerr := t.l2.Get(ctx, key)
	if gerr != nil {
		return e, false, nil
	}
	switch {
	case lk.Status == l2.Hit, lk.Status == l2.Stale && !refresh:
		if e, ok = t.decode(key, a, &lk.Entry, refresh); ok {
			return e, true, nil
		}
	case lk.Hint.Kind == l2.NoHint, !time.Now().Before(lk.Hint.Until), t.hintPurged(a, lk.Hint):
		// No hint, or one that ended or that a purge cleared.
	case lk.Hint.Kind == l2.HintFailed:
		return e, false, errSharedBackoff{until: lk.Hint.Until, since: lk.Hint.Since.UnixMicro()}
	case lk.Hint.Kind == l2.HintBypass:
		e, err = t.origin.Load(ctx, key, a, refresh)
		return e, true, err
	}
	return e, false, nil
}

// hintPurged reports whether a purge of the fragment's automatic tags
// came at or after hint was recorded: the failure or the uncacheable
// answer it remembers is out of date (DESIGN rule 28).
func (t *tier) hintPurged(a *loadArg, h l2.Hint) bool {
	since := h.Since.UnixMicro()
	if since > t.purges.quick.Load() {
		return false
	}
	var buf [maxAutoTags]l2.Tag
	return t.purges.purgedSince(since, autoTagIDs(buf[:0], &a.t, a.rule))
}

// woken handles the end of another replica's hold of the lock.
func (t *tier) woken(ctx context.Context, key string, a *loadArg, refresh bool, acq l2.Acquired) (fragEntry, error) {
	switch acq.Woken {
	case l2.Filled:
		if e, ok, err := t.read(ctx, key, a, false); ok || err != nil {
			return e, err
		}
	case l2.Failed:
		return fragEntry{}, errSharedBackoff{until: acq.Until, since: t.purges.clock.now()}
	}
	// Bypassed, or filled but gone (a purge, eviction): fetch for this
	// replica's own waiters.
	return t.origin.Load(ctx, key, a, refresh)
}

// fill fetches key under its fill lock, stores the answer in Redis and
// releases the lock, which wakes the other replicas' waiters.
func (t *tier) fill(ctx context.Context, key string, a *loadArg, refresh bool, lock *l2.Lock) (fragEntry, error) {
	// Another replica may have filled it between our read and the lock
	// (rule 26).
	if lk, err := t.l2.Get(ctx, key); err == nil && lk.Status == l2.Hit {
		if e, ok := t.decode(key, a, &lk.Entry, true); ok {
			t.release(lock, l2.Outcome{Kind: l2.Filled})
			return e, nil
		}
	}
	e, err := t.origin.Load(ctx, key, a, refresh)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		t.release(lock, l2.Outcome{Kind: l2.Abandoned})
		return e, err
	case err != nil:
		t.release(lock, l2.Outcome{Kind: l2.Failed, For: t.failFor})
		return e, err
	case e.NoStore && t.purges.verdict(e.Value) == verdictHard:
		// A hard purge came while it was fetched (fetcher.fence): no
		// answer to share; the other replicas' waiters fetch anew.
		t.release(lock, l2.Outcome{Kind: l2.Abandoned})
		return e, nil
	case e.NoStore:
		t.release(lock, l2.Outcome{Kind: l2.Bypassed, For: t.bypassFor})
		return e, nil
	case e.StoreKey != "" && e.StoreKey != key, !t.shareable(&loadArg{scope: e.Value.serveScope}):
		// The answer belongs under another key than the one locked (a
		// lookup under one scope whose answer is another's): the waiters
		// fetch for themselves, nothing is recorded.
		t.release(lock, l2.Outcome{Kind: l2.Bypassed})
		return e, nil
	}
	e.Value.stored = lock.Start
	body, encErr := e.Value.AppendBinary(nil)
	if encErr != nil {
		t.release(lock, l2.Outcome{Kind: l2.Bypassed})
		return e, nil
	}
	res, setErr := lock.Set(ctx, l2.Entry{Body: body, FreshUntil: e.FreshUntil, StaleUntil: e.StaleUntil, Tags: e.Value.tagIDs})
	switch {
	case setErr != nil:
	case res == l2.StoredStale:
		// A soft purge raced the fetch: what it brought is served as
		// stale only (rule 27), here as on every replica.
		e.FreshUntil = lock.Start
		e.Value.fresh = lock.Start
	case res == l2.NotStored:
		// A hard purge raced it: it is no answer to keep, here either
		// (its waiters look the fragment up again).
		now := time.Now()
		e.NoStore, e.StoreKey = true, ""
		e.FreshUntil, e.StaleUntil = now, now
	}
	t.release(lock, l2.Outcome{Kind: l2.Filled})
	return e, nil
}

// publish stores a shared answer that a fetch outside the lock brought,
// when the shared key's lock is free at once; a replica that holds it
// stores its own.
func (t *tier) publish(ctx context.Context, shared string, e fragEntry) {
	ctx, cancel := context.WithTimeout(ctx, 2*t.timeout)
	defer cancel()
	acq, err := t.l2.Acquire(ctx, shared)
	if err != nil || acq.Lock == nil {
		return
	}
	t.purges.clock.observe(acq.Lock.Start)
	rec := *e.Value
	rec.stored = acq.Lock.Start
	if body, err := rec.AppendBinary(nil); err == nil {
		_, _ = acq.Lock.Set(ctx, l2.Entry{Body: body, FreshUntil: e.FreshUntil, StaleUntil: e.StaleUntil, Tags: rec.tagIDs})
	}
	t.release(acq.Lock, l2.Outcome{Kind: l2.Filled})
}

// release gives the lock up; its failure only costs the waiters their
// wait (they take the lock over when it expires).
func (t *tier) release(lock *l2.Lock, o l2.Outcome) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = lock.Release(ctx, o)
}

// decode turns an entry read from Redis into the store's. It keeps the
// entry's absolute fresh-until and stale-until (rule 26); a record that
// does not decode is a miss. The entry is judged against the purge
// records as an L1 entry is: one that is hard-purged is a miss, one that
// is soft-purged is stale, and no answer at all for a refresh (which is
// there to replace it).
func (t *tier) decode(key string, a *loadArg, le *l2.Entry, refresh bool) (fragEntry, bool) {
	r := new(fragRecord)
	if err := r.UnmarshalBinary(le.Body); err != nil {
		return fragEntry{}, false
	}
	if scope, _, _ := strings.Cut(key, "\x00"); r.serveScope != scope && r.serveScope != scopeShared {
		// Not who this key's entries are for: never served (rule 25).
		return fragEntry{}, false
	}
	r.fresh, r.stale, r.stored, r.tagIDs = le.FreshUntil, le.StaleUntil, le.StoredAt, le.Tags
	switch t.purges.verdict(r) {
	case verdictHard:
		return fragEntry{}, false
	case verdictSoft:
		if refresh {
			return fragEntry{}, false
		}
		if r.stored.Before(r.fresh) {
			r.fresh = r.stored
		}
	}
	e := fragEntry{
		Value:      r,
		Cost:       entryCost(len(r.body), len(key)) + int64(len(r.contentType)) + tagsCost(r),
		FreshUntil: r.fresh,
		StaleUntil: le.StaleUntil,
	}
	if r.tpl != nil {
		e.Cost += int64(r.tpl.Size()) + memoCost(r.tpl)
	}
	if shared := fragmentKey(scopeShared, a.keyURL, a.lang); r.serveScope == scopeShared && shared != key {
		// A shared answer found under a narrower key: L1 keeps it under
		// the shared one, where every scope finds it.
		e.StoreKey = shared
	}
	return e, true
}

// l2Observer feeds the L2's events into the metrics.
type l2Observer struct{ m *metrics.Metrics }

// prewarm creates every L2 series at zero, so that a scrape shows the
// families and rates start from the first event.
func (o l2Observer) prewarm() {
	for op := l2.Op(0); op < l2.NumOps; op++ {
		o.m.L2Duration.WithLabelValues(op.String())
		for r := l2.Result(0); r < l2.NumResults; r++ {
			answer := r == l2.ResultHit || r == l2.ResultMiss || r == l2.ResultStale || r == l2.ResultCorrupt
			if answer == (op == l2.OpGet) || r >= l2.ResultError {
				o.m.L2Requests.WithLabelValues(op.String(), r.String())
			}
		}
	}
	for w := l2.WaitResult(0); w < l2.NumWaitResults; w++ {
		o.m.L2LockWaits.WithLabelValues(w.String())
	}
}

func (o l2Observer) Request(op l2.Op, r l2.Result, d time.Duration) {
	o.m.L2Requests.WithLabelValues(op.String(), r.String()).Inc()
	if r != l2.ResultBreakerOpen {
		o.m.L2Duration.WithLabelValues(op.String()).Observe(d.Seconds())
	}
}

func (o l2Observer) Up(up bool) {
	if up {
		o.m.L2Up.Set(1)
	} else {
		o.m.L2Up.Set(0)
	}
}

func (o l2Observer) LockWait(r l2.WaitResult) { o.m.L2LockWaits.WithLabelValues(r.String()).Inc() }
