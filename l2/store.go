package l2

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Status is what Get found under a key.
type Status uint8

// The statuses. Get judges freshness by the local clock against the
// entry's absolute times; it does not know about purges (see Get).
const (
	// Miss: no entry, or one past its StaleUntil.
	Miss Status = iota
	// Hit: an entry before its FreshUntil.
	Hit
	// Stale: an entry past its FreshUntil, before its StaleUntil.
	Stale
	// Corrupt: a value that is not an entry of this key (unknown format
	// version, another key, a body over Config.MaxBodySize, more than
	// MaxTags tags, truncated or with trailing bytes). Treat it as Miss;
	// the next Lock.Set replaces it.
	Corrupt
)

var statusNames = [...]string{"miss", "hit", "stale", "corrupt"}

// String returns the status's name.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// HintKind says what a hint records about a key.
type HintKind uint8

// The hint kinds.
const (
	// NoHint: nothing recorded.
	NoHint HintKind = iota
	// HintFailed: the key's last fetch failed; back off until Until.
	HintFailed
	// HintBypass: the key's last answer was uncacheable; fetch it without
	// the lock and without storing until Until.
	HintBypass
)

// Hint is what the last lock holder of a key recorded besides an entry,
// shared by every replica: a failure backoff or a bypass (DESIGN rules 9
// and 26). It is written by Lock.Release and read by Get.
type Hint struct {
	Kind HintKind
	// Until is when the hint ends, on the local clock (now plus the hint
	// key's remaining TTL, so replicas' clocks need not agree).
	Until time.Time
	// Since is the Redis time at which it was recorded; a purge of one of
	// the key's tags after Since clears it for the caller (DESIGN rule 28).
	Since time.Time
}

// Lookup is the answer of Get.
type Lookup struct {
	Status Status
	// Entry is the entry found, for Hit and Stale; zero otherwise.
	Entry Entry
	// Hint is the key's hint, whatever Status says.
	Hint Hint
}

// SetResult says what Lock.Set wrote.
type SetResult uint8

// The set results.
const (
	// StoredFresh: the entry was written as given.
	StoredFresh SetResult = iota
	// StoredStale: a soft purge of one of its tags happened at or after
	// the lock's Start (or Redis lost its data since then: a new epoch), so
	// the entry was written already stale (FreshUntil = StoredAt): served
	// while one refresh runs, never as fresh.
	StoredStale
	// NotStored: a hard purge of one of its tags happened at or after the
	// lock's Start; nothing was written.
	NotStored
	// Expired: StaleUntil had passed (or was less than 1 ms away); nothing
	// was written.
	Expired
)

var setNames = [...]string{"stored_fresh", "stored_stale", "not_stored", "expired"}

// String returns the set result's name.
func (r SetResult) String() string {
	if int(r) < len(setNames) {
		return setNames[r]
	}
	return "unknown"
}

// Get reads the entry of key and the key's hint in one round trip.
//
// It reports what Redis holds; it does not judge purges: an entry whose
// StoredAt is at or before a purge of one of its Tags is purged (soft:
// treat it as Stale; hard: as Miss), and the caller checks that against its
// mirror of the purge set, as it does for L1 entries. A returned error
// (ErrBreakerOpen, ErrTimeout, …) means "not known": degrade as if Redis
// were absent.
func (c *Client) Get(ctx context.Context, key string) (Lookup, error) {
	return c.get(ctx, key, hashKey(key))
}

func (c *Client) get(ctx context.Context, key string, h keyHash) (Lookup, error) {
	var lk Lookup
	_, err := c.call(ctx, OpGet, func(ctx context.Context) (Result, error) {
		pipe := c.rdb.Pipeline()
		val := pipe.Get(ctx, c.ks.key(kindEntry, h))
		hint := c.queueHint(ctx, pipe, h)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return 0, err
		}
		now := time.Now()
		var err error
		if lk.Hint, err = hint(now); err != nil {
			return 0, err
		}
		v, err := val.Bytes()
		switch {
		case errors.Is(err, redis.Nil):
			return ResultMiss, nil
		case err != nil:
			return 0, err
		}
		e, err := decodeEntry(v, key, c.cfg.MaxBodySize)
		switch {
		case err != nil:
			lk.Status = Corrupt
			return ResultCorrupt, nil
		case now.Before(e.FreshUntil):
			lk.Status, lk.Entry = Hit, e
			return ResultHit, nil
		case now.Before(e.StaleUntil):
			lk.Status, lk.Entry = Stale, e
			return ResultStale, nil
		}
		return ResultMiss, nil
	})
	if err != nil {
		return Lookup{}, err
	}
	return lk, nil
}

