package proxy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fragcache/metrics"
)

func TestBadHead(t *testing.T) {
	tests := []struct{ head, want string }{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", ""},
		{"HTTP/1.0 404 Not Found\r\n\r\n", ""},
		{"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n", ""},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n", ""},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n", ""},
		{"HTTP/1.1 200 OK\r\nX-A: b\r\n folded\r\n\r\n", ""}, // fasthttp joins it with a space
		{"HTTP/1.1 599 Weird\r\n\r\n", ""},
		{"HTTP/1.1 200 OK\nContent-Length: 2\n\n", "bare LF line end"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\n", "bare LF line end"},
		{"HTTP/1.1 200 OK\r\nX-A: b\r\n\n", "bare LF line end"},
		{"HTTP/1.1 20 OK\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"HTTP/1.1 2000 OK\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"HTTP/1.1 200OK\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"HTTP/1.1 099 Low\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"HTTP/1.1 600 High\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"HTTP/2.0 200 OK\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"http/1.1 200 OK\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"\r\nHTTP/1.1 200 OK\r\n\r\n", "status line is not HTTP/1.x and a three-digit code"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "both Content-Length and Transfer-Encoding"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", "conflicting Content-Length headers"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n", "invalid Content-Length"},
		{"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"},
		{"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", "invalid Content-Length"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "unsupported Transfer-Encoding"},
		{"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n", "white space in a header name"},
		{"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line without a name"},
		{"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", "header line without a name"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.head), func(t *testing.T) {
			if got := badHead([]byte(tc.head)); got != tc.want {
				t.Errorf("badHead(%q) = %q, want %q", tc.head, got, tc.want)
			}
		})
	}
}

func TestHeadEnd(t *testing.T) {
	tests := []struct {
		b    string
		want int
	}{
		{"HTTP/1.1 200 OK\r\n\r\nbody", 19},
		{"HTTP/1.1 200 OK\n\nbody", 17},
		{"HTTP/1.1 200 OK\n\r\nbody", 18},
		{"HTTP/1.1 200 OK\r\nA: b\r\n", 0},
		{"HTTP/1.1 200 OK\r\nA: b\r\n\r", 0},
		{"", 0},
	}
	for _, tc := range tests {
		if got := headEnd([]byte(tc.b)); got != tc.want {
			t.Errorf("headEnd(%q) = %d, want %d", tc.b, got, tc.want)
		}
	}
}

