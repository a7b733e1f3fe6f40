package proxy

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// scoper computes user scopes: HMAC-SHA256 under the scope secret of the
// request's credentials (DESIGN.md, precise rule 17). It is safe for
// concurrent use; keyed hashers are pooled, as every credentialed page
// computes one scope.
type scoper struct {
	pool *sync.Pool
	// names are the --scope-cookie names, sorted; empty: every cookie
	// counts.
	names []string
}

// scopeHasher is a pooled keyed hasher with its scratch space, which
// would otherwise escape through the hash.Hash interface.
type scopeHasher struct {
	h     hash.Hash
	n     [8]byte
	sum   [sha256.Size]byte
	pairs []cookiePair
}

// cookiePair is one name=value of a Cookie header, as slices of it.
type cookiePair struct{ name, value []byte }

func newScoper(secret []byte, scopeCookies []string) scoper {
	key := append([]byte(nil), secret...)
	names := slices.Clone(scopeCookies)
	slices.Sort(names)
	names = slices.Compact(names)
	return scoper{names: names, pool: &sync.Pool{New: func() any {
		return &scopeHasher{h: hmac.New(sha256.New, key)}
	}}}
}

// credentials reports whether a request with these headers is
// credentialed: it has an Authorization header or, with --scope-cookie,
// one of the named cookies, else any cookie.
func (s scoper) credentials(authorization, cookie []byte) bool {
	if len(authorization) > 0 {
		return true
	}
	if len(s.names) == 0 {
		return len(bytes.TrimSpace(cookie)) > 0
	}
	found := false
	forEachCookie(cookie, func(name, _ []byte) bool {
		found = s.counts(name)
		return !found
	})
	return found
}

// counts reports whether a cookie called name identifies a user.
func (s scoper) counts(name []byte) bool {
	if len(s.names) == 0 {
		return true
	}
	_, ok := slices.BinarySearchFunc(s.names, name, func(n string, b []byte) int {
		return strings.Compare(n, string(b))
	})
	return ok
}

// user returns the scope prefix of a credentialed request: the HMAC over
// len(Authorization) ‖ Authorization, then len(name) ‖ name ‖ len(value)
// ‖ value of each credential cookie, in the order sent, or sorted by name
// (stable) with --scope-cookie. Every part is length-prefixed, so no
// split of the same bytes between parts gives another user's scope.
func (s scoper) user(authorization, cookie []byte) string {
	sh := s.pool.Get().(*scopeHasher)
	sh.h.Reset()
	sh.writeLen(len(authorization))
	sh.h.Write(authorization)
	sh.pairs = s.appendPairs(sh.pairs[:0], cookie)
	for _, p := range sh.pairs {
		sh.writeLen(len(p.name))
		sh.h.Write(p.name)
		sh.writeLen(len(p.value))
		sh.h.Write(p.value)
	}
	clear(sh.pairs)
	sum := sh.h.Sum(sh.sum[:0])
	var out [len(scopeUser) + 32]byte
	copy(out[:], scopeUser)
	hex.Encode(out[len(scopeUser):], sum[:16])
	s.pool.Put(sh)
	return string(out[:])
}

func (sh *scopeHasher) writeLen(n int) {
	binary.BigEndian.PutUint64(sh.n[:], uint64(n))
	sh.h.Write(sh.n[:])
}

// appendPairs appends the credential cookies of a Cookie value in the
// order rule 17 hashes them.
func (s scoper) appendPairs(dst []cookiePair, cookie []byte) []cookiePair {
	forEachCookie(cookie, func(name, value []byte) bool {
		if s.counts(name) {
			dst = append(dst, cookiePair{name, value})
		}
		return true
	})
	if len(s.names) > 0 {
		slices.SortStableFunc(dst, func(a, b cookiePair) int { return bytes.Compare(a.name, b.name) })
	}
	return dst
}

// fetchCookie is the Cookie header a fragment fetch to the upstream
// carries: the request's as sent, or with --scope-cookie exactly the
// hashed pairs, in hash order.
func (s scoper) fetchCookie(cookie []byte) string {
	if len(s.names) == 0 {
		return string(cookie)
	}
	var b []byte
	for _, p := range s.appendPairs(nil, cookie) {
		if len(b) > 0 {
			b = append(b, "; "...)
		}
		b = append(append(append(b, p.name...), '='), p.value...)
	}
	return string(b)
}

