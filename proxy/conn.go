package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Upstream connections (DESIGN.md, precise rules 13 and 20).
//
// The page client and every fragment client dial through a dialer and
// exchange through transport instead of fasthttp's own, so that a pooled
// connection never gets out of step with its requests:
//
//   - before a pooled connection is reused, a non-blocking peek at its
//     socket looks for anything that arrived while it sat idle (a late
//     surplus, EOF, a reset); such a connection is closed and the request
//     goes out on another one. It was never sent, so this holds for every
//     method and spends none of fasthttp's retries;
//   - an answer followed by bytes it did not declare (a Content-Length
//     smaller than the body, a body on HEAD, 204 or 304) closes its
//     connection instead of pooling it;
//   - an answer whose first bytes arrive before the request was fully
//     written is malformed (the upstream answered some other request);
//   - a response head, chunk size line or trailer that two parsers could
//     read differently (bare LF line ends, a status that is not three
//     digits, Content-Length with Transfer-Encoding, conflicting lengths)
//     is malformed: a 502 for a page, a failed fetch for a fragment.
//
// For https the peek looks at the TCP connection under TLS: bytes there
// are records not yet read, which no answer in step can leave behind.
// What crypto/tls has already read and decrypted is not in the socket; it
// is looked for when the answer ends, with a read whose deadline has
// already passed (crypto/tls then returns what it holds and does not touch
// the socket, and a timeout leaves its state intact). A TLS 1.3 server
// sends session tickets after the handshake, which makes the socket
// readable before the first request; the check of writes therefore starts
// only once the connection carried one answer.

// errEarlyAnswer ends the write of a request on a connection where the
// upstream has already sent something.
var errEarlyAnswer = errors.New("answer before the request was written")

// malformedError is an upstream answer fragcache will not read: its
// framing is broken or ambiguous. The connection it came on is closed.
type malformedError struct {
	why string
	err error // fasthttp's parse error, when fasthttp found the fault
}

func (e *malformedError) Error() string {
	if e.err != nil {
		return "malformed upstream response: " + e.why + ": " + e.err.Error()
	}
	return "malformed upstream response: " + e.why
}

func (e *malformedError) Unwrap() error { return e.err }

func malformed(why string) error { return &malformedError{why: why} }

// peekResult is what a look at an upstream socket found.
type peekResult int8

const (
	peekNothing peekResult = iota // nothing to read: idle and in step
	peekBytes                     // bytes are waiting to be read
	peekClosed                    // EOF or an error: closed or reset
)

// upConn is one upstream connection. fasthttp's HostClient pools it; only
// transport reads and writes it. Not safe for concurrent use, except Close.
type upConn struct {
	net.Conn                 // requests and answers: TCP, or TLS over it
	tls      *tls.Conn       // the TLS layer; nil for http
	raw      syscall.RawConn // the TCP connection under any TLS, for peeks; nil when unavailable
	peekFn   func(fd uintptr)
	peekN    int
	peekErr  error
	peekBuf  [1]byte
	probe    [1]byte

	// idle, when positive, bounds every read and write by inactivity
	// instead of by fasthttp's whole-exchange deadlines, so that a long
	// download is cut only after idle without progress. The deadline is
	// pushed forward only when a quarter of idle has passed since it was
	// last set, which keeps timer updates off most calls; a call therefore
	// fails after between 3/4 and all of idle without progress.
	idle    time.Duration
	readAt  time.Time // when the read deadline was last set
	writeAt time.Time // when the write deadline was last set

	answered  bool // it carried an answer, read whole: the next use is a reuse
	writing   bool // a request is being written
	peekWrite bool // look at the socket before the next write
	peekAll   bool // look before every write after the first of this request

	onClose   func(*upConn)
	closeOnce sync.Once
}

func (c *upConn) Read(b []byte) (int, error) {
	if c.idle > 0 {
		if now := time.Now(); now.Sub(c.readAt) > c.idle/4 {
			if err := c.Conn.SetReadDeadline(now.Add(c.idle)); err != nil {
				return 0, err
			}
			c.readAt = now
		}
	}
	return c.Conn.Read(b)
}

