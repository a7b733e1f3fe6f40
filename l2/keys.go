package l2

import (
	"crypto/sha256"
	"encoding/hex"
)

// Tag is the hash of one purge tag (such as "url:http://app/widgets/x" or
// a Surrogate-Key): the first 16 bytes of its SHA-256. Entries carry tags
// and purges record them in this form only, so their lengths are fixed and
// Redis never holds a tag's text.
type Tag [16]byte

// TagOf returns the Tag of the tag text s.
func TagOf(s string) Tag {
	sum := sha256.Sum256([]byte(s))
	return Tag(sum[:16])
}

// String returns the tag's 32 lower-case hex digits, its form in purge
// records and events.
func (t Tag) String() string { return hex.EncodeToString(t[:]) }

// parseTag reads the 32 hex digits of a Tag.
func parseTag(s string) (Tag, bool) {
	var t Tag
	if len(s) != 2*len(t) {
		return t, false
	}
	_, err := hex.Decode(t[:], []byte(s))
	return t, err == nil
}

// keyHash is the SHA-256 of a full key: the <hash> of every Redis key that
// belongs to it, and what events name.
type keyHash [32]byte

func hashKey(key string) keyHash { return sha256.Sum256([]byte(key)) }

func parseKeyHash(s string) (keyHash, bool) {
	var h keyHash
	if len(s) != 2*len(h) {
		return h, false
	}
	_, err := hex.Decode(h[:], []byte(s))
	return h, err == nil
}

// The kinds of per-key Redis keys: <prefix>:v1:<kind>:<hash>.
const (
	kindEntry = 'f' // the encoded entry
	kindLock  = 'l' // the fill lock
	kindHint  = 'n' // the failure or bypass hint
)

// keyspace names the Redis keys and the channel of one prefix.
type keyspace struct {
	base    string // "<prefix>:v1:"
	purges  string // "<prefix>:v1:purges", sorted set, no TTL
	epoch   string // "<prefix>:v1:epoch", string, no TTL
	channel string // "<prefix>:v1:events"
}

func newKeyspace(prefix string) keyspace {
	base := prefix + ":v1:"
	return keyspace{base: base, purges: base + "purges", epoch: base + "epoch", channel: base + "events"}
}

// key returns <prefix>:v1:<kind>:<hex hash>.
func (k keyspace) key(kind byte, h keyHash) string {
	b := make([]byte, 0, len(k.base)+2+2*len(h))
	b = append(b, k.base...)
	b = append(b, kind, ':')
	b = hex.AppendEncode(b, h[:])
	return string(b)
}
