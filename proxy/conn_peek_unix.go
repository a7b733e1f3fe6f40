//go:build unix

package proxy

import "syscall"

// peek looks at the upstream's TCP socket without reading from it and
// without waiting: a recv with MSG_PEEK|MSG_DONTWAIT of one byte. It is
// made through RawConn.Control, which, unlike RawConn.Read, neither waits
// for the socket to become readable nor fails on a read deadline already
// past.
func (c *upConn) peek() peekResult {
	if c.raw == nil {
		return peekNothing
	}
	if err := c.raw.Control(c.peekFn); err != nil {
		return peekClosed
	}
	switch {
	case c.peekN > 0:
		return peekBytes
	case c.peekErr == syscall.EAGAIN || c.peekErr == syscall.EWOULDBLOCK || c.peekErr == syscall.EINTR:
		return peekNothing
	}
	return peekClosed // 0 bytes: EOF; or an error such as ECONNRESET
}

// peekFD is peek's look at the file descriptor; upConn keeps it as a
// method value made once per connection, so that a peek allocates nothing.
func (c *upConn) peekFD(fd uintptr) {
	c.peekN, _, c.peekErr = syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
}
