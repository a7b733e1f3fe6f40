package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"strings"
	"sync"
)

// Scope prefixes of fragment keys. A key is prefix, NUL, absolute URL,
// and for fragments that vary on Accept-Language, NUL and the language.
const (
	scopeShared = "s"
	scopeAnon   = "a"
	scopeUser   = "u" // followed by the hex HMAC of the credentials
)

// scoper computes user scopes: HMAC-SHA256 under the scope secret of the
// request's Authorization and Cookie headers as sent. It is safe for
// concurrent use; keyed hashers are pooled, as every credentialed page
// computes one scope.
type scoper struct{ pool *sync.Pool }

// scopeHasher is a pooled keyed hasher with its scratch space, which
// would otherwise escape through the hash.Hash interface.
type scopeHasher struct {
	h   hash.Hash
	n   [8]byte
	sum [sha256.Size]byte
}

func newScoper(secret []byte) scoper {
	key := append([]byte(nil), secret...)
	return scoper{pool: &sync.Pool{New: func() any {
		return &scopeHasher{h: hmac.New(sha256.New, key)}
	}}}
}

// user returns the scope prefix of a credentialed request. The
// Authorization value is length-prefixed, so no split of the same bytes
// between the two headers gives another user's scope.
func (s scoper) user(authorization, cookie []byte) string {
	sh := s.pool.Get().(*scopeHasher)
	sh.h.Reset()
	binary.BigEndian.PutUint64(sh.n[:], uint64(len(authorization)))
	sh.h.Write(sh.n[:])
	sh.h.Write(authorization)
	sh.h.Write(cookie)
	sum := sh.h.Sum(sh.sum[:0])
	var out [len(scopeUser) + 32]byte
	copy(out[:], scopeUser)
	hex.Encode(out[len(scopeUser):], sum[:16])
	s.pool.Put(sh)
	return string(out[:])
}

// fragmentKey builds the cache key of url in scope.
func fragmentKey(scope, url, lang string) string {
	var b strings.Builder
	b.Grow(len(scope) + 1 + len(url) + 1 + len(lang))
	b.WriteString(scope)
	b.WriteByte(0)
	b.WriteString(url)
	if lang != "" {
		b.WriteByte(0)
		b.WriteString(lang)
	}
	return b.String()
}

// fragmentKeyURL is the URL part of a fragment's key: the URL fetched,
// and for a fetch from the upstream, after a NUL each, the
// X-Forwarded-Proto it carries and, with PreserveHost, the Host it
// carries (DESIGN rule 18). A key is therefore scope NUL url NUL proto
// [NUL host] [NUL lang] for the upstream's fragments and scope NUL url
// [NUL lang] for other hosts'; whether the host part is there is fixed
// for the process, and no part holds a NUL, so no two inputs share a key.
func fragmentKeyURL(t *target, f *fragFwd) string {
	if !t.upstream {
		return t.url
	}
	if f.host == "" {
		return t.url + "\x00" + f.proto
	}
	return t.url + "\x00" + f.proto + "\x00" + f.host
}

// fragmentKeyOf is fragmentKey(scope, fragmentKeyURL(t, f), lang) built
// with one allocation, for the lookups of every credentialed page.
func fragmentKeyOf(scope string, t *target, f *fragFwd, lang string) string {
	if !t.upstream {
		return fragmentKey(scope, t.url, lang)
	}
	var b strings.Builder
	b.Grow(len(scope) + len(t.url) + len(f.proto) + len(f.host) + len(lang) + 4)
	b.WriteString(scope)
	b.WriteByte(0)
	b.WriteString(t.url)
	b.WriteByte(0)
	b.WriteString(f.proto)
	if f.host != "" {
		b.WriteByte(0)
		b.WriteString(f.host)
	}
	if lang != "" {
		b.WriteByte(0)
		b.WriteString(lang)
	}
	return b.String()
}

// normalizeLang is the Accept-Language value as it enters a key: lower
// case without white space, bounded in length.
func normalizeLang(v []byte) string {
	if len(v) == 0 {
		return "-"
	}
	b := make([]byte, 0, min(len(v), 128))
	for _, c := range v {
		if c == ' ' || c == '\t' {
			continue
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if len(b) == 128 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}
