package redistest

import (
	"net"
	"testing"
	"time"
)

func TestStartStopRestartPause(t *testing.T) {
	s := Start(t)
	if r := s.MustDo("PING"); r != "PONG" {
		t.Fatalf("PING = %v, want PONG", r)
	}
	if got := s.Info("server")["tcp_port"]; got == "6379" || got == "" {
		t.Fatalf("tcp_port = %q, want a free port other than 6379", got)
	}
	s.MustDo("SET", "k", "v")
	if r := s.MustDo("GET", "k"); r != "v" {
		t.Fatalf("GET k = %v, want v", r)
	}
	if r := s.MustDo("CONFIG", "GET", "save"); r.([]any)[1] != "" {
		t.Fatalf("save = %v, want empty", r)
	}

	s.Stop()
	if s.PID() != 0 {
		t.Fatal("PID after Stop is not 0")
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("dial after Stop succeeded")
	}
	s.Restart()
	if r := s.MustDo("GET", "k"); r != nil {
		t.Fatalf("GET k after restart = %v, want nil (no persistence)", r)
	}

	s.Pause(300 * time.Millisecond)
	start := time.Now()
	s.MustDo("PING")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("PING during CLIENT PAUSE answered after %v, want about 300ms", d)
	}
}
