package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this file send CR, LF, CRLF and NUL, raw and percent-encoded,
// through every value that ends up in a header fragcache writes: the page
// request to the upstream, fragment requests, and the response head the
// client reads. They look at bytes, never at what a parser made of them: the
// upstream and fragment host is a raw listener that records each request
// head as it arrived, and the client is a raw connection that reads the
// answer until the server closes it.
//
// A hostile value must end in one of three ways, decided per case:
// refused (400 to the client, or 502 when the upstream sent it), dropped
// (the include fails, the value is not forwarded), or carried escaped (the
// bytes stay percent-encoded, so no line break exists on the wire). In no
// case may a line starting with the marker header X-Injected appear, nor a
// CR, LF or NUL outside a CRLF line end.
//
// Each case names the guard it depends on, in its guard field, which the
// failure message repeats. Every guard was checked by disabling it and
// seeing its cases fail; fasthttp's own checks were disabled in a patched
// copy of the module. Where two guards stand in line, the case fails only
// when both are gone, and the comment says so.

// injected is the header every hostile value tries to smuggle in.
const injected = "X-Injected: pwned"

// headRecorder is a raw HTTP/1.1 server on loopback standing in for the
// upstream and its fragment paths. It records the exact bytes of each
// request head, answers with the bytes respond returns for it, and closes
// the connection.
type headRecorder struct {
	ln   net.Listener
	addr string
	wg   sync.WaitGroup

	// mu protects heads and open.
	mu    sync.Mutex
	heads []string
	open  map[net.Conn]struct{}
}

func newHeadRecorder(t *testing.T, respond func(head string) string) *headRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &headRecorder{ln: ln, addr: ln.Addr().String(), open: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.open[c] = struct{}{}
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer func() {
					r.mu.Lock()
					delete(r.open, c)
					r.mu.Unlock()
					c.Close()
				}()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				head, err := readRawHead(bufio.NewReader(c))
				if err != nil {
					return
				}
				r.mu.Lock()
				r.heads = append(r.heads, head)
				r.mu.Unlock()
				io.WriteString(c, respond(head))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for c := range r.open {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// count is the number of request heads received so far.
func (r *headRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.heads)
}

// since returns the heads received after the first n.
func (r *headRecorder) since(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.heads[n:]...)
}

// readRawHead reads bytes up to and including the blank line that ends a
// head (CRLFCRLF, or LFLF so that a broken head is recorded too).
func readRawHead(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		c, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		b = append(b, c)
		if bytes.HasSuffix(b, []byte("\r\n\r\n")) || bytes.HasSuffix(b, []byte("\n\n")) {
			return string(b), nil
		}
		if len(b) > 64<<10 {
			return "", errors.New("request head too large")
		}
	}
}

// requestTarget is the second word of a head's first line.
func requestTarget(head string) string {
	line, _, _ := strings.Cut(head, "\r\n")
	_, rest, _ := strings.Cut(line, " ")
	target, _, _ := strings.Cut(rest, " ")
	return target
}

// rawResponse builds a response with a correct Content-Length that closes
// the connection; head holds the status line and header lines, each with
// its own line end, exactly as they go on the wire.
func rawResponse(head, body string) string {
	return head + fmt.Sprintf("Content-Length: %d\r\nConnection: close\r\n\r\n", len(body)) + body
}

// rawRoundTrip sends raw on a new loopback connection and reads until the
// server closes it: the requests ask for that with Connection: close, and
// fragcache closes after refusing one. It returns the response head, up
// to and including its CRLFCRLF, and the rest.
func rawRoundTrip(t *testing.T, addr, raw string) (head, rest string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v (read %q)", raw, err, b)
	}
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("the answer to %q has no CRLFCRLF: %q", raw, b)
	}
	return string(b[:i+4]), string(b[i+4:])
}