func (c *upConn) Write(b []byte) (int, error) {
	if c.writing {
		if c.peekWrite && c.peek() == peekBytes {
			return 0, errEarlyAnswer
		}
		c.peekWrite = c.peekAll
	}
	if c.idle > 0 {
		if now := time.Now(); now.Sub(c.writeAt) > c.idle/4 {
			if err := c.Conn.SetWriteDeadline(now.Add(c.idle)); err != nil {
				return 0, err
			}
			c.writeAt = now
		}
	}
	return c.Conn.Write(b)
}

func (c *upConn) SetReadDeadline(t time.Time) error {
	if c.idle > 0 {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *upConn) SetWriteDeadline(t time.Time) error {
	if c.idle > 0 {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *upConn) SetDeadline(t time.Time) error {
	if c.idle > 0 {
		return nil
	}
	return c.Conn.SetDeadline(t)
}

// Handshake tells fasthttp that an https connection is TLS already (the
// dialer completed the handshake), so that it does not wrap it again.
func (c *upConn) Handshake() error {
	if c.tls != nil {
		return c.tls.Handshake()
	}
	return nil
}

// Close closes the connection; it is safe to call more than once and from
// any goroutine.
func (c *upConn) Close() error {
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return c.Conn.Close()
}

// beginRequest arms the checks of a request's writes: each write looks at
// the socket first, except the first one on a connection whose idle check
// has just been made. Interim answers (100 Continue) may legitimately
// arrive early, so a request that asks for one is not checked; nor is a
// TLS connection before its first answer (see the package comment above).
func (c *upConn) beginRequest(checked, expectsInterim bool) {
	c.writing = true
	c.peekAll = !expectsInterim && (c.tls == nil || c.answered)
	c.peekWrite = c.peekAll && !checked
}

func (c *upConn) endRequest() { c.writing = false }

// idleCheck looks at a pooled connection about to be reused.
func (c *upConn) idleCheck() peekResult {
	if !c.answered {
		return peekNothing // new: nothing to be out of step with
	}
	return c.peek()
}

// surplus reports whether bytes follow the answer just read: in br, or
// decrypted and waiting in the TLS layer.
func (c *upConn) surplus(br *bufio.Reader) bool {
	return br.Buffered() > 0 || c.tlsBuffered()
}

// tlsBuffered reports whether crypto/tls holds unread data (or has seen
// the end of the connection) without reading the socket. When it finds a
// byte it takes it: the connection is closed then anyway.
func (c *upConn) tlsBuffered() bool {
	if c.tls == nil {
		return false
	}
	if err := c.tls.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return true
	}
	n, err := c.tls.Read(c.probe[:])
	c.readAt = time.Time{} // the idle deadline is set again on the next read
	if derr := c.tls.SetReadDeadline(time.Time{}); derr != nil {
		return true
	}
	var ne net.Error
	return n > 0 || !errors.As(err, &ne) || !ne.Timeout()
}

// dialer opens the connections of one upstream client. It is safe for
// concurrent use.
type dialer struct {
	tls     *tls.Config   // nil for http
	idle    time.Duration // see upConn.idle
	maxDial time.Duration // the longest a dial and its TLS handshake may take
	// dialTCP opens the TCP connection; nil means fasthttp.DialTimeout.
	dialTCP func(addr string, timeout time.Duration) (net.Conn, error)
	// opened, when set, is told of every new connection and may refuse it.
	opened func(*upConn) error
	closed func(*upConn)
}

// newDialer returns the dialer of a client of addr (host:port). trust,
// when not nil, is the TLS configuration to start from (tests); nil means
// the system's roots.
func newDialer(addr string, isTLS bool, trust *tls.Config, idle, maxDial time.Duration) *dialer {
	d := &dialer{idle: idle, maxDial: maxDial}
	if isTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if trust != nil {
			cfg = trust.Clone()
		}
		if cfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(addr); err == nil {
				cfg.ServerName = host
			} else {
				cfg.ServerName = addr
			}
		}
		d.tls = cfg
	}
	return d
}

