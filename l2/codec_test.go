package l2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func sampleEntry() Entry {
	return Entry{
		Body:       []byte("<p>orders</p>"),
		FreshUntil: time.UnixMicro(1_800_000_060_000_000),
		StaleUntil: time.UnixMicro(1_800_000_660_000_000),
		StoredAt:   time.UnixMicro(1_800_000_000_123_456),
		Tags:       []Tag{TagOf("all"), TagOf("url:http://app/widgets/orders")},
	}
}

func encode(key string, e Entry) []byte { return appendEntry(nil, key, &e) }

func TestEntryRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		key  string
		e    Entry
	}{
		{"tags and body", "shared|http://app/widgets/orders", sampleEntry()},
		{"empty body, no tags", "k", Entry{FreshUntil: time.UnixMicro(5), StaleUntil: time.UnixMicro(5), StoredAt: time.UnixMicro(1)}},
		{"MaxTags tags", "k64", func() Entry {
			e := sampleEntry()
			e.Tags = make([]Tag, MaxTags)
			for i := range e.Tags {
				e.Tags[i] = TagOf(strings.Repeat("t", i))
			}
			return e
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := encode(tc.key, tc.e)
			if len(v) != encodedSize(tc.key, &tc.e) {
				t.Fatalf("encoded %d bytes, encodedSize says %d", len(v), encodedSize(tc.key, &tc.e))
			}
			got, err := decodeEntry(v, tc.key, DefaultMaxBodySize)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !bytes.Equal(got.Body, tc.e.Body) || !got.FreshUntil.Equal(tc.e.FreshUntil) ||
				!got.StaleUntil.Equal(tc.e.StaleUntil) || !got.StoredAt.Equal(tc.e.StoredAt) ||
				len(got.Tags) != len(tc.e.Tags) {
				t.Fatalf("decode = %+v, want %+v", got, tc.e)
			}
			for i := range got.Tags {
				if got.Tags[i] != tc.e.Tags[i] {
					t.Fatalf("tag %d = %v, want %v", i, got.Tags[i], tc.e.Tags[i])
				}
			}
			// fresh-until sits where setScript patches it
			if us := int64(binary.BigEndian.Uint64(v[freshOffset:])); us != tc.e.FreshUntil.UnixMicro() {
				t.Fatalf("fresh-until at offset %d = %d, want %d", freshOffset, us, tc.e.FreshUntil.UnixMicro())
			}
		})
	}
}

// corruptCases are values that must never decode as an entry of key "k":
// they seed the fuzz target too.
func corruptCases() []struct {
	name string
	v    []byte
} {
	good := encode("k", sampleEntry())
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tooMany := sampleEntry()
	tooMany.Tags = make([]Tag, MaxTags+1)
	big := sampleEntry()
	big.Body = make([]byte, 65)
	return []struct {
		name string
		v    []byte
	}{
		{"empty", nil},
		{"short", good[:10]},
		{"foreign value", []byte("<html>some other application's value</html>")},
		{"unknown version", mut(func(b []byte) []byte { b[2] = 2; return b })},
		{"version zero", mut(func(b []byte) []byte { b[2] = 0; return b })},
		{"other key", encode("j", sampleEntry())},
		{"key prefix only", encode("kk", sampleEntry())},
		{"key length lies", mut(func(b []byte) []byte { b[fixedHeader-1] = 200; return b })},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"trailing value", append(append([]byte(nil), good...), good...)},
		{"truncated body", good[:len(good)-1]},
		{"too many tags", encode("k", tooMany)},
		{"body over the limit", encode("k", big)},
		{"fresh after stale", mut(func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[freshOffset:], ^uint64(0)>>1)
			return b
		})},
		{"negative time", mut(func(b []byte) []byte { b[11] = 0xff; return b })},
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range corruptCases() {
		t.Run(tc.name, func(t *testing.T) {
			e, err := decodeEntry(tc.v, "k", 64)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode(%q) = %+v, %v; want ErrCorrupt", tc.v, e, err)
			}
		})
	}
}

// FuzzDecodeEntry: the decoder never panics, never accepts more than the
// limits allow, and accepts only canonical encodings: whatever it accepts
// encodes back to exactly the same bytes (so no two values mean one entry
// and nothing hides after the body).
func FuzzDecodeEntry(f *testing.F) {
	f.Add(encode("k", sampleEntry()), "k")
	f.Add(encode("", Entry{}), "")
	for _, tc := range corruptCases() {
		f.Add(tc.v, "k")
	}
	f.Fuzz(func(t *testing.T, v []byte, key string) {
		const maxBody = 1 << 10
		e, err := decodeEntry(v, key, maxBody)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if len(e.Body) > maxBody || len(e.Tags) > MaxTags {
			t.Fatalf("accepted %d body bytes and %d tags", len(e.Body), len(e.Tags))
		}
		if e.FreshUntil.After(e.StaleUntil) {
			t.Fatalf("accepted fresh-until %v after stale-until %v", e.FreshUntil, e.StaleUntil)
		}
		if again := encode(key, e); !bytes.Equal(again, v) {
			t.Fatalf("decode then encode changed the value:\n got %x\nwant %x", again, v)
		}
	})
}