func TestChunkSize(t *testing.T) {
	tests := []struct {
		line string
		n    int64
		ok   bool
	}{
		{"5\r\n", 5, true},
		{"1aF\r\n", 0x1af, true},
		{"0\r\n", 0, true},
		{"5;name=value\r\n", 5, true},
		{"5 ;ext\r\n", 5, true},
		{"5 \r\n", 5, true},
		{"fffffffffffffff\r\n", 0xfffffffffffffff, true},
		{"1000000000000000\r\n", 0, false}, // 16 hex digits
		{"zz\r\n", 0, false},
		{"\r\n", 0, false},
		{"5\n", 0, false},
		{"5", 0, false},
		{"5x\r\n", 0, false},
		{"5 x\r\n", 0, false},
		{"-5\r\n", 0, false},
		{"5;a\rb\r\n", 0, false},
		{"5;a\x00\r\n", 0, false},
	}
	for _, tc := range tests {
		n, ok := chunkSize([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("chunkSize(%q) = %d, %v, want %d, %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
}

func TestBodyReader(t *testing.T) {
	tests := []struct {
		name             string
		cl               int // -1 chunked, -2 until close
		raw              string
		want, left       string
		malformed, short bool
	}{
		{name: "sized", cl: 5, raw: "helloNEXT", want: "hello", left: "NEXT"},
		{name: "empty", cl: 0, raw: "NEXT", want: "", left: "NEXT"},
		{name: "sized, cut", cl: 9, raw: "hello", want: "hello", short: true},
		{name: "chunked", cl: -1, raw: "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nNEXT", want: "hello world", left: "NEXT"},
		{name: "chunked, trailer dropped", cl: -1, raw: "2\r\nhi\r\n0\r\nX-Sum: 1\r\nSet-Ck: a=b\r\n\r\nNEXT", want: "hi", left: "NEXT"},
		{name: "chunked, bad size", cl: -1, raw: "2\r\nhi\r\nzz\r\nxx\r\n0\r\n\r\n", want: "hi", malformed: true},
		{name: "chunked, bare LF after size", cl: -1, raw: "2\nhi\r\n0\r\n\r\n", malformed: true},
		{name: "chunked, no CRLF after data", cl: -1, raw: "2\r\nhiX\r\n0\r\n\r\n", want: "hi", malformed: true},
		{name: "chunked, bare LF in trailer", cl: -1, raw: "2\r\nhi\r\n0\r\nA: b\n\r\n", want: "hi", malformed: true},
		{name: "chunked, cut", cl: -1, raw: "5\r\nhel", want: "hel", short: true},
		{name: "chunked, cut before last chunk", cl: -1, raw: "2\r\nhi\r\n", want: "hi", short: true},
		{name: "until close", cl: -2, raw: "all of it", want: "all of it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.raw), 16)
			d := bodyReader{br: br}
			switch tc.cl {
			case -1:
				d.chunked = true
			case -2:
				d.untilClose = true
			default:
				d.left, d.eof = int64(tc.cl), tc.cl == 0
			}
			var got bytes.Buffer
			buf := make([]byte, 3) // small reads cross every boundary
			var err error
			for {
				var n int
				n, err = d.Read(buf)
				got.Write(buf[:n])
				if err != nil {
					break
				}
			}
			var m *malformedError
			switch {
			case tc.malformed:
				if !errors.As(err, &m) {
					t.Errorf("error %v, want a malformed answer", err)
				}
			case tc.short:
				if err != io.ErrUnexpectedEOF {
					t.Errorf("error %v, want io.ErrUnexpectedEOF", err)
				}
			case err != io.EOF:
				t.Errorf("error %v, want io.EOF", err)
			}
			if got.String() != tc.want {
				t.Errorf("body %q, want %q", got.String(), tc.want)
			}
			if !tc.malformed && !tc.short {
				rest, _ := io.ReadAll(br)
				if string(rest) != tc.left {
					t.Errorf("left after the body %q, want %q", rest, tc.left)
				}
			}
		})
	}
}

func TestFrontConnScan(t *testing.T) {
	tests := []struct {
		name   string
		reads  []string
		bad    bool
		inHead bool // still in a head after the reads
	}{
		{"CRLF head", []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"}, false, false},
		{"CRLF head, then a body with LF LF", []string{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n\n\n\n\n"}, false, false},
		{"CRLF head split", []string{"GET / HTTP/1.1\r\nHost: a\r", "\n", "\r", "\n"}, false, false},
		{"bare LF head", []string{"GET / HTTP/1.1\nHost: x\n\n"}, true, true},
		{"bare LF head split", []string{"GET / HTTP/1.1\nHost: x\n", "\n"}, true, true},
		{"LF CRLF blank line", []string{"GET / HTTP/1.1\r\nHost: x\n\r\n"}, true, true},
		{"bare LF inside a CRLF head", []string{"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"}, false, false},
		{"leading CRLF", []string{"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"}, false, false},
		{"head not complete", []string{"GET / HTTP/1.1\r\nHost: a\r\n"}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &frontConn{inHead: true}
			for _, r := range tc.reads {
				if c.inHead && !c.bad {
					c.scan([]byte(r))
				}
			}
			if c.bad != tc.bad || c.inHead != tc.inHead {
				t.Errorf("after %q: bad %v, in a head %v; want %v, %v", tc.reads, c.bad, c.inHead, tc.bad, tc.inHead)
			}
		})
	}
}

// loopbackPair dials a loopback listener through a dialer and returns the
// upstream connection and the server's end of it.
func loopbackPair(t *testing.T, d *dialer) (*upConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		if d.tls != nil {
			s := tls.Server(c, serverTLS(t))
			if err := s.Handshake(); err != nil {
				c.Close()
				close(accepted)
				return
			}
			c = s
		}
		accepted <- c
	}()
	c, err := d.dial(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*upConn), s
}

func waitPeek(t *testing.T, c *upConn, want peekResult) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for c.peek() != want {
		if time.Now().After(deadline) {
			t.Fatalf("peek %d, want %d", c.peek(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPeek(t *testing.T) {
	d := newDialer("127.0.0.1:0", false, nil, 0, time.Second)
	t.Run("idle, bytes, read, EOF", func(t *testing.T) {
		c, s := loopbackPair(t, d)
		if got := c.peek(); got != peekNothing {
			t.Fatalf("an idle connection: peek %d, want nothing", got)
		}
		// A read deadline already past does not stop the peek.
		c.Conn.SetReadDeadline(time.Unix(1, 0))
		s.Write([]byte("x"))
		waitPeek(t, c, peekBytes)
		c.Conn.SetReadDeadline(time.Time{})
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if got := c.peek(); got != peekNothing {
			t.Fatalf("after the byte was read: peek %d, want nothing", got)
		}
		s.Close()
		waitPeek(t, c, peekClosed)
	})
	t.Run("reset", func(t *testing.T) {
		c, s := loopbackPair(t, d)
		s.(*net.TCPConn).SetLinger(0)
		s.Close()
		waitPeek(t, c, peekClosed)
	})
	t.Run("write check", func(t *testing.T) {
		c, s := loopbackPair(t, d)
		c.answered = true
		c.beginRequest(true, false)
		if _, err := c.Write([]byte("first")); err != nil {
			t.Fatalf("the first write after the idle check: %v", err)
		}
		s.Write([]byte("HTTP/1.1 200 OK\r\n"))
		waitPeek(t, c, peekBytes)
		if _, err := c.Write([]byte("second")); !errors.Is(err, errEarlyAnswer) {
			t.Fatalf("a write after the upstream answered: %v, want errEarlyAnswer", err)
		}
		c.beginRequest(true, true) // Expect: 100-continue: an interim answer may come early
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("a write of a request expecting 100 Continue: %v", err)
		}
		c.endRequest()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatalf("a write outside a request: %v", err)
		}
	})
}

// selfSigned is a certificate for 127.0.0.1, made once per test binary.
var selfSigned = sync.OnceValues(func() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fragcache test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
})

func serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	cert, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

func clientTLS(t *testing.T) *tls.Config {
	t.Helper()
	cert, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{RootCAs: pool}
}

// TestTLSBuffered: what crypto/tls has decrypted but not handed out is
// found without reading the socket, and the look leaves the connection
// usable.
func TestTLSBuffered(t *testing.T) {
	d := newDialer("127.0.0.1:0", true, clientTLS(t), 0, time.Second)
	c, s := loopbackPair(t, d)
	go s.Write([]byte("hello")) // one record
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		t.Fatal(err)
	}
	if !c.tlsBuffered() {
		t.Error("4 decrypted bytes wait in crypto/tls: tlsBuffered false")
	}
	// The look took one of them (a connection found so is closed).
	if _, err := io.ReadFull(c, make([]byte, 3)); err != nil {
		t.Fatalf("reading after the look: %v", err)
	}
	if c.tlsBuffered() {
		t.Error("nothing left: tlsBuffered true")
	}
	go s.Write([]byte("world"))
	waitPeek(t, c, peekBytes) // the record is in the socket, not yet read
	if c.tlsBuffered() {
		t.Error("a record still in the socket: tlsBuffered true, want it left to the peek")
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "world" {
		t.Fatalf("reading after the look: %q %v", got, err)
	}
}

// rawUpstream is a raw HTTP/1.1 server on loopback, over TLS when cfg is
// set: it reads each request head (and a Content-Length body) and writes
// what answer returns for it; after is written 10 ms later, while the
// connection sits idle.
type rawUpstream struct {
	addr string
	reqs atomic.Int64
}

func newRawUpstream(t *testing.T, cfg *tls.Config, answer func(method, path string, body []byte) (now, after string)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	u := &rawUpstream{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					method, path, body, err := readRawRequest(br)
					if err != nil {
						return
					}
					u.reqs.Add(1)
					now, after := answer(method, path, body)
					if _, err := io.WriteString(c, now); err != nil {
						return
					}
					if after != "" {
						time.Sleep(10 * time.Millisecond)
						if _, err := io.WriteString(c, after); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

func readRawRequest(br *bufio.Reader) (method, path string, body []byte, err error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", "", nil, err
	}
	n := 0
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			return "", "", nil, err
		}
		if h == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Content-Length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return "", "", nil, err
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", "", nil, errors.New("bad request line")
	}
	return f[0], f[1], body, nil
}

const stolenAnswer = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: max-age=600\r\nContent-Length: 8\r\n\r\n=STOLEN="

// stepAnswers answers every request with a body naming it; /late/ adds a
// whole stolen answer while the connection is idle, /short/ a
// Content-Length smaller than the body, HEAD a body; /page/X is an
// opted-in page including the fragment /X.
func stepAnswers(method, path string, body []byte) (string, string) {
	own := "=" + method + " " + path + " " + strconv.Itoa(len(body)) + "="
	head := func(ct string, n int) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: max-age=600\r\nContent-Length: %d\r\n\r\n", ct, n)
	}
	switch {
	case strings.HasPrefix(path, "/page/"):
		page := fmt.Sprintf(`[<esi:include src="%s">ph</esi:include>]`, strings.TrimPrefix(path, "/page"))
		return "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nSurrogate-Control: content=\"ESI/1.0\"\r\nCache-Control: no-store\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(page), page), ""
	case method == "HEAD":
		return head("text/plain", len(stolenAnswer)) + stolenAnswer, ""
	case strings.HasPrefix(path, "/late/"):
		return head("text/html", len(own)) + own, stolenAnswer
	case strings.HasPrefix(path, "/short/"):
		return head("text/html", len(own)) + own + stolenAnswer, ""
	}
	return head("text/html", len(own)) + own, ""
}

// serveProxy serves p on a loopback listener until the test ends.
func serveProxy(t *testing.T, p *Proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Shutdown(t.Context())
		<-done
	})
	return "http://" + ln.Addr().String()
}

func proxyFor(t *testing.T, upstream string, trust *tls.Config) *Proxy {
	t.Helper()
	host := strings.TrimPrefix(strings.TrimPrefix(upstream, "https://"), "http://")
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "test", Upstreams: []string{host}})
	p, err := New(Config{Upstream: upstream, Metrics: m, Wait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if trust != nil {
		p.pageDialer.tls.RootCAs = trust.RootCAs
		p.fetch.trust = trust
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func send(t *testing.T, hc *http.Client, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// TestPooledConnStaysInStepTLS is fault_test.go's TestPooledConnStaysInStep
// over https (the peek looks at the TCP connection under TLS), plus a
// POST whose body takes many writes on a reused connection, which the
// check of writes must let through, and a POST after a late surplus,
// which goes out once, on a new connection.
func TestPooledConnStaysInStepTLS(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			var srv, trust *tls.Config
			if scheme == "https" {
				srv, trust = serverTLS(t), clientTLS(t)
			}
			up := newRawUpstream(t, srv, stepAnswers)
			p := proxyFor(t, scheme+"://"+up.addr, trust)
			front := serveProxy(t, p)
			hc := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(hc.CloseIdleConnections)
			big := strings.Repeat("b", 100<<10)
			tests := []struct {
				name, method, path, want string
				body                     string
			}{
				{"page, late surplus", "GET", "/late/1", "=GET /late/1 0=", ""},
				{"page, Content-Length smaller than the body", "GET", "/short/1", "=GET /short/1 0=", ""},
				{"page, body on HEAD", "HEAD", "/head/1", "", ""},
				{"fragment, late surplus", "GET", "/page/late/2", "[=GET /late/2 0=]", ""},
				{"fragment, Content-Length smaller than the body", "GET", "/page/short/2", "[=GET /short/2 0=]", ""},
				{"page, 100 KiB POST on a reused connection", "POST", "/big/3", "=POST /big/3 102400=", big},
			}
			for i, tc := range tests {
				code, body := send(t, hc, tc.method, front+tc.path, strings.NewReader(tc.body))
				if code != 200 || body != tc.want {
					t.Errorf("%s: %d %q, want 200 %q", tc.name, code, body, tc.want)
				}
				time.Sleep(30 * time.Millisecond) // a surplus arrives while the connection is idle
				for j := range 3 {
					path := fmt.Sprintf("/ok/%d-%d", i, j)
					want := "=GET " + path + " 0="
					if strings.HasPrefix(tc.path, "/page/") {
						path, want = "/page"+path, "["+want+"]"
					}
					if code, body := send(t, hc, "GET", front+path, nil); code != 200 || body != want {
						t.Errorf("%s: request %d after it: %d %q, want 200 %q", tc.name, j, code, body, want)
					}
				}
			}
			// A request that finds its pooled connection out of step goes
			// out on a new one, once, whatever its method.
			send(t, hc, "GET", front+"/late/4", nil)
			time.Sleep(30 * time.Millisecond)
			before := up.reqs.Load()
			if code, body := send(t, hc, "POST", front+"/post/4", strings.NewReader("abc")); code != 200 || body != "=POST /post/4 3=" {
				t.Errorf("POST after a late surplus: %d %q, want 200 %q", code, body, "=POST /post/4 3=")
			}
			if n := up.reqs.Load() - before; n != 1 {
				t.Errorf("the POST reached the upstream %d times, want once", n)
			}
		})
	}
}

// TestAnswerBeforeRequestWrittenIsMalformed: an upstream that answers
// while the request's body is still being written gets a 502; the body
// comes slowly from the client, so the answer is there before its second
// part is written.
func TestAnswerBeforeRequestWrittenIsMalformed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				// Answer at once, without reading the body.
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nearly")
				io.Copy(io.Discard, c)
			}()
		}
	}()
	p := proxyFor(t, "http://"+ln.Addr().String(), nil)
	front := serveProxy(t, p)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(bytes.Repeat([]byte("a"), 1024))
		time.Sleep(100 * time.Millisecond)
		pw.Write(bytes.Repeat([]byte("b"), 64<<10))
		pw.Close()
	}()
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	code, body := send(t, hc, "POST", front+"/upload", pr)
	if code != 502 || body != "malformed upstream response" {
		t.Errorf("%d %q, want 502 %q", code, body, "malformed upstream response")
	}
}

// TestClientsUseTransport: every upstream client exchanges through the
// checked transport and dials upConns.
func TestClientsUseTransport(t *testing.T) {
	p := newTestProxy(t)
	frag, _, err := p.fetch.client(&target{scheme: "https", addr: "cdn.example:443", label: "cdn.example"}, p.cfg.MaxFragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	for name, tr := range map[string]any{"page client": p.page.Transport, "fragment client": frag.Transport} {
		if tr != p.transport {
			t.Errorf("%s: Transport %T, want the proxy's transport", name, tr)
		}
	}
	if !p.page.SecureErrorLogMessage || !frag.SecureErrorLogMessage {
		t.Error("a client's parse errors would log the upstream's raw head (its Set-Cookie values)")
	}
}
