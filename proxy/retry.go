package proxy

import (
	"errors"
	"io"
	"syscall"

	"github.com/valyala/fasthttp"
)

// retryStaleConn is the RetryIfErr of every upstream and fragment client.
// It allows one more attempt, and only for a GET or HEAD without a body
// whose first attempt died before a single byte of the answer arrived
// because the other side had closed the connection: the keep-alive race,
// where the upstream closes a connection it found idle just as fragcache
// reuses it. Such a request was never read by the upstream (or, at worst,
// it is a safe method answered by nobody), so sending it again on a new
// connection cannot do anything twice. Timeouts, refused connections,
// answers cut mid-body and every other method are never retried.
//
// fasthttp reports the race as io.EOF when reading the answer's first byte
// (it maps every non-timeout error there to io.EOF), or as EPIPE or
// ECONNRESET when writing the request.
//
// Most such connections never get this far: transport looks at a pooled
// connection before writing on it and takes another when the upstream
// has closed it (or sent anything) meanwhile, without spending this retry
// and for every method. What is left is a close that crosses the request
// on the wire.
func retryStaleConn(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	if attempts > 1 || req.IsBodyStream() || len(req.Body()) > 0 {
		return false, false
	}
	if !req.Header.IsGet() && !req.Header.IsHead() {
		return false, false
	}
	return false, err == io.EOF || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// maxAttempts is the clients' MaxIdemponentCallAttempts: one attempt, plus
// the one retry that retryStaleConn may grant.
const maxAttempts = 2
