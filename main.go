// Command fragcache is a reverse proxy that composes HTML pages from ESI
// fragments without ever making a user wait for a slow one.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// run subscribes to SIGHUP itself (a reload); the environment's names
	// are given for the warnings about FRAGCACHE_* variables that match
	// no setting.
	err := runWith(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, hooks{environ: os.Environ})
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "fragcache:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "fragcache:", err)
		return 1
	}
}