// queueHint queues the reads of h's hint on pipe and returns the function
// that decodes them once the pipeline ran.
func (c *Client) queueHint(ctx context.Context, pipe redis.Pipeliner, h keyHash) func(now time.Time) (Hint, error) {
	hk := c.ks.key(kindHint, h)
	val := pipe.Get(ctx, hk)
	ttl := pipe.PTTL(ctx, hk)
	return func(now time.Time) (Hint, error) {
		v, err := val.Result()
		if errors.Is(err, redis.Nil) {
			return Hint{}, nil
		}
		if err != nil {
			return Hint{}, err
		}
		d, err := ttl.Result()
		if err != nil {
			return Hint{}, err
		}
		return parseHint(v, d, now), nil
	}
}

// parseHint decodes a hint value ("f" or "b", then the Redis time in
// microseconds) with its remaining TTL; anything else is no hint.
func parseHint(v string, ttl time.Duration, now time.Time) Hint {
	if len(v) < 2 || ttl <= 0 {
		return Hint{}
	}
	since, err := strconv.ParseInt(v[1:], 10, 64)
	if err != nil || since < 0 {
		return Hint{}
	}
	h := Hint{Until: now.Add(ttl), Since: time.UnixMicro(since)}
	switch v[0] {
	case 'f':
		h.Kind = HintFailed
	case 'b':
		h.Kind = HintBypass
	default:
		return Hint{}
	}
	return h
}

// Set writes e under the lock's key, fenced by the lock (DESIGN rule 27):
// e.StoredAt becomes l.Start; a purge of one of e's tags at or after
// l.Start makes the write stale (soft purge) or refuses it (hard purge),
// judged inside Redis by Redis's clock. The key's TTL runs to e.StaleUntil,
// capped at Config.PurgeRetention; FreshUntil after StaleUntil is lowered to
// it, a zero FreshUntil means stale from the start. Body must not be modified during the call. Set may be called after
// the lock expired: the entry is still the answer of a fetch that started
// at l.Start.
func (l *Lock) Set(ctx context.Context, e Entry) (SetResult, error) {
	c := l.c
	if len(e.Tags) > MaxTags {
		return NotStored, ErrTooManyTags
	}
	if len(e.Body) > c.cfg.MaxBodySize {
		return NotStored, ErrTooLarge
	}
	e.StoredAt = l.Start
	if e.FreshUntil.After(e.StaleUntil) {
		e.FreshUntil = e.StaleUntil
	}
	if e.FreshUntil.UnixMicro() < 0 { // zero: stale from the start
		e.FreshUntil = e.StoredAt
	}
	ttl := min(time.Until(e.StaleUntil), c.cfg.PurgeRetention)
	if ttl < time.Millisecond {
		return Expired, nil
	}
	keys, args := c.setArgs(l.key, l.h, &e, ttl, l.epoch)
	var n int64
	_, err := c.call(ctx, OpSet, func(ctx context.Context) (Result, error) {
		var err error
		n, err = c.sc.set.Run(ctx, c.rdb, keys, args...).Int64()
		return ResultOK, err
	})
	if err != nil {
		return NotStored, err
	}
	switch n {
	case 0:
		return StoredFresh, nil
	case 1:
		return StoredStale, nil
	}
	return NotStored, nil
}

// setArgs builds the keys and arguments of setScript.
func (c *Client) setArgs(key string, h keyHash, e *Entry, ttl time.Duration, epoch string) ([]string, []any) {
	v := appendEntry(make([]byte, 0, encodedSize(key, e)), key, e)
	staleFresh := min(e.StoredAt.UnixMicro(), e.StaleUntil.UnixMicro())
	args := make([]any, 0, 5+len(e.Tags))
	args = append(args,
		v,
		max(ttl.Milliseconds(), 1),
		strconv.FormatInt(e.StoredAt.UnixMicro(), 10),
		binary.BigEndian.AppendUint64(nil, uint64(staleFresh)),
		epoch,
	)
	for _, t := range e.Tags {
		args = append(args, t.String())
	}
	return []string{c.ks.key(kindEntry, h), c.ks.purges, c.ks.epoch}, args
}