// dial is the clients' DialTimeout.
func (d *dialer) dial(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > d.maxDial {
		timeout = d.maxDial
	}
	deadline := time.Now().Add(timeout)
	dialTCP := d.dialTCP
	if dialTCP == nil {
		dialTCP = fasthttp.DialTimeout
	}
	tc, err := dialTCP(addr, timeout)
	if err != nil {
		return nil, err
	}
	c := &upConn{Conn: tc, idle: d.idle, onClose: d.closed}
	if sc, ok := tc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw, c.peekFn = rc, c.peekFD
		}
	}
	if d.tls != nil {
		s := tls.Client(tc, d.tls)
		if err := tc.SetDeadline(deadline); err != nil {
			tc.Close()
			return nil, err
		}
		if err := s.Handshake(); err != nil {
			tc.Close()
			return nil, err
		}
		if err := tc.SetDeadline(time.Time{}); err != nil {
			tc.Close()
			return nil, err
		}
		c.Conn, c.tls = s, s
	}
	if d.opened != nil {
		if err := d.opened(c); err != nil {
			c.Conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// transport is the RoundTripper of every upstream client: fasthttp's own
// exchange, with the connection checks of rule 20 and the framing checks
// of rule 13. It is safe for concurrent use.
type transport struct {
	log *slog.Logger
}

// maxInterim bounds the 1xx answers read before the final one.
const maxInterim = 8

// RoundTrip implements fasthttp.RoundTripper. It is one piece because it
// is one exchange on one connection: which connection may be reused,
// released or must be closed depends on every step before (peek, write,
// interim answers, head, body framing), and split up that decision would
// be spread over functions that each see only part of it.
func (t *transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (retry bool, err error) {
	skipBody := resp.SkipBody || req.Header.IsHead()
	stream := resp.StreamBody
	timeout := req.GetTimeOut()
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}

	// Take a connection that is in step: a pooled one with anything
	// waiting on it is closed, and the next one (in the end a new one) is
	// tried.
	reused := false
	cc, err := hc.AcquireConn(timeout, req.ConnectionClose())
	for err == nil {
		c, _ := cc.Conn().(*upConn)
		if c == nil {
			break
		}
		st := c.idleCheck()
		if st == peekNothing {
			reused = c.answered
			break
		}
		if st == peekBytes {
			t.log.Warn("upstream sent bytes on an idle connection; closed it", slog.String("upstream", hc.Addr))
		}
		hc.CloseConn(cc)
		if timeout > 0 {
			if timeout = time.Until(deadline); timeout <= 0 {
				return false, fasthttp.ErrTimeout
			}
		}
		cc, err = hc.AcquireConn(timeout, req.ConnectionClose())
	}
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	c, _ := conn.(*upConn)
	resp.ParseNetConn(conn)

	if err = conn.SetWriteDeadline(earliest(deadline, hc.WriteTimeout)); err != nil {
		hc.CloseConn(cc)
		return true, err
	}
	if c != nil {
		c.beginRequest(reused, req.MayContinue())
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if c != nil {
		c.endRequest()
	}
	if err != nil {
		hc.CloseConn(cc)
		if errors.Is(err, errEarlyAnswer) {
			return false, malformed("answer before the request was written")
		}
		if isTimeout(err) {
			err = fasthttp.ErrTimeout
		}
		return true, err
	}

	if err = conn.SetReadDeadline(earliest(deadline, hc.ReadTimeout)); err != nil {
		hc.CloseConn(cc)
		return true, err
	}
	if skipBody {
		resp.SkipBody = true
	}
	if hc.DisableHeaderNamesNormalizing {
		resp.Header.DisableNormalizing()
	}
	br := hc.AcquireReader(conn)
	fail := func(err error) (bool, error) {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		var m *malformedError
		return !errors.As(err, &m) && err != fasthttp.ErrBodyTooLarge, err
	}
	if err = readHead(br, &resp.Header); err != nil {
		return fail(err)
	}
	keep := !req.ConnectionClose() && !resp.ConnectionClose()
	if !bodyless(resp) {
		body := bodyReader{br: br}
		switch cl := resp.Header.ContentLength(); {
		case cl >= 0:
			body.left = int64(cl)
			body.eof = cl == 0
		case cl == -1:
			body.chunked = true
			// The first chunk size line is read now: a malformed one is
			// refused before any of the answer is passed on.
			if err = body.nextChunk(); err != nil {
				return fail(err)
			}
		default: // no length: the body ends with the connection
			body.untilClose = true
			keep = false
		}
		if stream {
			s := newStreamBody(t, hc, cc, (*fasthttp.HostClient).ReleaseConn, (*fasthttp.HostClient).CloseConn)
			s.conn, s.body, s.keep = c, body, keep
			resp.SetBodyStream(s, resp.Header.ContentLength())
			return false, nil
		}
		if err = readWhole(&body, resp, hc.MaxResponseBodySize); err != nil {
			return fail(err)
		}
	}
	if keep && c != nil && c.surplus(br) {
		t.surplusLog(hc)
		keep = false
	}
	hc.ReleaseReader(br)
	if keep && c != nil {
		c.answered = true
		hc.ReleaseConn(cc)
	} else {
		hc.CloseConn(cc)
	}
	return false, nil
}

func (t *transport) surplusLog(hc *fasthttp.HostClient) {
	t.log.Warn("upstream sent bytes after its answer; closed the connection", slog.String("upstream", hc.Addr))
}

// earliest is the sooner of deadline (zero: none) and now plus d (zero:
// none).
func earliest(deadline time.Time, d time.Duration) time.Time {
	if d > 0 {
		if t := time.Now().Add(d); deadline.IsZero() || t.Before(deadline) {
			return t
		}
	}
	return deadline
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// bodyless reports whether an answer has no body whatever its head says:
// the answer to HEAD, 1xx, 204 and 304 (RFC 9112 section 6.3).
func bodyless(resp *fasthttp.Response) bool {
	code := resp.StatusCode()
	return resp.SkipBody || code < 200 || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified
}

// readHead reads the head of the final answer into h, after checking each
// raw head (interim ones too) with badHead.
func readHead(br *bufio.Reader, h *fasthttp.ResponseHeader) error {
	for n := 0; ; n++ {
		if head, ok := peekHead(br); ok {
			if why := badHead(head); why != "" {
				return malformed(why)
			}
		}
		if err := h.Read(br); err != nil {
			if isTransportError(err) {
				return err
			}
			return &malformedError{why: "unreadable head", err: err}
		}
		if code := h.StatusCode(); code >= 200 || code == fasthttp.StatusSwitchingProtocols {
			return nil
		}
		if n == maxInterim {
			return malformed("too many interim answers")
		}
	}
}

// isTransportError reports whether reading an answer failed for the
// connection's sake (closed, reset, timed out), not for its bytes'.
func isTransportError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, fasthttp.ErrTimeout) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// peekHead returns the raw head at the front of br, through the blank line
// that ends it, without consuming it. ok is false when the head cannot be
// had whole (the connection failed, or the head fills the buffer); the
// parse that follows then reports why.
func peekHead(br *bufio.Reader) (head []byte, ok bool) {
	for n := 1; ; n = br.Buffered() + 1 {
		_, err := br.Peek(n)
		b, _ := br.Peek(br.Buffered())
		if end := headEnd(b); end > 0 {
			return b[:end], true
		}
		if err != nil || br.Buffered() >= br.Size() {
			return nil, false
		}
	}
}

// headEnd returns the length of the head at the front of b, through the
// first blank line however its line ends are written, or 0 if b holds no
// blank line yet.
func headEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return 0
}

// badHead says why a raw response head (through its blank line) must be
// refused, or "" when its framing is unambiguous: every line ends in
// CRLF, the status line is HTTP/1.x and a three-digit code, no header
// name holds white space, Content-Length is digits and
// agrees with any other, and Transfer-Encoding, if any, is chunked alone
// and without Content-Length.
func badHead(head []byte) string {
	var cl []byte
	te := 0
	for first := true; len(head) > 0; first = false {
		i := 0
		for i < len(head) && head[i] != '\n' {
			i++
		}
		if i == len(head) || i == 0 || head[i-1] != '\r' {
			return "bare LF line end"
		}
		line := head[:i-1]
		head = head[i+1:]
		if first {
			if !validStatusLine(line) {
				return "status line is not HTTP/1.x and a three-digit code"
			}
			continue
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// obs-fold: fasthttp joins it to the line before with a space,
			// as RFC 9112 section 5.2 lets a proxy do.
			continue
		}
		c := 0
		for c < len(line) && line[c] != ':' {
			c++
		}
		if c == 0 || c == len(line) {
			return "header line without a name"
		}
		name, val := line[:c], trimOWS(line[c+1:])
		for _, ch := range name {
			if ch == ' ' || ch == '\t' {
				return "white space in a header name"
			}
		}
		switch {
		case equalFold(name, "content-length"):
			if !allDigits(val) {
				return "invalid Content-Length"
			}
			if cl != nil && string(cl) != string(val) {
				return "conflicting Content-Length headers"
			}
			cl = val
		case equalFold(name, "transfer-encoding"):
			te++
			if te > 1 || !equalFold(val, "chunked") {
				return "unsupported Transfer-Encoding"
			}
		}
	}
	if cl != nil && te > 0 {
		return "both Content-Length and Transfer-Encoding"
	}
	return ""
}

// validStatusLine checks "HTTP/1.x SP 3DIGIT [SP reason]", the code
// between 100 and 599.
func validStatusLine(l []byte) bool {
	if len(l) < 12 || string(l[:7]) != "HTTP/1." || !isDigit(l[7]) || l[8] != ' ' {
		return false
	}
	if l[9] < '1' || l[9] > '5' || !isDigit(l[10]) || !isDigit(l[11]) {
		return false
	}
	return len(l) == 12 || l[12] == ' '
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func allDigits(b []byte) bool {
	if len(b) == 0 || len(b) > 18 {
		return false
	}
	for _, c := range b {
		if !isDigit(c) {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// chunkSize parses a chunk size line, through its LF: 1*HEXDIG, then
// optional white space and chunk extensions, then CRLF (RFC 9112 section
// 7.1). ok is false for anything else, a bare LF included.
func chunkSize(line []byte) (n int64, ok bool) {
	if len(line) < 3 || line[len(line)-1] != '\n' || line[len(line)-2] != '\r' {
		return 0, false
	}
	line = line[:len(line)-2]
	i := 0
	for ; i < len(line); i++ {
		v := hexValue(line[i])
		if v < 0 {
			break
		}
		if i == 15 {
			return 0, false // 2^60 bytes and more
		}
		n = n<<4 | int64(v)
	}
	if i == 0 {
		return 0, false
	}
	rest := trimOWS(line[i:])
	if len(rest) > 0 && rest[0] != ';' {
		return 0, false
	}
	for _, c := range rest {
		if c == '\r' || c == '\n' || c == 0 {
			return 0, false
		}
	}
	return n, true
}

func hexValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// maxTrailerLines bounds the trailer fields after a chunked body; they
// are read and dropped.
const maxTrailerLines = 64

// bodyReader reads one answer's body from br by its framing and leaves br
// at the first byte after it. It is not safe for concurrent use.
type bodyReader struct {
	br         *bufio.Reader
	left       int64 // of the body (sized) or of the current chunk (chunked)
	chunked    bool
	untilClose bool // no length: the body ends with the connection
	eof        bool
	err        error // sticky
}

func (d *bodyReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.eof {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if d.chunked && d.left == 0 {
		if err := d.nextChunk(); err != nil {
			return 0, err
		}
		if d.eof {
			return 0, io.EOF
		}
	}
	if !d.untilClose && int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.br.Read(p)
	if d.untilClose {
		if err == io.EOF {
			d.eof = true
		}
		return n, err
	}
	d.left -= int64(n)
	switch {
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	case err != nil:
	case d.left > 0:
	case d.chunked:
		err = d.endChunk()
	default:
		d.eof = true
		return n, io.EOF
	}
	if err != nil {
		d.err = err
	}
	return n, err
}

// nextChunk reads a chunk size line; after the last chunk it reads the
// trailer and marks the end of the body.
func (d *bodyReader) nextChunk() error {
	line, err := d.line()
	if err != nil {
		return err
	}
	n, ok := chunkSize(line)
	if !ok {
		d.err = malformed("bad chunk size line")
		return d.err
	}
	if n > 0 {
		d.left = n
		return nil
	}
	for range maxTrailerLines {
		line, err := d.line()
		if err != nil {
			return err
		}
		if len(line) < 2 || line[len(line)-2] != '\r' {
			d.err = malformed("bare LF line end in the trailer")
			return d.err
		}
		if len(line) == 2 {
			d.eof = true
			return nil
		}
	}
	d.err = malformed("trailer too long")
	return d.err
}

// endChunk reads the CRLF after a chunk's data.
func (d *bodyReader) endChunk() error {
	b, err := d.br.Peek(2)
	if len(b) == 2 && b[0] == '\r' && b[1] == '\n' {
		_, _ = d.br.Discard(2)
		return nil
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return malformed("chunk data not followed by CRLF")
}

// line reads one line through its LF.
func (d *bodyReader) line() ([]byte, error) {
	line, err := d.br.ReadSlice('\n')
	switch {
	case err == nil:
		return line, nil
	case err == bufio.ErrBufferFull:
		d.err = malformed("chunk size or trailer line too long")
	case err == io.EOF:
		d.err = io.ErrUnexpectedEOF
	default:
		d.err = err
	}
	return nil, d.err
}

// readWhole reads the body into resp, refusing more than limit bytes
// (limit <= 0: no limit).
func readWhole(d *bodyReader, resp *fasthttp.Response, limit int) error {
	if limit > 0 && !d.chunked && !d.untilClose && d.left > int64(limit) {
		return fasthttp.ErrBodyTooLarge
	}
	buf := resp.SwapBody(nil)[:0]
	if !d.chunked && !d.untilClose {
		buf = slices.Grow(buf, int(d.left))
	}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 4<<10)
		}
		n, err := d.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if limit > 0 && len(buf) > limit {
			resp.SwapBody(buf)
			return fasthttp.ErrBodyTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			resp.SwapBody(buf)
			return err
		}
	}
	resp.SwapBody(buf)
	if d.untilClose {
		resp.Header.SetContentLength(len(buf))
	}
	return nil
}

// streamBody is an answer's body handed to the caller as a stream (the
// page client): it gives the connection back when closed, pooled if the
// body was read to its end with nothing after it, closed otherwise. C is
// fasthttp's pooled connection type, which it does not export; release
// and discard are HostClient's ReleaseConn and CloseConn.
type streamBody[C any] struct {
	t       *transport
	hc      *fasthttp.HostClient
	cc      C
	release func(*fasthttp.HostClient, C)
	discard func(*fasthttp.HostClient, C)
	conn    *upConn
	body    bodyReader
	keep    bool // the connection may be pooled once the body has ended

	mu     sync.Mutex // serialises Read and Close
	closed bool
}

func newStreamBody[C any](t *transport, hc *fasthttp.HostClient, cc C, release, discard func(*fasthttp.HostClient, C)) *streamBody[C] {
	return &streamBody[C]{t: t, hc: hc, cc: cc, release: release, discard: discard}
}

func (s *streamBody[C]) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, io.ErrClosedPipe
	}
	return s.body.Read(p)
}

// Close gives the connection back. A Read still in flight is cut by
// closing the connection.
func (s *streamBody[C]) Close() error {
	if !s.mu.TryLock() {
		if s.conn != nil {
			s.conn.Close()
		}
		s.mu.Lock()
		s.keep = false
	}
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	keep := s.keep && s.body.eof && s.body.err == nil && s.conn != nil
	if keep && s.conn.surplus(s.body.br) {
		s.t.surplusLog(s.hc)
		keep = false
	}
	s.hc.ReleaseReader(s.body.br)
	s.body.br = nil
	if keep {
		s.conn.answered = true
		s.release(s.hc, s.cc)
	} else {
		s.discard(s.hc, s.cc)
	}
	return nil
}
