package proxy

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"fragcache/cachestore"
	"fragcache/l2"
)

// Purges are judged lazily (DESIGN "Invalidation", precise rule 27): a
// purge records one time per tag, and a fragment stored (its fetch
// started) at or before the purge of one of its tags is purged: stale
// after a soft purge, gone after a hard one. Nothing is scanned: a purge
// costs one write per tag, a lookup one comparison in the common case.

// purgeVerdict is what the purge records say of a fragment.
type purgeVerdict uint8

const (
	verdictKeep purgeVerdict = iota
	// verdictUnsure: no purge concerns it as far as this replica knows,
	// but its mirror of the purge records is incomplete (the subscription
	// to Redis's events is down): serve it, not as fresh.
	verdictUnsure
	verdictSoft // stale: served while one refresh runs
	verdictHard // missing
)

// purgeClock is the timeline purge times and fetch starts are compared on,
// in Unix microseconds. Without Redis it is the process's monotonic clock,
// read as the wall time of the start plus the time elapsed since, so that
// no clock step reorders a fetch and a purge. With Redis every purge time
// and the start of every fetch under the fill lock is Redis's; fetches
// made without the lock read this clock, moved to Redis's each time a
// Redis answer says what time it is there. The answer was read before it
// arrived, so the estimate lags Redis by up to one round trip: a local
// fetch start looks earlier than it was, which can only fence it more.
type purgeClock struct {
	start  time.Time    // with its monotonic reading
	offset atomic.Int64 // µs from the local reading to Redis's clock
}

func (c *purgeClock) local() int64 {
	return c.start.UnixMicro() + time.Since(c.start).Microseconds()
}

// now returns the current time on the timeline.
func (c *purgeClock) now() int64 { return c.local() + c.offset.Load() }

// nowTime is now as a time.Time.
func (c *purgeClock) nowTime() time.Time { return time.UnixMicro(c.now()) }

// observe notes that Redis's clock read t shortly before now.
func (c *purgeClock) observe(t time.Time) {
	if !t.IsZero() {
		c.offset.Store(t.UnixMicro() - c.local())
	}
}

// none is the time of a purge that never happened.
const none = math.MinInt64

// tagPurge is the latest purge of one tag in each mode.
type tagPurge struct{ soft, hard int64 }

// purgeEvent is one tag's purge, as the table keeps them in order of
// arrival for trimming.
type purgeEvent struct {
	tag  l2.Tag
	at   int64
	hard bool
}

// purgeTable is this replica's mirror of the purge records: every purge
// made here and, with Redis, every purge of the deployment, fed by the
// event channel and re-read whole on every (re)subscription. It is safe
// for concurrent use; verdict, on the lookup path, takes no lock in the
// common case and allocates nothing.
//
// It is bounded: a record lives Retention (no fragment lives longer), and
// beyond maxRecords the oldest records are folded into a floor (every
// fragment stored at or before it counts as purged in that mode), so
// memory grows with the purges of one retention period up to a fixed
// bound, never with the number of fragments or tags seen.
type purgeTable struct {
	clock purgeClock
	// quick: a fragment stored after it is concerned by no purge and no
	// floor; MaxInt64 while the mirror is incomplete.
	quick atomic.Int64
	// gen is raised after every change, so that a fragment judged "keep"
	// at one generation need not be judged again until the next.
	gen atomic.Uint64
	// noStale is set when --stale-ttl is 0: nothing stale is served, so a
	// soft purge is a hard one.
	noStale atomic.Bool

	// mu protects everything below.
	mu        sync.RWMutex
	tags      map[l2.Tag]tagPurge
	events    []purgeEvent // a ring in order of arrival
	head, n   int
	newest    int64
	softFloor int64
	hardFloor int64
	// synced: the mirror holds every purge of the deployment (always true
	// without Redis). epoch is the Redis run the records belong to.
	synced     bool
	epoch      string
	retention  int64 // µs
	maxRecords int
}

// Bounds of the purge table.
const (
	// maxPurgeRecords is the most tag purges kept, what l2 reads back at
	// most on a resync (l2.DefaultMaxPurgeRecords): about 8 MB of records.
	maxPurgeRecords = l2.DefaultMaxPurgeRecords
	// maxFreshness caps a fragment's freshness (DESIGN rule 27: no entry
	// lives longer than 24h + --stale-ttl, nor past its purge records).
	maxFreshness = 24 * time.Hour
)