// headProblem returns what is wrong with a head on the wire, or "": a NUL,
// a CR or LF that is not part of a CRLF, or a line, however a lenient
// parser would split it, that starts the injected header.
func headProblem(head string) string {
	for i := 0; i < len(head); i++ {
		switch head[i] {
		case 0:
			return fmt.Sprintf("NUL at byte %d", i)
		case '\r':
			if i+1 == len(head) || head[i+1] != '\n' {
				return fmt.Sprintf("bare CR at byte %d", i)
			}
		case '\n':
			if i == 0 || head[i-1] != '\r' {
				return fmt.Sprintf("bare LF at byte %d", i)
			}
		}
	}
	for _, line := range strings.FieldsFunc(head, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.HasPrefix(strings.ToLower(strings.TrimLeft(line, " \t")), "x-injected") {
			return fmt.Sprintf("injected header line %q", line)
		}
	}
	return ""
}

// hostile is one way of writing CR, LF or NUL followed by the injected
// header: raw holds the bytes, enc their percent-encoding. encOnly marks a
// second spelling of the same bytes, tried only in its encoded form.
type hostile struct {
	name, raw, enc string
	encOnly        bool
}

var hostiles = []hostile{
	{name: "CRLF", raw: "\r\n" + injected, enc: "%0d%0a" + strings.ReplaceAll(injected, " ", "%20")},
	{name: "CRLF upper", raw: "\r\n" + injected, enc: "%0D%0A" + strings.ReplaceAll(injected, " ", "%20"), encOnly: true},
	{name: "CR", raw: "\r" + injected, enc: "%0d" + strings.ReplaceAll(injected, " ", "%20")},
	{name: "LF", raw: "\n" + injected, enc: "%0a" + strings.ReplaceAll(injected, " ", "%20")},
	{name: "NUL", raw: "\x00" + injected, enc: "%00" + strings.ReplaceAll(injected, " ", "%20")},
}

// refused reports whether a response head is a 400 that closes the
// connection.
func refused(head string) bool {
	return strings.HasPrefix(head, "HTTP/1.1 400 ") && strings.Contains(head, "\r\nConnection: close\r\n")
}

