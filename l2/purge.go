package l2

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Mode is how a purge judges the entries it concerns.
type Mode uint8

// The modes.
const (
	// Soft: entries stored at or before the purge are stale (served while
	// one refresh runs).
	Soft Mode = iota
	// Hard: entries stored at or before the purge are missing.
	Hard
)

// String returns "soft" or "hard".
func (m Mode) String() string {
	if m == Hard {
		return "hard"
	}
	return "soft"
}

func (m Mode) letter() string {
	if m == Hard {
		return "h"
	}
	return "s"
}

// The purge records live in one sorted set, <prefix>:v1:purges, without a
// TTL: per tag and mode one member, "s<tag hex>" or "h<tag hex>", whose
// score is the Redis time (Unix µs) of the tag's latest purge in that mode.
// So a soft purge after a hard one never weakens it, a purge costs O(tags),
// and the set holds at most two members per tag purged within
// Config.PurgeRetention (older ones are trimmed on each purge). Beside it,
// <prefix>:v1:epoch holds a random id, set when missing (also without a
// TTL): a new id means Redis lost the set.

// PurgeEvent is one purge as published on the channel.
type PurgeEvent struct {
	Mode Mode
	// At is the Redis time of the purge: entries with StoredAt at or
	// before it are purged.
	At time.Time
	// Epoch is the epoch the purge was recorded in.
	Epoch string
	Tags  []Tag
}

// PurgeRecord is one member of the purge set: the latest purge of Tag in
// Mode.
type PurgeRecord struct {
	Tag  Tag
	Mode Mode
	At   time.Time
}

// PurgeSnapshot is the purge set as ReadPurges found it.
type PurgeSnapshot struct {
	// Now is the Redis time of the read.
	Now time.Time
	// Epoch is the current epoch (set by this read if it was missing).
	Epoch string
	// Records are the records younger than Config.PurgeRetention, newest
	// first, at most Config.MaxPurgeRecords.
	Records []PurgeRecord
	// Truncated says that older records were left out: treat entries
	// stored at or before the oldest record returned as purged hard.
	Truncated bool
}

// Purge records a purge of tags in mode at the Redis server's time, trims
// records older than Config.PurgeRetention, and publishes the purge on the
// channel, in one request. It returns the purge's Redis time. No entry is
// touched: readers judge entries against the records (see Get), and Lock.Set
// fences against them.
func (c *Client) Purge(ctx context.Context, tags []Tag, mode Mode) (time.Time, error) {
	if len(tags) == 0 {
		return time.Time{}, nil
	}
	if len(tags) > MaxPurgeTags {
		return time.Time{}, ErrTooManyTags
	}
	args := make([]any, 0, 5+len(tags))
	var list strings.Builder
	list.Grow(len(tags) * (2*len(Tag{}) + 1))
	for i, t := range tags {
		if i > 0 {
			list.WriteByte(',')
		}
		list.WriteString(t.String())
	}
	args = append(args, mode.letter(), c.cfg.PurgeRetention.Microseconds(), randomHex(8), c.ks.channel, list.String())
	for _, t := range tags {
		args = append(args, t.String())
	}
	var vals []string
	_, err := c.call(ctx, OpPurge, func(ctx context.Context) (Result, error) {
		var err error
		vals, err = c.sc.purge.Run(ctx, c.rdb, []string{c.ks.purges, c.ks.epoch}, args...).StringSlice()
		if err == nil && len(vals) != 2 {
			err = fmt.Errorf("purge script answered %d values", len(vals))
		}
		return ResultOK, err
	})
	if err != nil {
		return time.Time{}, err
	}
	us, err := strconv.ParseInt(vals[0], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("l2 purge: bad answer: %w", err)
	}
	return time.UnixMicro(us), nil
}

// ReadPurges reads the purge set and the epoch in one request (setting the
// epoch if it is missing). The client calls it itself after each
// (re)subscription, for Listener.Synced.
func (c *Client) ReadPurges(ctx context.Context) (PurgeSnapshot, error) {
	var s PurgeSnapshot
	_, err := c.call(ctx, OpGet, func(ctx context.Context) (Result, error) {
		v, err := c.sc.readPurges.Run(ctx, c.rdb, []string{c.ks.purges, c.ks.epoch},
			c.cfg.PurgeRetention.Microseconds(), c.cfg.MaxPurgeRecords, randomHex(8)).Slice()
		if err != nil {
			return 0, err
		}
		s, err = parseSnapshot(v)
		return ResultOK, err
	})
	return s, err
}

// parseSnapshot decodes readPurgesScript's answer; members that are not
// records of this format are skipped.
func parseSnapshot(v []any) (PurgeSnapshot, error) {
	var s PurgeSnapshot
	bad := func(what string) (PurgeSnapshot, error) {
		return PurgeSnapshot{}, fmt.Errorf("l2: bad purge set answer: %s", what)
	}
	if len(v) != 4 {
		return bad("length")
	}
	now, ok1 := v[0].(string)
	epoch, ok2 := v[1].(string)
	total, ok3 := v[2].(string)
	recs, ok4 := v[3].([]any)
	if !ok1 || !ok2 || !ok3 || !ok4 || len(recs)%2 != 0 {
		return bad("types")
	}
	us, err := strconv.ParseInt(now, 10, 64)
	if err != nil {
		return bad("time")
	}
	n, err := strconv.Atoi(total)
	if err != nil {
		return bad("count")
	}
	s.Now, s.Epoch, s.Truncated = time.UnixMicro(us), epoch, n > len(recs)/2
	s.Records = make([]PurgeRecord, 0, len(recs)/2)
	for i := 0; i < len(recs); i += 2 {
		member, ok1 := recs[i].(string)
		score, ok2 := recs[i+1].(string)
		if !ok1 || !ok2 || len(member) != 1+2*len(Tag{}) {
			continue
		}
		var r PurgeRecord
		switch member[0] {
		case 's':
			r.Mode = Soft
		case 'h':
			r.Mode = Hard
		default:
			continue
		}
		t, ok := parseTag(member[1:])
		f, err := strconv.ParseFloat(score, 64)
		if !ok || err != nil || f < 0 || f > math.MaxInt64 {
			continue
		}
		r.Tag, r.At = t, time.UnixMicro(int64(f))
		s.Records = append(s.Records, r)
	}
	return s, nil
}