func newPurgeTable(staleTTL time.Duration, withRedis bool) *purgeTable {
	pt := &purgeTable{
		tags:       map[l2.Tag]tagPurge{},
		newest:     none,
		softFloor:  none,
		hardFloor:  none,
		synced:     !withRedis,
		maxRecords: maxPurgeRecords,
	}
	pt.clock.start = time.Now()
	pt.setStaleTTL(staleTTL)
	pt.gen.Store(1)
	pt.publish()
	return pt
}

// setStaleTTL follows --stale-ttl: records live 24h plus the longest one
// this process has run with.
func (pt *purgeTable) setStaleTTL(d time.Duration) {
	pt.noStale.Store(d == 0)
	pt.mu.Lock()
	pt.retention = max(pt.retention, (maxFreshness + d).Microseconds())
	pt.mu.Unlock()
}

// publish sets quick after a change; the caller holds mu or owns pt.
func (pt *purgeTable) publish() {
	if !pt.synced {
		pt.quick.Store(math.MaxInt64)
		return
	}
	pt.quick.Store(max(pt.newest, pt.softFloor, pt.hardFloor))
}

// verdict judges r against the purge records. Safe for concurrent use;
// a nil table keeps everything.
func (pt *purgeTable) verdict(r *fragRecord) purgeVerdict {
	if pt == nil {
		return verdictKeep
	}
	s := r.stored.UnixMicro()
	if s > pt.quick.Load() {
		return verdictKeep
	}
	g := pt.gen.Load()
	if atomic.LoadUint64(&r.judged) == g {
		return verdictKeep
	}
	v := pt.judge(s, r.tagIDs)
	if v == verdictKeep {
		atomic.StoreUint64(&r.judged, g)
	}
	return v
}

// judge is verdict's look at the records, for a fragment stored at s
// with tags.
func (pt *purgeTable) judge(s int64, tags []l2.Tag) purgeVerdict {
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	v := verdictKeep
	if s <= pt.hardFloor {
		return verdictHard
	}
	if s <= pt.softFloor {
		v = verdictSoft
	}
	for _, t := range tags {
		p, ok := pt.tags[t]
		if !ok {
			continue
		}
		if s <= p.hard {
			return verdictHard
		}
		if s <= p.soft {
			v = verdictSoft
		}
	}
	switch {
	case v == verdictSoft && pt.noStale.Load():
		return verdictHard
	case v == verdictKeep && !pt.synced:
		return verdictUnsure
	}
	return v
}

// expiry is verdict in the store's terms, for cachestore.Store.Expire.
func (pt *purgeTable) expiry(r *fragRecord) cachestore.Expiry {
	switch pt.verdict(r) {
	case verdictSoft:
		return cachestore.ExpireSoft
	case verdictHard:
		return cachestore.ExpireHard
	}
	return cachestore.Keep
}

// purgedSince reports whether one of tags, or a floor, was purged at or
// after at: what was remembered of a fragment then (a failure, an
// uncacheable answer) is out of date.
func (pt *purgeTable) purgedSince(at int64, tags []l2.Tag) bool {
	if pt == nil || at > pt.quick.Load() {
		return false
	}
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	if at <= pt.softFloor || at <= pt.hardFloor {
		return true
	}
	for _, t := range tags {
		if p, ok := pt.tags[t]; ok && (at <= p.soft || at <= p.hard) {
			return true
		}
	}
	return false
}

// add records a purge of tags at at.
func (pt *purgeTable) add(tags []l2.Tag, hard bool, at int64) {
	pt.mu.Lock()
	for _, t := range tags {
		pt.record(t, hard, at)
	}
	pt.trim()
	pt.publish()
	pt.mu.Unlock()
	pt.gen.Add(1)
}

// record notes one tag's purge; the caller holds mu.
func (pt *purgeTable) record(t l2.Tag, hard bool, at int64) {
	p, ok := pt.tags[t]
	if !ok {
		p = tagPurge{soft: none, hard: none}
	}
	switch {
	case hard && at > p.hard:
		p.hard = at
	case !hard && at > p.soft:
		p.soft = at
	default:
		return // an older purge than one already known
	}
	pt.tags[t] = p
	pt.newest = max(pt.newest, at)
	pt.push(purgeEvent{tag: t, at: at, hard: hard})
}

