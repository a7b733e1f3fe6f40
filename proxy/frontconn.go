package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"time"
)

// errBareLFHead fails the read of a request head whose blank line is
// written with a bare LF.
var errBareLFHead = errors.New("request head with bare LF line ends")

// frontListener hands fasthttp's server frontConns (DESIGN.md, precise
// rule 13).
type frontListener struct{ net.Listener }

func (l frontListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &frontConn{Conn: c, inHead: true}
	if tc, ok := c.(tlsConn); ok {
		// fasthttp tells a TLS connection by these two methods.
		return &frontTLSConn{frontConn: fc, tc: tc}, nil
	}
	return fc, nil
}

// tlsConn is what fasthttp's server asks of a TLS connection.
type tlsConn interface {
	Handshake() error
	ConnectionState() tls.ConnectionState
}

// frontConn answers at once a request whose head ends in a bare-LF blank
// line. fasthttp finds the end of a head only at CRLF CRLF: it would wait
// for more bytes until the read timeout, and refuse the head only then.
//
// frontConn follows the heads in the bytes fasthttp reads: before it waits
// for each request, fasthttp sets a read deadline, which starts a head; the
// head ends at its first blank line. If that line ends in CRLF CRLF the
// rest (the body, until the next request) is not looked at; if it is a
// bare LF ("\n\n" or "\n\r\n"), the next read fails with errBareLFHead,
// which fasthttp hands to the server's error handler as a head it cannot
// read: 400, connection closed. A head with a bare LF before a CRLF CRLF
// is complete for fasthttp and refused by the handler's raw header check.
//
// A pipelined request that fasthttp already holds in its buffer when the
// previous one ends is not seen: such a head still waits for the read
// timeout.
//
// Not safe for concurrent use; fasthttp reads a connection from one
// goroutine.
type frontConn struct {
	net.Conn
	inHead bool   // the bytes being read belong to a request head
	last   uint32 // the head's last four bytes so far
	bad    bool   // the head ended in a bare-LF blank line
}

func (c *frontConn) Read(b []byte) (int, error) {
	if c.bad {
		return 0, errBareLFHead
	}
	n, err := c.Conn.Read(b)
	if c.inHead && n > 0 {
		c.scan(b[:n])
	}
	return n, err
}

// SetReadDeadline marks the start of a request head.
func (c *frontConn) SetReadDeadline(t time.Time) error {
	if !c.inHead {
		c.inHead, c.last = true, 0
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *frontConn) scan(b []byte) {
	last := c.last
	for _, ch := range b {
		last = last<<8 | uint32(ch)
		if ch != '\n' {
			continue
		}
		switch {
		case last == 0x0d0a0d0a: // CRLF CRLF: the head is complete
			c.inHead, c.last = false, 0
			return
		case last&0xffff == 0x0a0a, last&0xffffff == 0x0a0d0a: // LF LF, LF CRLF
			c.bad = true
			return
		}
	}
	c.last = last
}

// frontTLSConn is a frontConn over TLS.
type frontTLSConn struct {
	*frontConn
	tc tlsConn
}

func (c *frontTLSConn) Handshake() error                     { return c.tc.Handshake() }
func (c *frontTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }
