package main

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// notOurs are the goroutines fasthttp runs for the whole process or lets
// end on their own schedule; none of them belongs to fragcache.
var notOurs = []goleak.Option{
	// The Date header refresher: started by the first fasthttp.Server of
	// the process and never stopped.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	// The default TCPDialer's DNS cache cleaner: process-wide, it returns
	// once the cache is empty.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
	// A HostClient's idle-connection cleaner: once the client's last
	// connection is closed it sleeps out the rest of MaxIdleConnDuration
	// (30 s) and returns. It holds no connection.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
	// A stopped Server's idle-worker cleaner: it sleeps out the rest of
	// MaxIdleWorkerDuration (10 s) and returns.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	// The process-wide workers of fasthttp's compression writers, started
	// on first use and never stopped.
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp/stackless.funcWorker"),
}

// afterTests run once every test has ended (files the tests made).
var afterTests []func()

// TestMain fails the run when a goroutine outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range afterTests {
		f()
	}
	client.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(notOurs...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
