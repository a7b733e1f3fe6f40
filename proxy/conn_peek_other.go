//go:build !unix

package proxy

// peek is not available on this platform: pooled connections are reused
// without the idle check, and writes are not checked for early answers.
// The checks made when an answer ends (bytes buffered after it) still
// apply.
func (c *upConn) peek() peekResult { return peekNothing }

func (c *upConn) peekFD(uintptr) {}