// TestHeaderInjectionPageRequest sends hostile request-targets and header
// values to fragcache and checks the bytes of the page request the
// upstream receives and of the answer the client reads.
//
// Decisions. A raw CR, LF or NUL anywhere in the request head is refused
// with 400 and Connection: close before the upstream is contacted: RFC
// 9110 section 5.5 lets a recipient reject or replace them, and a proxy
// that cannot tell a value from an attack refuses. Percent-encoded forms are
// data: the request-target is forwarded byte for byte (fragcache never
// decodes it), and header values are forwarded as sent, except the ones
// fragcache writes itself: Host is the upstream's, X-Forwarded-For the
// client's address, X-Forwarded-Proto the connection's scheme,
// X-Forwarded-Host the client's Host, and Accept-Encoding keeps only
// codings fragcache can decode, so a hostile token is dropped.
func TestHeaderInjectionPageRequest(t *testing.T) {
	rec := newHeadRecorder(t, func(string) string {
		return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n", "page")
	})
	fc := startFragcache(t, "--upstream", "http://"+rec.addr)
	addr := strings.TrimPrefix(fc.front, "http://")

	type tcase struct {
		name string
		raw  string // the request as sent
		// Refused: 400 with Connection: close, the upstream not contacted.
		// Otherwise the upstream's head must hold every line of wantLines.
		refuse    bool
		wantLines []string
		guard     string // what keeps the case safe; for the failure message
	}
	var tests []tcase
	req := func(target, headers string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: shop.test\r\n" + headers + "Connection: close\r\n\r\n"
	}
	for _, h := range hostiles {
		// Encoded: the request-target goes out exactly as it came in;
		// nothing decodes it on the way.
		tests = append(tests, tcase{
			name:      "encoded " + h.name + " in the path and query",
			raw:       req("/p/"+h.enc+"?q="+h.enc, ""),
			wantLines: []string{"GET /p/" + h.enc + "?q=" + h.enc + " HTTP/1.1"},
			guard:     "buildUpstreamRequest forwards RequestURI as sent, never decoded",
		})
		if h.encOnly {
			continue
		}
		// Raw CR and NUL: fasthttp refuses control bytes in a
		// request-target, and proxy.serve's hasCRLF check stands behind it
		// (the case fails only when both are gone). Raw LF: it ends the
		// request line, which then has no protocol.
		tests = append(tests,
			tcase{
				name:   "raw " + h.name + " in the path",
				raw:    req("/p"+strings.ReplaceAll(h.raw, " ", ""), ""),
				refuse: true,
				guard:  "fasthttp request-target validation, then hasCRLF in proxy.serve",
			},
			tcase{
				name:   "raw " + h.name + " in the query",
				raw:    req("/p?q=a"+strings.ReplaceAll(h.raw, " ", ""), ""),
				refuse: true,
				guard:  "fasthttp request-target validation, then hasCRLF in proxy.serve",
			},
		)
		if strings.HasPrefix(h.raw, "\r\n") {
			// A raw CRLF in a header value only ends the line: the client
			// sent one more header of its own, and nothing is injected.
			continue
		}
		// CR and NUL: fasthttp's header parser refuses value bytes outside
		// field-content, and serverError answers 400. An LF ends the line
		// there, so fasthttp would read two headers; fragcache's
		// smuggling() refuses the bare LF.
		for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Accept-Encoding",
			"Cookie", "Authorization", "Accept-Language", "Referer", "X-Custom"} {
			tests = append(tests, tcase{
				name:   "raw " + h.name + " in " + name,
				raw:    req("/h", name+": v"+h.raw+"\r\n"),
				refuse: true,
				guard:  "fasthttp header-value validation (CR, NUL); smuggling() bare LF (LF)",
			})
		}
		tests = append(tests, tcase{
			name:   "raw " + h.name + " in Host",
			raw:    "GET /h HTTP/1.1\r\nHost: shop.test" + h.raw + "\r\nConnection: close\r\n\r\n",
			refuse: true,
			guard:  "fasthttp header-value and Host validation (CR, NUL); smuggling() bare LF (LF)",
		})
	}
	tests = append(tests,
		tcase{
			// fasthttp would join the lines; fragcache refuses instead.
			name:   "obs-fold continuation line",
			raw:    req("/h", "X-Custom: v\r\n "+injected+"\r\n"),
			refuse: true,
			guard:  "smuggling() obsolete line folding, then its white space in a header name check",
		},
		tcase{
			name:   "CRLF inside a header name",
			raw:    req("/h", "X-Custom\r\n"+injected+"\r\n"),
			refuse: true,
			guard:  "fasthttp header-line parsing (a line without a colon), then smuggling()",
		},
		tcase{
			name:   "NUL inside a header name",
			raw:    req("/h", "X-Cus\x00tom: v\r\n"),
			refuse: true,
			guard:  "fasthttp header-name validation (smuggling() checks names for white space only)",
		},
	)
	enc := hostiles[0].enc
	tests = append(tests,
		tcase{
			name: "encoded CRLF in every forwarded header",
			raw: req("/h", "X-Forwarded-For: 192.0.2.1"+enc+"\r\nX-Forwarded-Host: a"+enc+"\r\n"+
				"Cookie: s="+enc+"\r\nAuthorization: Bearer "+enc+"\r\nAccept-Language: en"+enc+"\r\n"+
				"Referer: http://a/"+enc+"\r\nX-Custom: "+enc+"\r\n"),
			wantLines: []string{
				// Replaced: the client is no trusted proxy (a trusted
				// proxy's list is appended to, as sent: see
				// proxy.TestTrustedProxyHeadersKept).
				"X-Forwarded-For: 127.0.0.1",
				// The Host the client sent; the client's own
				// X-Forwarded-Host is overwritten.
				"X-Forwarded-Host: shop.test",
				"Cookie: s=" + enc,
				"Authorization: Bearer " + enc,
				"Accept-Language: en" + enc,
				"Referer: http://a/" + enc,
				"X-Custom: " + enc,
				"Host: " + rec.addr,
			},
			guard: "nothing decodes a header value on its way through",
		},
		tcase{
			// Whatever the Host, the upstream gets its own; X-Forwarded-Host
			// carries the client's, so a Host that is no host name is
			// refused before it gets there.
			name:   "encoded CRLF in Host",
			raw:    "GET /h HTTP/1.1\r\nHost: shop.test" + enc + "\r\nConnection: close\r\n\r\n",
			refuse: true,
			guard:  "fasthttp Host validation",
		},
		tcase{
			name:      "encoded CRLF in X-Forwarded-Proto",
			raw:       req("/h", "X-Forwarded-Proto: https"+enc+"\r\n"),
			wantLines: []string{"X-Forwarded-Proto: http"},
			guard:     "buildUpstreamRequest overwrites X-Forwarded-Proto",
		},
		tcase{
			name:      "encoded CRLF in Accept-Encoding",
			raw:       req("/h", "Accept-Encoding: gzip"+enc+", br\r\n"),
			wantLines: []string{"Accept-Encoding: br"},
			guard:     "decodableEncodings keeps known codings only",
		},
	)

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := rec.count()
			head, _ := rawRoundTrip(t, addr, tc.raw)
			if p := headProblem(head); p != "" {
				t.Errorf("response head to %q: %s (guard: %s)\n%q", tc.raw, p, tc.guard, head)
			}
			got := rec.since(before)
			if tc.refuse {
				if !refused(head) {
					t.Errorf("request %q: got %q, want 400 with Connection: close (guard: %s)", tc.raw, head, tc.guard)
				}
				if len(got) != 0 {
					t.Errorf("request %q reached the upstream as %q, want it refused (guard: %s)", tc.raw, got, tc.guard)
				}
				return
			}
			if !strings.HasPrefix(head, "HTTP/1.1 200 ") {
				t.Errorf("request %q: got %q, want 200", tc.raw, head)
			}
			if len(got) != 1 {
				t.Fatalf("request %q: the upstream got %d requests, want 1", tc.raw, len(got))
			}
			if p := headProblem(got[0]); p != "" {
				t.Errorf("upstream request head for %q: %s (guard: %s)\n%q", tc.raw, p, tc.guard, got[0])
			}
			lines := strings.Split(got[0], "\r\n")
			for _, want := range tc.wantLines {
				if !containsLine(lines, want) {
					t.Errorf("upstream request head for %q lacks the line %q (guard: %s)\n%q", tc.raw, want, tc.guard, got[0])
				}
			}
		})
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// TestHeaderInjectionFragmentRequest checks the bytes of the fragment
// requests fragcache builds from include srcs, with ESI variables filled
// from hostile request values, and the credentials it forwards with them.
//
// Decisions (DESIGN.md, "Variables are data, never structure"). A variable
// whose value holds CR, LF or NUL after decoding fails its include: the
// fragment is not fetched and its placeholder renders. Any other value is
// percent-encoded where it lands, so a value that arrived encoded is
// encoded once more (%0d becomes %250d) and a line break never reaches the
// wire. $(HTTP_HOST) never carries the client's Host. A literal src or alt
// holding a raw CR, LF or NUL (the upstream's HTML may) is not fetched; an
// encoded one is sent as written. The Host of a fragment request to the
// upstream is the upstream's. Cookie, Authorization and Accept-Language go
// to the upstream's fragments as the client sent them; they passed the same
// parser as the page request, so they hold no CR, LF or NUL.
func TestHeaderInjectionFragmentRequest(t *testing.T) {
	enc := hostiles[0].enc // %0d%0aX-Injected:%20pwned

	type tcase struct {
		name    string
		src     string // the include's src on page /v/<n>
		alt     string // and its alt, if any
		pageURI string // the page's request-target; "" = /v/<n>
		query   string // appended to the page's URI
		headers string // request header lines
		// want is the fragment's request-target; "" = not fetched, the
		// placeholder renders.
		want      string
		wantLines []string // more lines of the fragment's request head
		guard     string
	}
	var tests []tcase
	for i, h := range hostiles {
		tests = append(tests,
			tcase{
				name:  "QUERY_STRING{x} in the path, " + h.name,
				src:   fmt.Sprintf("/f/q%d/$(QUERY_STRING{x})", i),
				query: "x=" + h.enc,
				guard: "fragment.expandURL refuses a value with CR, LF or NUL",
			},
			tcase{
				name:  "QUERY_STRING{x} in the query, " + h.name,
				src:   fmt.Sprintf("/f/qq%d?v=$(QUERY_STRING{x})", i),
				query: "x=" + h.enc,
				guard: "fragment.expandURL refuses a value with CR, LF or NUL",
			},
			tcase{
				name: "listed cookie in the path, " + h.name,
				src:  fmt.Sprintf("/f/c%d/$(HTTP_COOKIE{c})", i),
				// Cookie values are not percent-decoded: the encoded form
				// is data and is escaped once more.
				headers: "Cookie: c=" + h.enc + "\r\n",
				want:    fmt.Sprintf("/f/c%d/", i) + url.PathEscape(h.enc),
				guard:   "fragment path escaping of variable values",
			},
			tcase{
				name:  "whole QUERY_STRING in the query, " + h.name,
				src:   fmt.Sprintf("/f/qs%d?$(QUERY_STRING)", i),
				query: "x=" + h.enc,
				// Rebuilt from the decoded pairs and escaped again.
				want:  fmt.Sprintf("/f/qs%d?x=", i) + url.QueryEscape(h.raw),
				guard: "fragment.rebuildQuery re-escapes every pair",
			},
		)
	}
	tests = append(tests,
		tcase{
			// A Host holding CR, LF, NUL or an escape is refused with the
			// page request (TestHeaderInjectionPageRequest); any other
			// Host is not a --public-host name and is not used either.
			name:    "HTTP_HOST with a Host that is not public",
			src:     "/f/host/$(HTTP_HOST)",
			headers: "Host: evil.test\r\n",
			want:    "/f/host/public.test",
			guard:   "reqVars.Host answers only --public-host names",
		},
		tcase{
			name:    "HTTP_REFERER with an encoded CRLF",
			src:     "/f/ref/$(HTTP_REFERER)",
			headers: "Referer: http://a/" + enc + "\r\n",
			want:    "/f/ref/" + url.PathEscape("http://a/"+enc),
			guard:   "fragment path escaping of variable values",
		},
		tcase{
			name:    "HTTP_ACCEPT_LANGUAGE with an encoded CRLF",
			src:     "/f/lang?l=$(HTTP_ACCEPT_LANGUAGE)",
			headers: "Accept-Language: en" + enc + "\r\n",
			want:    "/f/lang?l=" + url.QueryEscape("en"+enc),
			guard:   "fragment query escaping of variable values",
		},
		// The page's HTML is the upstream's and may hold raw bytes: an
		// attribute value keeps them.
		tcase{
			name:  "literal src with a raw CRLF",
			src:   "/f/rawcrlf\r\nX-Injected:pwned",
			guard: "reach.resolve refuses CR, LF and NUL in a src, then net/url's refusal of control bytes",
		},
		tcase{
			name:  "literal src with a raw CR",
			src:   "/f/rawcr\rX-Injected:pwned",
			guard: "reach.resolve refuses CR, LF and NUL in a src, then net/url's refusal of control bytes",
		},
		tcase{
			name:  "literal src with a raw LF",
			src:   "/f/rawlf\nX-Injected:pwned",
			guard: "reach.resolve refuses CR, LF and NUL in a src, then net/url's refusal of control bytes",
		},
		tcase{
			name:  "literal src with a raw NUL",
			src:   "/f/rawnul\x00X-Injected:pwned",
			guard: "reach.resolve refuses CR, LF and NUL in a src, then net/url's refusal of control bytes",
		},
		tcase{
			name:  "literal alt with a raw CRLF",
			src:   "/f/missing",
			alt:   "/f/altcrlf\r\nX-Injected:pwned",
			guard: "reach.resolve refuses CR, LF and NUL in a src, then net/url's refusal of control bytes",
		},
		tcase{
			name:  "literal src with an encoded CRLF",
			src:   "/f/enc" + enc + "?q=" + enc,
			want:  "/f/enc" + enc + "?q=" + enc,
			guard: "reach.resolve builds the request from EscapedPath and RawQuery",
		},
		tcase{
			name: "literal src with an encoded CRLF in the host",
			src:  "http://127.0.0.1" + enc + "/f/x",
			// The only guard fragcache cannot switch off: net/url refuses an
			// escape below %08 in a host name. The host allowlist would not
			// match such a name either.
			guard: "net/url host parsing in reach.resolve, then the host allowlist",
		},
		tcase{
			name:    "relative src on a page whose path holds an encoded CRLF",
			src:     "rel",
			pageURI: "/v/dir" + enc + "/page",
			want:    "/v/dir" + enc + "/rel",
			guard:   "reach.resolve builds the request from EscapedPath",
		},
		tcase{
			name:    "forwarded credentials with an encoded CRLF",
			src:     "/f/creds",
			headers: "Cookie: s=" + enc + "\r\nAuthorization: Bearer " + enc + "\r\nAccept-Language: en" + enc + "\r\n",
			want:    "/f/creds",
			wantLines: []string{
				"Cookie: s=" + enc,
				"Authorization: Bearer " + enc,
			},
			guard: "nothing decodes a forwarded value",
		},
		tcase{
			// Accept-Language reaches a fragment only normalised (DESIGN
			// rule 16): a range that is not a language tag is dropped.
			name:      "a language range with an encoded CRLF",
			src:       "/f/lang",
			headers:   "Accept-Language: en" + enc + ", de;q=0.5\r\n",
			want:      "/f/lang",
			wantLines: []string{"Accept-Language: de"},
			guard:     "normalizeLang keeps language tags only",
		},
	)
	pages := map[string]string{}
	for i := range tests {
		tc := &tests[i]
		if tc.pageURI == "" {
			tc.pageURI = fmt.Sprintf("/v/%d", i)
		}
		alt := ""
		if tc.alt != "" {
			alt = ` alt="` + tc.alt + `"`
		}
		pages[tc.pageURI] = `[<esi:include src="` + tc.src + `"` + alt + `>placeholder</esi:include>]`
	}
	// The recorder reads pages only once the table is complete.
	rec := newHeadRecorder(t, func(head string) string {
		target := requestTarget(head)
		if target == "/f/missing" {
			return rawResponse("HTTP/1.1 404 Not Found\r\n", "")
		}
		if strings.HasPrefix(target, "/f/") {
			return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=60\r\n", "F")
		}
		path, _, _ := strings.Cut(target, "?")
		body, ok := pages[path]
		if !ok { // a relative src's fragment
			return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=60\r\n", "F")
		}
		return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\n", body)
	})

	fc := startFragcache(t, "--upstream", "http://"+rec.addr, "--wait", "5s", "--max-wait", "5s",
		"--esi-cookie", "c", "--public-host", "public.test")
	addr := strings.TrimPrefix(fc.front, "http://")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.pageURI
			if tc.query != "" {
				target += "?" + tc.query
			}
			host := "Host: shop.test\r\n"
			if strings.HasPrefix(tc.headers, "Host:") {
				host = ""
			}
			raw := "GET " + target + " HTTP/1.1\r\n" + host + tc.headers + "Connection: close\r\n\r\n"
			before := rec.count()
			head, body := rawRoundTrip(t, addr, raw)
			if p := headProblem(head); p != "" {
				t.Errorf("response head: %s\n%q", p, head)
			}
			got := rec.since(before)
			var frags []string
			for _, h := range got {
				if p := headProblem(h); p != "" {
					t.Errorf("request head %q: %s (guard: %s)", h, p, tc.guard)
				}
				// /f/missing is the src that fails so that its alt is tried.
				if rt := requestTarget(h); rt != target && rt != "/f/missing" {
					frags = append(frags, h)
				}
			}
			if tc.want == "" {
				if body != "[placeholder]" || len(frags) != 0 {
					t.Errorf("src %q on %q: body %q, fragment requests %q; want the placeholder and no fetch (guard: %s)",
						tc.src, raw, body, frags, tc.guard)
				}
				return
			}
			if body != "[F]" || len(frags) != 1 {
				t.Fatalf("src %q on %q: body %q, fragment requests %q; want one fetch of %q (guard: %s)",
					tc.src, raw, body, frags, tc.want, tc.guard)
			}
			lines := strings.Split(frags[0], "\r\n")
			for _, want := range append([]string{"GET " + tc.want + " HTTP/1.1", "Host: " + rec.addr}, tc.wantLines...) {
				if !containsLine(lines, want) {
					t.Errorf("src %q on %q: fragment request %q lacks the line %q (guard: %s)", tc.src, raw, frags[0], want, tc.guard)
				}
			}
		})
	}
}

