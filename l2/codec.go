package l2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Entry is one value as l2 stores it: the caller's opaque body under the
// header l2 owns. Times are absolute, with microsecond precision.
type Entry struct {
	// Body is the caller's encoded entry; l2 never looks inside. Lock.Set
	// copies it into the value it sends; a Body returned by Get is a fresh
	// slice owned by the caller.
	Body []byte
	// FreshUntil: before it the entry is a hit.
	FreshUntil time.Time
	// StaleUntil: before it (and after FreshUntil) the entry is stale;
	// after it the entry is gone. The Redis key's TTL ends there too, or
	// earlier (Config.PurgeRetention caps it).
	StaleUntil time.Time
	// StoredAt is the Redis server time at which the fetch that produced
	// the entry started: the Start of the fill lock it was stored under
	// (DESIGN rule 27). Lock.Set sets it; its value on input is ignored.
	StoredAt time.Time
	// Tags are the entry's purge tags, at most MaxTags.
	Tags []Tag
}

// The layout of an encoded value (format version 1), all integers
// big-endian:
//
//	0  'F' 'C' 0x01       magic and format version
//	3  int64              fresh-until, Unix microseconds
//	11 int64              stale-until, Unix microseconds
//	19 int64              stored-at, Unix microseconds (Redis clock)
//	27 uint32 n, n bytes  the full key
//	.. uint8 t, t×16 bytes the tag hashes, t <= MaxTags
//	.. uint32 m, m bytes  the body, m <= Config.MaxBodySize
//
// and nothing after the body. fresh-until sits at a fixed offset so that the
// store script can turn a value stale without parsing it.
const (
	formatVersion = 1
	freshOffset   = 3
	fixedHeader   = 3 + 3*8 + 4 // up to the key bytes
	minValue      = fixedHeader + 1 + 4
)

// ErrCorrupt is the reason a stored value is not an entry of this key;
// Get reports such a value as Corrupt, never as an error.
var ErrCorrupt = errors.New("l2: corrupt value")

// encodedSize returns the length of e's encoding under key.
func encodedSize(key string, e *Entry) int {
	return fixedHeader + len(key) + 1 + len(e.Tags)*len(Tag{}) + 4 + len(e.Body)
}

// appendEntry appends the encoding of e under key to b. The caller has
// checked the limits (key size, tag count).
func appendEntry(b []byte, key string, e *Entry) []byte {
	b = append(b, 'F', 'C', formatVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(e.FreshUntil.UnixMicro()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.StaleUntil.UnixMicro()))
	b = binary.BigEndian.AppendUint64(b, uint64(e.StoredAt.UnixMicro()))
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = append(b, byte(len(e.Tags)))
	for _, t := range e.Tags {
		b = append(b, t[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Body)))
	return append(b, e.Body...)
}

// decodeEntry decodes v, which must be an entry of key with a body of at
// most maxBody bytes. The Body of the result aliases v. Every rejection
// wraps ErrCorrupt.
func decodeEntry(v []byte, key string, maxBody int) (Entry, error) {
	var e Entry
	if len(v) < minValue {
		return e, fmt.Errorf("%w: %d bytes, shorter than any entry", ErrCorrupt, len(v))
	}
	if v[0] != 'F' || v[1] != 'C' {
		return e, fmt.Errorf("%w: not an l2 value", ErrCorrupt)
	}
	if v[2] != formatVersion {
		return e, fmt.Errorf("%w: format version %d", ErrCorrupt, v[2])
	}
	fresh := int64(binary.BigEndian.Uint64(v[3:]))
	stale := int64(binary.BigEndian.Uint64(v[11:]))
	stored := int64(binary.BigEndian.Uint64(v[19:]))
	if fresh < 0 || stale < 0 || stored < 0 || fresh > stale {
		return e, fmt.Errorf("%w: bad times", ErrCorrupt)
	}
	p := fixedHeader
	n := binary.BigEndian.Uint32(v[p-4:])
	if uint64(n) != uint64(len(key)) || len(v)-p < len(key) || string(v[p:p+len(key)]) != key {
		return e, fmt.Errorf("%w: the value belongs to another key", ErrCorrupt)
	}
	p += len(key)
	if len(v)-p < 1 {
		return e, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	tags := int(v[p])
	p++
	if tags > MaxTags {
		return e, fmt.Errorf("%w: %d tags", ErrCorrupt, tags)
	}
	if len(v)-p < tags*len(Tag{})+4 {
		return e, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	if tags > 0 {
		e.Tags = make([]Tag, tags)
		for i := range e.Tags {
			copy(e.Tags[i][:], v[p:])
			p += len(Tag{})
		}
	}
	m := binary.BigEndian.Uint32(v[p:])
	p += 4
	if uint64(m) > uint64(maxBody) {
		return Entry{}, fmt.Errorf("%w: body of %d bytes over the limit", ErrCorrupt, m)
	}
	if uint64(len(v)-p) != uint64(m) {
		return Entry{}, fmt.Errorf("%w: body of %d bytes in %d (truncated or trailing bytes)", ErrCorrupt, m, len(v)-p)
	}
	e.Body = v[p:len(v):len(v)]
	e.FreshUntil = time.UnixMicro(fresh)
	e.StaleUntil = time.UnixMicro(stale)
	e.StoredAt = time.UnixMicro(stored)
	return e, nil
}