// push appends e to the ring, growing it up to maxRecords + 1.
func (pt *purgeTable) push(e purgeEvent) {
	if pt.n == len(pt.events) {
		if size := min(max(2*len(pt.events), 64), pt.maxRecords+1); size > pt.n {
			grown := make([]purgeEvent, size)
			for i := range pt.n {
				grown[i] = pt.events[(pt.head+i)%len(pt.events)]
			}
			pt.events, pt.head = grown, 0
		} else {
			pt.drop(true) // full: fold the oldest into its floor
		}
	}
	pt.events[(pt.head+pt.n)%len(pt.events)] = e
	pt.n++
}

// trim forgets the records older than the retention and folds the oldest
// ones beyond maxRecords into the floors; the caller holds mu.
func (pt *purgeTable) trim() {
	cutoff := pt.clock.now() - pt.retention
	for pt.n > 0 {
		old := pt.n > pt.maxRecords
		if !old && pt.events[pt.head].at >= cutoff {
			return
		}
		pt.drop(old)
	}
}

// drop removes the oldest event; fold raises its mode's floor to it
// (records dropped for room, not for age). The caller holds mu.
func (pt *purgeTable) drop(fold bool) {
	e := pt.events[pt.head]
	pt.events[pt.head] = purgeEvent{}
	pt.head = (pt.head + 1) % len(pt.events)
	pt.n--
	if fold {
		if e.hard {
			pt.hardFloor = max(pt.hardFloor, e.at)
		} else {
			pt.softFloor = max(pt.softFloor, e.at)
		}
	}
	p, ok := pt.tags[e.tag]
	if !ok {
		return
	}
	if e.hard && p.hard == e.at {
		p.hard = none
	} else if !e.hard && p.soft == e.at {
		p.soft = none
	}
	if p.hard == none && p.soft == none {
		delete(pt.tags, e.tag)
	} else {
		pt.tags[e.tag] = p
	}
}

// records returns how many tag purges the table holds.
func (pt *purgeTable) records() int {
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	return pt.n
}

// The table is the L2's Listener: it mirrors the deployment's purge
// records (DESIGN rule 27).

// Purged records a purge published on the channel (this replica's own
// included, which it recorded already: a repeat changes nothing).
func (pt *purgeTable) Purged(p l2.PurgeEvent) {
	at := p.At.UnixMicro()
	pt.mu.Lock()
	pt.newEpoch(p.Epoch, at)
	for _, t := range p.Tags {
		pt.record(t, p.Mode == l2.Hard, at)
	}
	pt.trim()
	pt.publish()
	pt.mu.Unlock()
	pt.gen.Add(1)
}

// Synced merges the purge set read after a (re)subscription: from now on
// the mirror is complete. Records are merged, never replaced: a Redis that
// lost its data (a new epoch) answers an empty set, and what was purged
// before stays purged, while everything stored before that answer counts
// as soft-purged.
func (pt *purgeTable) Synced(s l2.PurgeSnapshot) {
	pt.clock.observe(s.Now)
	pt.mu.Lock()
	pt.newEpoch(s.Epoch, s.Now.UnixMicro())
	for i := len(s.Records) - 1; i >= 0; i-- { // oldest first
		r := s.Records[i]
		pt.record(r.Tag, r.Mode == l2.Hard, r.At.UnixMicro())
	}
	if s.Truncated && len(s.Records) > 0 {
		pt.hardFloor = max(pt.hardFloor, s.Records[len(s.Records)-1].At.UnixMicro())
	}
	pt.synced = true
	pt.trim()
	pt.publish()
	pt.mu.Unlock()
	pt.gen.Add(1)
}

// Desynced marks the mirror incomplete: until the next Synced no fragment
// is served as fresh.
func (pt *purgeTable) Desynced() {
	pt.mu.Lock()
	pt.synced = false
	pt.publish()
	pt.mu.Unlock()
	pt.gen.Add(1)
}

// newEpoch notes the Redis run of a purge or a snapshot: when it is not
// the one known, Redis lost its purge records, and every fragment stored
// before at counts as soft-purged. The caller holds mu.
func (pt *purgeTable) newEpoch(epoch string, at int64) {
	if epoch == "" || epoch == pt.epoch {
		return
	}
	if pt.epoch != "" {
		pt.softFloor = max(pt.softFloor, at)
	}
	pt.epoch = epoch
}