// TestHeaderInjectionResponseHead has the upstream answer with hostile
// response heads, for a page passed through and for a composed one, and
// checks the bytes of the head the client reads.
//
// Decisions. A header line with a CR or NUL in its name or value is an
// invalid response: fragcache answers 502 rather than forward or repair
// it. A reason phrase is not a header and means nothing (RFC 9112 section
// 4): one holding a control byte is dropped and the standard reason for the
// status is sent instead. An obs-fold continuation is joined with a space
// (RFC 9112 section 5.2 allows a proxy to replace it with SP). Encoded forms
// are data and pass unchanged. A fragment's response headers never reach
// the client; a fragment with an invalid head fails and renders its
// placeholder.
//
// Not tested here: an LF ends a header line (RFC 9112 section 2.2 lets a
// recipient accept a bare LF), so an upstream that lets an LF into a value
// has sent two header lines, and fragcache forwards them as two CRLF
// lines, as the client would read them from the upstream directly.
// fasthttp's client keeps no raw copy of the response head, so fragcache
// cannot tell such a response from one with bare-LF line ends.
func TestHeaderInjectionResponseHead(t *testing.T) {
	type tcase struct {
		name string
		head string // status line and header lines the upstream sends
		// wantStatus is the status line the client gets; wantLines are
		// more lines its head must hold.
		wantStatus string
		wantLines  []string
		guard      string
	}
	enc := hostiles[0].enc
	var tests []tcase
	for _, h := range hostiles {
		if h.encOnly || strings.Contains(h.raw, "\n") {
			continue // an LF ends the line: see the note above
		}
		tests = append(tests,
			tcase{
				name:       "raw " + h.name + " in a header value",
				head:       "HTTP/1.1 200 OK\r\nX-Custom: v" + h.raw + "\r\n",
				wantStatus: "HTTP/1.1 502 Bad Gateway",
				guard:      "fasthttp response header-value validation",
			},
			tcase{
				name:       "raw " + h.name + " in a header name",
				head:       "HTTP/1.1 200 OK\r\nX-Cus" + h.raw + ": v\r\n",
				wantStatus: "HTTP/1.1 502 Bad Gateway",
				guard:      "fasthttp response header-name validation",
			},
		)
	}
	tests = append(tests,
		tcase{
			name:       "NUL in the reason phrase",
			head:       "HTTP/1.1 200 OK\x00" + injected + "\r\n",
			wantStatus: "HTTP/1.1 200 OK",
			guard:      "dropBadReason in proxy",
		},
		tcase{
			name:       "other control byte in the reason phrase",
			head:       "HTTP/1.1 200 OK\x1b[2J\r\n",
			wantStatus: "HTTP/1.1 200 OK",
			guard:      "dropBadReason in proxy",
		},
		tcase{
			// fasthttp turns a CR inside the status line into a space; the
			// text stays on the status line.
			name:       "CR in the reason phrase",
			head:       "HTTP/1.1 200 OK\r" + injected + "\r\n",
			wantStatus: "HTTP/1.1 200 OK " + injected,
			guard:      "fasthttp SetStatusMessage replaces CR and LF with spaces",
		},
		tcase{
			name:       "a custom reason phrase is kept",
			head:       "HTTP/1.1 200 Fine Thanks\r\n",
			wantStatus: "HTTP/1.1 200 Fine Thanks",
			guard:      "dropBadReason drops only control bytes",
		},
		tcase{
			name:       "obs-fold continuation line",
			head:       "HTTP/1.1 200 OK\r\nX-Custom: v\r\n " + injected + "\r\n",
			wantStatus: "HTTP/1.1 200 OK",
			wantLines:  []string{"X-Custom: v " + injected},
			guard:      "fasthttp joins a folded line with a space",
		},
		tcase{
			name:       "encoded CRLF in header values",
			head:       "HTTP/1.1 200 OK\r\nX-Custom: v" + enc + "\r\nLink: </a" + enc + ">\r\nCache-Control: max-age=60, x=" + enc + "\r\n",
			wantStatus: "HTTP/1.1 200 OK",
			wantLines:  []string{"X-Custom: v" + enc, "Link: </a" + enc + ">"},
			guard:      "nothing decodes a response header value",
		},
	)

	rec := newHeadRecorder(t, func(head string) string {
		target := requestTarget(head)
		switch {
		case target == "/f/ok":
			return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=60\r\n"+
				"Set-Cookie: frag=1\r\nX-Frag: "+enc+"\r\n", "F")
		case target == "/f/cr":
			return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Frag: v\r"+injected+"\r\n", "F")
		case target == "/f/nul":
			return rawResponse("HTTP/1.1 200 OK\x00"+injected+"\r\nContent-Type: text/html\r\n", "F")
		case target == "/frag-page":
			return rawResponse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\n",
				`[<esi:include src="/f/ok">p</esi:include>][<esi:include src="/f/cr">p</esi:include>]`+
					`[<esi:include src="/f/nul">p</esi:include>]`)
		}
		// /plain/<n> is passed through, /esi/<n> is composed.
		var n int
		if _, err := fmt.Sscanf(target[strings.LastIndexByte(target, '/')+1:], "%d", &n); err != nil || n >= len(tests) {
			return rawResponse("HTTP/1.1 404 Not Found\r\n", "")
		}
		if strings.HasPrefix(target, "/esi/") {
			return rawResponse(tests[n].head+"Content-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\n",
				`<esi:include src="/f/ok"/>`)
		}
		return rawResponse(tests[n].head+"Content-Type: text/plain\r\n", "page")
	})
	fc := startFragcache(t, "--upstream", "http://"+rec.addr, "--wait", "5s", "--max-wait", "5s")
	addr := strings.TrimPrefix(fc.front, "http://")

	// The same upstream head for a page passed through, a composed page,
	// and the HEAD of a composed page (answered on the passthrough path).
	modes := []struct{ name, method, prefix string }{
		{"plain", "GET", "/plain/"},
		{"esi", "GET", "/esi/"},
		{"esi HEAD", "HEAD", "/esi/"},
	}
	for i, tc := range tests {
		for _, m := range modes {
			t.Run(m.name+" "+tc.name, func(t *testing.T) {
				raw := fmt.Sprintf("%s %s%d HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", m.method, m.prefix, i)
				head, _ := rawRoundTrip(t, addr, raw)
				if p := headProblem(head); p != "" {
					t.Errorf("upstream head %q: client got %s (guard: %s)\n%q", tc.head, p, tc.guard, head)
				}
				lines := strings.Split(head, "\r\n")
				if lines[0] != tc.wantStatus {
					t.Errorf("upstream head %q: client status line %q, want %q (guard: %s)", tc.head, lines[0], tc.wantStatus, tc.guard)
				}
				for _, want := range tc.wantLines {
					if !containsLine(lines, want) {
						t.Errorf("upstream head %q: client head %q lacks the line %q (guard: %s)", tc.head, head, want, tc.guard)
					}
				}
			})
		}
	}

	t.Run("fragment response heads", func(t *testing.T) {
		head, body := rawRoundTrip(t, addr, "GET /frag-page HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
		if p := headProblem(head); p != "" {
			t.Errorf("client head: %s\n%q", p, head)
		}
		// /f/ok is valid and renders; its Set-Cookie and X-Frag stay
		// behind. /f/cr has a CR in a header value: fasthttp refuses the
		// response and the placeholder renders. /f/nul has a NUL in its
		// reason phrase: a fragment's status line is written nowhere, so
		// it renders too.
		if body != "[F][p][F]" {
			t.Errorf("body %q, want [F][p][F]", body)
		}
		lower := strings.ToLower(head)
		for _, leak := range []string{"set-cookie", "x-frag", "pwned"} {
			if strings.Contains(lower, leak) {
				t.Errorf("a fragment's response header (%s) reached the client: %q", leak, head)
			}
		}
	})
}
