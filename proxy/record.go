package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/valyala/fasthttp"

	"fragcache/cachestore"
	"fragcache/fragment"
	"fragcache/l2"
)

// fragRecord is what the store keeps for one fragment: the answer's body
// and what was decided about it when it was fetched. It is immutable once
// the fetcher returned it (but for the verdict cache, judged): body, tags
// and tpl are shared by every request that renders it. AppendBinary and
// UnmarshalBinary give it the versioned encoding it has on the wire (the
// L2).
type fragRecord struct {
	body []byte
	// contentType is the answer's Content-Type as fasthttp reads it
	// (text/plain when it sent none; empty when longer than
	// maxRecordContentType): with the fragment's opt-in and
	// Surrogate-Control it decided whether ESI runs in body.
	contentType string
	fresh       time.Time // end of freshness, for the page's max-age
	stale       time.Time // end of the stale window; never before fresh
	// stored is when the fetch that produced it started, on the purge
	// timeline (purgeClock; Redis's clock for what was fetched under the
	// fill lock): a purge at or after it concerns it.
	stored time.Time
	// judged is the purge table's generation at which the record was last
	// found concerned by no purge (purgeTable.verdict), accessed
	// atomically: the one field that changes once the record is shared,
	// a cache of a verdict that depends on nothing else that changes. It
	// sits beside stored, which every lookup reads too.
	judged uint64
	// tags are the purge tags its upstream's answer named (Surrogate-Key,
	// xkey, Cache-Tag), at most maxRecordTags of at most maxRecordTag
	// bytes each.
	tags []string
	// tagIDs are the hashes of all its tags, the automatic ones (tags.go)
	// and tags: a field derived from where it was fetched, not encoded; a
	// record read from the L2 takes them from the L2's header.
	tagIDs []l2.Tag
	// serveScope is who may be served this record (see placeAnswer):
	// scopeShared for everybody, else exactly that scope.
	serveScope string
	private    bool // served to one user scope only: isUserScope(serveScope)
	// unstored: the answer forbade keeping it (no-store, no-cache,
	// private without credentials, Set-Cookie, Vary: *, no freshness). It
	// reaches only the requests that waited for it, and no page that
	// holds it may be kept by a CDN or browser either.
	unstored bool
	// esi: ESI is executed in body. tpl is then its parse, never nil: a
	// field derived from body, not encoded, rebuilt by UnmarshalBinary.
	esi bool
	tpl *fragment.Template
}

// The store's types for fragments: it holds *fragRecord, and its loads
// take the *loadArg of the lookup that started them.
type (
	fragStore  = cachestore.Store[*fragRecord, *loadArg]
	fragFlight = cachestore.Flight[*fragRecord, *loadArg]
	fragResult = cachestore.Result[*fragRecord, *loadArg]
	fragEntry  = cachestore.Entry[*fragRecord]
)

// The encoding of a fragRecord, format version 1, integers big-endian:
//
//	0  uint8                 format version (1)
//	1  uint8                 flags: 1 private, 2 unstored, 4 esi; no other bit
//	2  int64                 fresh, Unix nanoseconds (0: the zero time)
//	10 int64                 stale, likewise; not before fresh
//	18 int64                 stored, likewise
//	26 uint8 n, n bytes      serve scope, 1 <= n
//	.. uint16 n, n bytes     content type, n <= maxRecordContentType
//	.. uint8 t               tag count, t <= maxRecordTags
//	   t × (uint8 n, n bytes) tags, 1 <= n <= maxRecordTag
//	.. uint32 m, m bytes     body
//
// and nothing after the body. Every encoding decodes to one record and
// back to the same bytes. A new layout takes a new version; a decoder
// refuses versions it does not know (the entry is then a miss).
const (
	recordVersion        = 1
	recordFixed          = 2 + 3*8 // up to the serve scope's length
	maxRecordContentType = 1 << 10
	maxRecordTags        = 64  // DESIGN "Invalidation"
	maxRecordTag         = 128 // likewise
	// recordOverhead bounds what a record's encoding adds to its body: the
	// L2's body limit is --max-fragment-size plus this.
	recordOverhead = recordFixed + 1 + 255 + 2 + maxRecordContentType + 1 + maxRecordTags*(1+maxRecordTag) + 4
)

const (
	flagPrivate  = 1 << 0
	flagUnstored = 1 << 1
	flagESI      = 1 << 2
	knownFlags   = flagPrivate | flagUnstored | flagESI
)

// errBadRecord is wrapped by every error of the record encoding.
var errBadRecord = errors.New("fragment record")

// AppendBinary appends r's encoding to b. It fails, leaving b as it was,
// for a record that breaks the rules of the layout above or whose times
// cannot be written in Unix nanoseconds (before 1678, after 2262, or
// exactly the Unix epoch). It implements encoding.BinaryAppender.
func (r *fragRecord) AppendBinary(b []byte) ([]byte, error) {
	if err := r.check(); err != nil {
		return b, err
	}
	var times [3]int64
	for i, t := range [...]time.Time{r.fresh, r.stale, r.stored} {
		n, ok := unixNano(t)
		if !ok {
			return b, fmt.Errorf("%w: time %v cannot be encoded", errBadRecord, t)
		}
		times[i] = n
	}
	if len(r.body) > math.MaxUint32 {
		return b, fmt.Errorf("%w: body of %d bytes", errBadRecord, len(r.body))
	}
	var flags byte
	if r.private {
		flags |= flagPrivate
	}
	if r.unstored {
		flags |= flagUnstored
	}
	if r.esi {
		flags |= flagESI
	}
	b = append(b, recordVersion, flags)
	for _, n := range times {
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, byte(len(r.serveScope)))
	b = append(b, r.serveScope...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.contentType)))
	b = append(b, r.contentType...)
	b = append(b, byte(len(r.tags)))
	for _, t := range r.tags {
		b = append(b, byte(len(t)))
		b = append(b, t...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(r.body)))
	return append(b, r.body...), nil
}

