package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
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
// concurrent use.
type scoper struct{ secret []byte }

func newScoper(secret []byte) scoper { return scoper{secret: append([]byte(nil), secret...)} }

// user returns the scope prefix of a credentialed request. The
// Authorization value is length-prefixed, so no split of the same bytes
// between the two headers gives another user's scope.
func (s scoper) user(authorization, cookie []byte) string {
	h := hmac.New(sha256.New, s.secret)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(authorization)))
	h.Write(n[:])
	h.Write(authorization)
	h.Write(cookie)
	var sum [sha256.Size]byte
	return scopeUser + hex.EncodeToString(h.Sum(sum[:0])[:16])
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