// forEachCookie calls fn with each name=value of a Cookie value (pairs
// separated by ';', white space around them trimmed; a pair without '='
// has an empty name, as browsers send it) until fn returns false.
func forEachCookie(cookie []byte, fn func(name, value []byte) bool) {
	for len(cookie) > 0 {
		var pair []byte
		if i := bytes.IndexByte(cookie, ';'); i >= 0 {
			pair, cookie = cookie[:i], cookie[i+1:]
		} else {
			pair, cookie = cookie, nil
		}
		pair = bytes.TrimSpace(pair)
		if len(pair) == 0 {
			continue
		}
		var name, value []byte
		if i := bytes.IndexByte(pair, '='); i >= 0 {
			name, value = bytes.TrimSpace(pair[:i]), bytes.TrimSpace(pair[i+1:])
		} else {
			value = pair
		}
		if !fn(name, value) {
			return
		}
	}
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

// normalizeLang is an Accept-Language value as fragcache forwards it to
// fragments and keys them on (DESIGN.md, precise rule 16): ranges split on
// commas, trimmed and lower-cased; only `*` and `[a-z]{1,8}(-[a-z0-9]{1,8})*`
// kept; q=0 dropped; sorted by q (stable), q values removed; at most 3,
// joined by `,`, at most 64 bytes. A value that fails is empty.
func normalizeLang(v []byte) string { return normalizeLangLines([][]byte{v}) }

// normalizeLangLines is normalizeLang of a request's Accept-Language
// lines, read as one comma-separated list (RFC 9110 section 5.3). Every
// range counts, however long the list: the best three are kept as the
// ranges go by, so the work is one pass and the memory fixed.
func normalizeLangLines(lines [][]byte) string {
	type langRange struct {
		tag []byte
		q   float64
	}
	var best [3]langRange // by q, descending; equal q in the order sent
	n := 0
	for _, v := range lines {
		for part := range bytes.SplitSeq(v, []byte(",")) {
			tag, params, _ := bytes.Cut(part, []byte(";"))
			tag = bytes.ToLower(bytes.TrimSpace(tag))
			if !validLangTag(tag) {
				continue
			}
			q := 1.0
			for p := range bytes.SplitSeq(params, []byte(";")) {
				name, val, ok := bytes.Cut(bytes.TrimSpace(p), []byte("="))
				if !ok || !bytes.EqualFold(bytes.TrimSpace(name), []byte("q")) {
					continue
				}
				f, err := strconv.ParseFloat(string(bytes.TrimSpace(val)), 64)
				if err != nil || !(f >= 0 && f <= 1) {
					f = 0 // a q we cannot read (NaN too) is not a preference
				}
				q = f
			}
			if q == 0 {
				continue
			}
			// After every kept range of the same or a higher q.
			i := n
			for i > 0 && best[i-1].q < q {
				i--
			}
			if i == len(best) {
				continue
			}
			n = min(n+1, len(best))
			copy(best[i+1:n], best[i:n-1])
			best[i] = langRange{tag, q}
		}
	}
	var out []byte
	for _, r := range best[:n] {
		sep := min(len(out), 1)
		if len(out)+sep+len(r.tag) > 64 {
			break
		}
		if sep > 0 {
			out = append(out, ',')
		}
		out = append(out, r.tag...)
	}
	return string(out)
}

// validLangTag reports whether t is `*` or `[a-z]{1,8}(-[a-z0-9]{1,8})*`.
func validLangTag(t []byte) bool {
	if len(t) == 1 && t[0] == '*' {
		return true
	}
	if len(t) == 0 {
		return false // an empty range ("fr, , de") is no range
	}
	first := true
	for len(t) > 0 {
		seg := t
		if i := bytes.IndexByte(t, '-'); i >= 0 {
			seg, t = t[:i], t[i+1:]
			if len(t) == 0 {
				return false // a trailing '-'
			}
		} else {
			t = nil
		}
		if len(seg) < 1 || len(seg) > 8 {
			return false
		}
		for _, c := range seg {
			if 'a' <= c && c <= 'z' || !first && '0' <= c && c <= '9' {
				continue
			}
			return false
		}
		first = false
	}
	return true
}