// check reports what in r the encoding cannot carry or a decoder would
// refuse.
func (r *fragRecord) check() error {
	switch {
	case len(r.serveScope) == 0 || len(r.serveScope) > math.MaxUint8:
		return fmt.Errorf("%w: serve scope of %d bytes", errBadRecord, len(r.serveScope))
	case r.private != isUserScope(r.serveScope):
		return fmt.Errorf("%w: private is %v for serve scope %.1q", errBadRecord, r.private, r.serveScope)
	case len(r.contentType) > maxRecordContentType:
		return fmt.Errorf("%w: content type of %d bytes", errBadRecord, len(r.contentType))
	case len(r.tags) > maxRecordTags:
		return fmt.Errorf("%w: %d tags", errBadRecord, len(r.tags))
	case r.stale.Before(r.fresh):
		return fmt.Errorf("%w: stale until %v before fresh until %v", errBadRecord, r.stale, r.fresh)
	case r.esi != (r.tpl != nil):
		return fmt.Errorf("%w: esi is %v with a template %v", errBadRecord, r.esi, r.tpl != nil)
	}
	for _, t := range r.tags {
		if len(t) == 0 || len(t) > maxRecordTag {
			return fmt.Errorf("%w: tag of %d bytes", errBadRecord, len(t))
		}
	}
	return nil
}

// UnmarshalBinary decodes data into r, which must be a zero fragRecord. It
// refuses (with an error, never a panic) an unknown version or flag, a
// truncated record, trailing bytes, lengths over the layout's limits, times
// out of order, and an esi flag on a body that holds no ESI. What it
// allocates is bounded by len(data) (body, strings and the parsed
// template); r shares no memory with data. It implements
// encoding.BinaryUnmarshaler.
func (r *fragRecord) UnmarshalBinary(data []byte) error {
	d := recordDecoder{b: data}
	version, flags := d.byte(), d.byte()
	if d.err == nil && version != recordVersion {
		return fmt.Errorf("%w: format version %d", errBadRecord, version)
	}
	if d.err == nil && flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#x", errBadRecord, flags&^knownFlags)
	}
	var v fragRecord
	v.private, v.unstored, v.esi = flags&flagPrivate != 0, flags&flagUnstored != 0, flags&flagESI != 0
	v.fresh, v.stale, v.stored = d.time(), d.time(), d.time()
	v.serveScope = string(d.bytes(int(d.byte())))
	if n := d.uint16(); n <= maxRecordContentType {
		v.contentType = string(d.bytes(n))
	} else if d.err == nil {
		return fmt.Errorf("%w: content type of %d bytes", errBadRecord, n)
	}
	tags := int(d.byte())
	if tags > maxRecordTags {
		return fmt.Errorf("%w: %d tags", errBadRecord, tags)
	}
	for i := 0; i < tags && d.err == nil; i++ {
		n := int(d.byte())
		if d.err != nil {
			break
		}
		if n == 0 || n > maxRecordTag {
			return fmt.Errorf("%w: tag of %d bytes", errBadRecord, n)
		}
		if v.tags == nil {
			v.tags = make([]string, 0, tags)
		}
		v.tags = append(v.tags, string(d.bytes(n)))
	}
	body := d.bytes(d.uint32())
	if d.err != nil {
		return d.err
	}
	if len(d.b) > 0 {
		return fmt.Errorf("%w: %d bytes after the body", errBadRecord, len(d.b))
	}
	v.body = bytes.Clone(body)
	if v.body == nil {
		v.body = []byte{}
	}
	if v.esi {
		// Errors were counted when it was fetched. Streamed either way: the
		// replica that reads it may stream pages when the one that
		// fetched it did not.
		tpl, _ := fragment.Parse(v.body, fragment.Limits{Stream: true})
		if tpl == nil || !tpl.HasESI() {
			return fmt.Errorf("%w: esi flag on a body without ESI", errBadRecord)
		}
		v.tpl = tpl
	}
	if err := v.check(); err != nil {
		return err
	}
	*r = v
	return nil
}

// recordDecoder reads the fields of an encoded record. Once a read runs
// past the end, err is set and every later read yields zero values.
type recordDecoder struct {
	b   []byte
	err error
}

// bytes returns the next n bytes, which alias the input.
func (d *recordDecoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: truncated (%d bytes wanted, %d left)", errBadRecord, n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *recordDecoder) byte() byte {
	if v := d.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *recordDecoder) uint16() int {
	if v := d.bytes(2); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (d *recordDecoder) uint32() int {
	if v := d.bytes(4); v != nil {
		return int(binary.BigEndian.Uint32(v))
	}
	return 0
}

func (d *recordDecoder) time() time.Time {
	v := d.bytes(8)
	if v == nil {
		return time.Time{}
	}
	if n := int64(binary.BigEndian.Uint64(v)); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// unixNano returns t in Unix nanoseconds, 0 for the zero time, and false
// when that cannot stand for t: out of the int64 range, or the epoch
// itself (0 is the zero time).
func unixNano(t time.Time) (int64, bool) {
	if t.IsZero() {
		return 0, true
	}
	n := t.UnixNano()
	return n, n != 0 && time.Unix(0, n).Equal(t)
}

// recordContentType is the Content-Type a record keeps of h: none when it
// is longer than the encoding carries.
func recordContentType(h *fasthttp.ResponseHeader) string {
	ct := h.ContentType()
	if len(ct) > maxRecordContentType {
		return ""
	}
	return string(ct)
}
