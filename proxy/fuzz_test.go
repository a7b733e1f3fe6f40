package proxy

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzResolve checks that no page URI or include src makes resolve panic
// or yield a target outside the upstream and the allowed hosts.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"/frag/1?x=1", "frag/2", "../up", "http://app:8080/abs", "//cdn.example/x",
		"https://cdn.example:444/x", "http://[::1]:9000/v6", "http://2130706433:8080/", "http://user@app:8080/",
		"http://app:8080@evil/", "javascript:alert(1)", "http://app:08080/", "/a\r\nHost: evil", "http://APP:8080/%2e%2e/x",
		"http://app:8080/#frag", "?q=1", "http://[::ffff:127.0.0.1]:8080/", "http://app.:8080/"} {
		f.Add("/dir/page?q=1", s)
	}
	r, err := newReach("http://app:8080", []string{"cdn.example", "api.example:8443", "[::1]:9000"})
	if err != nil {
		f.Fatal(err)
	}
	allowed := func(host, port, scheme string) bool {
		switch {
		case host == "app" && port == "8080" && scheme == "http":
		case host == "cdn.example":
		case host == "api.example" && port == "8443":
		case host == "::1" && port == "9000":
		default:
			return false
		}
		return true
	}
	f.Fuzz(func(t *testing.T, pageURI, src string) {
		tg, err := r.resolve(pageURI, src)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(tg.addr)
		if err != nil {
			t.Fatalf("resolve(%q, %q): addr %q: %v", pageURI, src, tg.addr, err)
		}
		if tg.scheme != "http" && tg.scheme != "https" || !allowed(host, port, tg.scheme) {
			t.Fatalf("resolve(%q, %q) = %s %s, outside the allowlist", pageURI, src, tg.scheme, tg.addr)
		}
		if tg.upstream != (host == "app") {
			t.Fatalf("resolve(%q, %q): upstream=%v for host %q", pageURI, src, tg.upstream, host)
		}
		if !strings.HasPrefix(tg.uri, "/") || strings.ContainsAny(tg.uri, "\r\n\x00 #") {
			t.Fatalf("resolve(%q, %q): request URI %q", pageURI, src, tg.uri)
		}
		if tg.url != tg.scheme+"://"+tg.addr+tg.uri {
			t.Fatalf("resolve(%q, %q): url %q does not match its parts", pageURI, src, tg.url)
		}
		if tg.upstream && tg.hostHdr != "app:8080" {
			t.Fatalf("resolve(%q, %q): Host header %q to the upstream", pageURI, src, tg.hostHdr)
		}
		if strings.ContainsAny(tg.hostHdr, "\r\n\x00 /@") {
			t.Fatalf("resolve(%q, %q): Host header %q", pageURI, src, tg.hostHdr)
		}
	})
}

// FuzzSmuggling checks that the raw header check never panics and that a
// header block it passes has none of the framing fasthttp tolerates.
func FuzzSmuggling(f *testing.F) {
	for _, s := range []string{
		"Host: a\r\nContent-Length: 3\r\n\r\n", "Host: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"Host: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", "Host: a\r\nX-A: b\r\n c\r\n\r\n",
		"Host: a\nX-A: b\r\n\r\n", "Host: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Content-Length : 1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if smuggling(raw) != "" {
			return
		}
		cl, te := 0, 0
		for i, line := range bytes.Split(raw, []byte("\n")) {
			if i < bytes.Count(raw, []byte("\n")) && !bytes.HasSuffix(line, []byte("\r")) {
				t.Fatalf("passed %q with a bare LF", raw)
			}
			line = bytes.TrimSuffix(line, []byte("\r"))
			if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
				t.Fatalf("passed %q with obs-fold", raw)
			}
			name, _, ok := bytes.Cut(line, []byte(":"))
			if !ok {
				continue
			}
			switch strings.ToLower(string(name)) {
			case "content-length":
				cl++
			case "transfer-encoding":
				te++
			}
		}
		if cl > 1 || te > 1 || cl > 0 && te > 0 {
			t.Fatalf("passed %q: %d Content-Length, %d Transfer-Encoding", raw, cl, te)
		}
	})
}