func TestKeysAndTags(t *testing.T) {
	ks := newKeyspace("fragcache")
	h := hashKey("shared|http://app/x")
	got := ks.key(kindEntry, h)
	want := "fragcache:v1:f:" + sha256Hex("shared|http://app/x")
	if got != want {
		t.Fatalf("entry key = %q, want %q", got, want)
	}
	if got := ks.key(kindLock, h); got != "fragcache:v1:l:"+sha256Hex("shared|http://app/x") {
		t.Fatalf("lock key = %q", got)
	}
	if ks.purges != "fragcache:v1:purges" || ks.epoch != "fragcache:v1:epoch" || ks.channel != "fragcache:v1:events" {
		t.Fatalf("fixed names = %q %q %q", ks.purges, ks.epoch, ks.channel)
	}
	tag := TagOf("all")
	if tag.String() != sha256Hex("all")[:32] {
		t.Fatalf("TagOf(all) = %s, want the first 16 bytes of SHA-256", tag)
	}
	if back, ok := parseTag(tag.String()); !ok || back != tag {
		t.Fatalf("parseTag(%s) = %v, %v", tag, back, ok)
	}
}

func TestEventMessages(t *testing.T) {
	h := hashKey("k")
	for _, tc := range []struct {
		kind EventKind
		d    time.Duration
	}{{Filled, 0}, {Failed, 1500 * time.Millisecond}, {Bypassed, time.Minute}, {Abandoned, 0}} {
		m := appendKeyEvent(nil, tc.kind, h, tc.d)
		gh, ev, ok := parseKeyEvent(m)
		if !ok || gh != h || ev.kind != tc.kind || ev.d != tc.d {
			t.Errorf("parseKeyEvent(%q) = %x, %+v, %v; want %v for %v", m, gh, ev, ok, tc.kind, tc.d)
		}
	}
	for _, m := range []string{"", "F", "F " + strings.Repeat("z", 64), "Q " + strings.Repeat("0", 64),
		"F " + strings.Repeat("0", 64) + " 5", "X " + strings.Repeat("0", 64), "X " + strings.Repeat("0", 64) + " -1"} {
		if _, _, ok := parseKeyEvent(m); ok {
			t.Errorf("parseKeyEvent(%q) accepted", m)
		}
	}
	p, ok := parsePurgeEvent("P h 1800000000000001 abcd " + TagOf("a").String() + "," + TagOf("b").String())
	if !ok || p.Mode != Hard || p.At.UnixMicro() != 1800000000000001 || p.Epoch != "abcd" ||
		len(p.Tags) != 2 || p.Tags[0] != TagOf("a") || p.Tags[1] != TagOf("b") {
		t.Fatalf("parsePurgeEvent = %+v, %v", p, ok)
	}
	for _, m := range []string{"P", "P s 1 e ", "P x 1 e " + TagOf("a").String(), "P s -1 e " + TagOf("a").String(), "P s 1 e zz"} {
		if _, ok := parsePurgeEvent(m); ok {
			t.Errorf("parsePurgeEvent(%q) accepted", m)
		}
	}
}

func TestWaitersHoldOnlyRunningWaits(t *testing.T) {
	ws := waiters{m: map[keyHash][]*watcher{}}
	a, b := hashKey("a"), hashKey("b")
	w1, w2, w3 := ws.add(a), ws.add(a), ws.add(b)
	ws.notify(a, event{kind: evResync})
	ws.notify(a, event{kind: Filled})
	ws.notify(a, event{kind: Abandoned}) // an answer is not replaced by a hand-over
	for _, w := range []*watcher{w1, w2} {
		select {
		case <-w.sig:
		default:
			t.Fatal("watcher of a not signalled")
		}
		if ev := ws.take(w); ev.kind != Filled {
			t.Fatalf("pending event = %v, want filled", ev.kind)
		}
	}
	select {
	case <-w3.sig:
		t.Fatal("watcher of b signalled by an event of a")
	default:
	}
	ws.remove(w1)
	ws.remove(w2)
	ws.remove(w3)
	if n := ws.len(); n != 0 || len(ws.m) != 0 {
		t.Fatalf("after removing every watcher: %d watchers, %d keys", n, len(ws.m))
	}
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
