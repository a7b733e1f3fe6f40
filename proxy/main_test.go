package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run when a goroutine outlives the tests. The ignored
// goroutines are fasthttp's, not the proxy's:
//   - updateServerDate: the Date header refresher, started by the first
//     fasthttp.Server of the process and never stopped;
//   - TCPDialer.tcpAddrsClean: the default dialer's process-wide DNS cache
//     cleaner, which returns once the cache is empty;
//   - HostClient.connsCleaner: after a client's last connection is closed
//     it sleeps out the rest of MaxIdleConnDuration (30 s), holding no
//     connection, and returns;
//   - workerPool.Start.func2: a stopped Server's idle-worker cleaner, which
//     sleeps out the rest of MaxIdleWorkerDuration (10 s) and returns;
//   - stackless.funcWorker: the process-wide workers of fasthttp's
//     compression writers, started on first use and never stopped.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp/stackless.funcWorker"),
	)
}