// FuzzCacheDirectives checks that no Cache-Control, Surrogate-Control or
// Vary value makes their parsers panic, and that every freshness they
// yield is absent (-1) or within [0, 1 year].
func FuzzCacheDirectives(f *testing.F) {
	for _, s := range [][3]string{
		{"public, max-age=60", `content="ESI/1.0", max-age=30+60`, "Accept-Language"},
		{"private, no-store, s-maxage=-1", "no-store", "*"},
		{`max-age="12", no-cache, s-maxage=99999999999999999999`, `content="esi/1.0 ESI-Inline/1.0"`, "Cookie, Authorization"},
		{",,=,max-age", "max-age=", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	const year = 365 * 24 * 3600 * 1e9
	f.Fuzz(func(t *testing.T, cc, sc, vary string) {
		var h fasthttp.ResponseHeader
		h.Set("Cache-Control", cc)
		h.Set("Surrogate-Control", sc)
		h.Set("Vary", vary)
		d := parseCacheDirectives(&h)
		for _, v := range []int64{int64(d.maxAge), int64(d.sMaxAge), int64(d.surrogateMaxAge)} {
			if v < -1 || v > year {
				t.Fatalf("Cache-Control %q, Surrogate-Control %q: freshness %d out of range", cc, sc, v)
			}
		}
		if hasESITrigger(&h) != d.esi {
			t.Fatalf("Surrogate-Control %q: trigger and directives disagree", sc)
		}
		parseVary(&h)

		// A composed page's Cache-Control keeps every directive, one for
		// one, and none of its freshness outlives the fragments'.
		out := lowerMaxAge(nil, []byte(cc), 30*time.Second)
		var in, got int
		forEachDirective([]byte(cc), func(_, _, _ []byte) { in++ })
		forEachDirective(out, func(name, val, _ []byte) {
			got++
			if (equalFold(name, "max-age") || equalFold(name, "s-maxage")) && parseSeconds(val) > 30*time.Second {
				t.Fatalf("lowerMaxAge(%q) = %q: %s above 30s", cc, out, name)
			}
		})
		if in != got {
			t.Fatalf("lowerMaxAge(%q) = %q: %d directives became %d", cc, out, in, got)
		}
	})
}

// FuzzNormalizeLang: whatever a client sends as Accept-Language, what
// reaches a fragment and its key is at most 64 bytes of language tags and
// commas, at most three of them, and normalising it again changes nothing.
func FuzzNormalizeLang(f *testing.F) {
	for _, s := range []string{"", "en", "fr, en-GB;q=0.8", "de;q=0, *", "en\r\nX: y", "a,b,c,d,e", ";q=1", ",,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := normalizeLang([]byte(in))
		if len(out) > 64 || strings.Count(out, ",") > 2 {
			t.Fatalf("normalizeLang(%q) = %q: too long", in, out)
		}
		for _, c := range []byte(out) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == ',' || c == '*') {
				t.Fatalf("normalizeLang(%q) = %q holds %q", in, out, c)
			}
		}
		if again := normalizeLang([]byte(out)); again != out {
			t.Fatalf("normalizeLang(%q) = %q, but again %q", in, out, again)
		}
	})
}

// FuzzScopeCookies: with --scope-cookie, the Cookie header a fragment
// fetch carries hashes to the same scope as the request's, and a request
// with no scope cookie is anonymous.
func FuzzScopeCookies(f *testing.F) {
	for _, s := range []string{"sid=a", "_ga=1; sid=a", "sid=a; sid=b", "x", "=; ;sid=", "sid=a;;lang=en"} {
		f.Add("", s)
	}
	s := newScoper([]byte("k"), []string{"sid", "lang"})
	f.Fuzz(func(t *testing.T, auth, cookie string) {
		fc := s.fetchCookie([]byte(cookie))
		if s.credentials([]byte(auth), []byte(cookie)) != s.credentials([]byte(auth), []byte(fc)) {
			t.Fatalf("cookie %q and its fetch form %q disagree on credentials", cookie, fc)
		}
		if !s.credentials([]byte(auth), []byte(cookie)) {
			return
		}
		if a, b := s.user([]byte(auth), []byte(cookie)), s.user([]byte(auth), []byte(fc)); a != b {
			t.Fatalf("cookie %q scope %s, its fetch form %q scope %s", cookie, a, fc, b)
		}
	})
}

// FuzzResolveFast: a src the fast path takes resolves to exactly the
// target the URL parser gives it, whatever the page, and the fast path
// never takes one the parser refuses.
func FuzzResolveFast(f *testing.F) {
	for _, s := range []string{"/frag/1?v=f2", "/widgets/orders", "/a/./b", "/a/../b", "/a?", "/a//b", "//cdn.example/x",
		"/.well-known/x", "/a.b/c.d", "/a?b#c", "/a#b", "/a?%zz&x=%41", "/~u/x-y_z.html?q=a+b&c=%20", "/A/B?Q=1;2",
		"/é", "/a%2Fb", "/a?b\\c", "/a?b\x7f", "/" + strings.Repeat("a", 8192)} {
		f.Add(s)
	}
	r, err := newReach("http://App.Example:8080", []string{"cdn.example", "App.Example:9090"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, src string) {
		fast, ok := r.resolveFast(src)
		if !ok {
			return
		}
		for _, page := range []string{"/", "/p/q?x=1", "/deep/a/b/c/"} {
			slow, err := r.resolveURL(page, src)
			if err != nil {
				t.Fatalf("resolveFast(%q) took a src the parser refuses: %v", src, err)
			}
			if fast != slow {
				t.Fatalf("resolveFast(%q) = %+v, the parser on page %q gives %+v", src, fast, page, slow)
			}
		}
	})
}
