// Package redistest starts a real redis-server for a test: on a free
// 127.0.0.1 port, without persistence, in the test's temporary directory,
// stopped by its PID when the test ends. It can stop and start the same
// server again (Redis-down tests), pause it (CLIENT PAUSE, slow-Redis
// tests) and send it single commands over a plain connection, without any
// Redis client library.
//
// When redis-server is not on PATH the test is skipped with a loud message,
// unless FRAGCACHE_REQUIRE_EXTERNAL=1, which turns that into a failure (CI
// sets it, so a missing server can never pass as a green run).
//
// It imports only the standard library and may be used by every package of
// the module, the end-to-end tests included.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv names the environment variable that makes a missing
// redis-server a test failure instead of a skip.
const RequireEnv = "FRAGCACHE_REQUIRE_EXTERNAL"

// startTimeout bounds how long Start waits for the server to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server process owned by a test. Its methods are safe
// for concurrent use.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	args []string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd     // guarded by mu; nil while stopped
	end chan struct{} // guarded by mu; closed when cmd has exited
}

// Start finds redis-server on PATH, starts it on a free loopback port with
// snapshots and the append-only file off, in a temporary directory, waits until it
// answers PING and registers its stop with t.Cleanup. extra holds further
// command-line options, for example "--maxmemory", "64mb".
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redistest: redis-server is not on PATH; tests against a real Redis did NOT run " +
			"(install Debian's redis-server, or set " + RequireEnv + "=1 to make this a failure)"
		if os.Getenv(RequireEnv) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), args: extra}
	var last error
	for range 5 { // a free port may be taken by someone else before redis binds it
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		if last = s.start(); last == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redistest: %v", last)
	return nil
}

// Addr is the server's host:port on 127.0.0.1.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// PID is the server process's id, or 0 while it is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop ends the server: SIGTERM to its PID, SIGKILL if it is still running
// after 5 s; it returns once the process has exited. Stopping a stopped
// server does nothing. Nothing survives a stop (no persistence).
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, end := s.cmd, s.end
	s.cmd, s.end = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-end:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-end
	}
}

// Restart starts the stopped server again on the same port, empty, and
// waits until it answers PING. It fails the test if it cannot.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

// Pause sends `CLIENT PAUSE <d> ALL`: for d the server answers no client's
// command (it still accepts connections). It fails the test if the command
// is refused.
func (s *Server) Pause(d time.Duration) {
	s.t.Helper()
	if _, err := s.Do("CLIENT", "PAUSE", strconv.FormatInt(d.Milliseconds(), 10), "ALL"); err != nil {
		s.t.Fatalf("redistest: CLIENT PAUSE: %v", err)
	}
}

// Do sends one command on a new connection and returns its reply: a string
// for simple and bulk strings, int64 for integers, nil for a nil reply, and
// []any for arrays. A Redis error reply is returned as an error.
func (s *Server) Do(args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		return nil, err
	}
	return readReply(bufio.NewReader(c))
}

// MustDo is Do that fails the test on an error.
func (s *Server) MustDo(args ...string) any {
	s.t.Helper()
	r, err := s.Do(args...)
	if err != nil {
		s.t.Fatalf("redistest: %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// Info returns the fields of `INFO <section>` as a map.
func (s *Server) Info(section string) map[string]string {
	s.t.Helper()
	r, ok := s.MustDo("INFO", section).(string)
	if !ok {
		s.t.Fatalf("redistest: INFO %s: not a string reply", section)
	}
	m := map[string]string{}
	for line := range strings.SplitSeq(r, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			m[k] = v
		}
	}
	return m
}

// start runs redis-server on s.port and waits for PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("already running")
	}
	logFile := filepath.Join(s.dir, "redis.log")
	args := append([]string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", logFile,
	}, s.args...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	end := make(chan struct{})
	go func() { _ = cmd.Wait(); close(end) }()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-end:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, tail(logFile))
		default:
		}
		if r, err := s.Do("PING"); err == nil && r == "PONG" {
			s.cmd, s.end = cmd, end
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-end
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %s", s.port, startTimeout, tail(logFile))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port nobody listened on a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last lines of the server's log, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, errors.New(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply type %q", line[0])
}
