package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "fragcache.yaml")
	os.WriteFile(file, []byte(`
upstream: http://file:1
wait: 1s
fragment_ttl: 2m
cache_size: 1GiB
allow_host: [cdn.example, "api.example:8443"]
fragments:
  - name: weather
    match: /widgets/weather
    share: true
    ttl: 5m
`), 0o600)
	env := envOf(map[string]string{
		"FRAGCACHE_CONFIG":        file,
		"FRAGCACHE_WAIT":          "2s",
		"FRAGCACHE_UPSTREAM":      "http://env:2",
		"FRAGCACHE_MAX_PAGE_SIZE": "256MB",
	})
	c, err := loadConfig([]string{"--upstream", "http://flag:3", "--esi-cookie", "a", "--esi-cookie", "b,c"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"flag beats env", c.Upstream, "http://flag:3"},
		{"env beats file", c.Wait, 2 * time.Second},
		{"file beats default", c.FragmentTTL, 2 * time.Minute},
		{"default", c.StaleTTL, 10 * time.Minute},
		{"IEC size", c.CacheSize, int64(1 << 30)},
		{"SI size", c.MaxPageSize, int64(256_000_000)},
		{"YAML list", strings.Join(c.AllowHost, " "), "cdn.example api.example:8443"},
		{"repeated and comma flags", strings.Join(c.ESICookie, " "), "a b c"},
		{"rule", c.Fragments[0], fragmentRule{Name: "weather", Match: "/widgets/weather", Share: true, TTL: 5 * time.Minute}},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestConfigErrorsAllAtOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	os.WriteFile(file, []byte("upstream: http://x:1\nwiat: 1s\nfragments:\n  - name: a\n    match: /a\n    colour: red\n"), 0o600)
	_, err := loadConfig([]string{"--config", file, "--wait", "soon", "--esi-trigger", "always", "--max-depth", "0"}, envOf(nil), io.Discard)
	if !errors.Is(err, errUsage) {
		t.Fatalf("err = %v, want a usage error", err)
	}
	for _, want := range []string{
		`bad.yaml:2: unknown key "wiat"`,
		`bad.yaml:6: unknown key "colour" in a fragment rule`,
		`flag --wait: "soon" is not a duration`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	_, err = loadConfig([]string{"--upstream", "ftp://x/path", "--esi-trigger", "always", "--max-depth", "0", "--log-format", "xml"}, envOf(nil), io.Discard)
	for _, want := range []string{"--upstream", "--esi-trigger", "--max-depth", "--log-format"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation error lacks %s: %v", want, err)
		}
	}
}

func TestConfigRules(t *testing.T) {
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"upstream required", nil, false},
		{"demo alone", []string{"--demo"}, true},
		{"demo with upstream", []string{"--demo", "--upstream", "http://a"}, false},
		{"upstream with path", []string{"--upstream", "http://a/app"}, false},
		{"upstream https with port", []string{"--upstream", "https://a:8443"}, true},
		{"bad allow host", []string{"--upstream", "http://a", "--allow-host", "http://b"}, false},
		{"negative wait", []string{"--upstream", "http://a", "--wait", "-1s"}, false},
		{"zero wait", []string{"--upstream", "http://a", "--wait", "0"}, true},
		// Allocated whole at start: an extra few zeros is an error, not an
		// out-of-memory crash.
		{"huge refresh queue", []string{"--upstream", "http://a", "--refresh-queue", "100000000000"}, false},
		{"huge fetch concurrency", []string{"--upstream", "http://a", "--fetch-concurrency", "100000000"}, false},
		{"large refresh queue", []string{"--upstream", "http://a", "--refresh-queue", "1048576"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, envOf(nil), io.Discard)
			if (err == nil) != tc.ok {
				t.Errorf("loadConfig(%q) = %v, want ok=%v", tc.args, err, tc.ok)
			}
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"--version"}, envOf(nil), &out, &errb)
	if err != nil || !strings.HasPrefix(out.String(), "fragcache ") {
		t.Errorf("--version: %v %q", err, out.String())
	}
	err = run(context.Background(), []string{"--wait", "x"}, envOf(nil), &out, &errb)
	if code := exitCode(err, io.Discard); code != 2 {
		t.Errorf("bad flag: exit %d, want 2", code)
	}
	errb.Reset()
	err = run(context.Background(), []string{"--help"}, envOf(nil), &out, &errb)
	if code := exitCode(err, io.Discard); code != 0 || !strings.Contains(errb.String(), "FRAGCACHE_WAIT") {
		t.Errorf("--help: exit %d, usage %q", code, errb.String())
	}
}

func TestHealthcheck(t *testing.T) {
	fc := startFragcache(t, "--upstream", "http://127.0.0.1:9")
	admin := strings.TrimPrefix(fc.admin, "http://")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"healthcheck", "--admin-listen", admin}, envOf(nil), &out, io.Discard); err != nil {
		t.Errorf("healthcheck of a running fragcache: %v", err)
	}
	fc.stop()
	if err := run(context.Background(), []string{"healthcheck", "--admin-listen", admin, "--timeout", "500ms"}, envOf(nil), &out, io.Discard); err == nil {
		t.Error("healthcheck of a stopped fragcache succeeded")
	}
}

// The server takes admin_listen from the --config file named by
// FRAGCACHE_CONFIG (the Kubernetes manifests do this); the image's
// HEALTHCHECK, `fragcache healthcheck` with the same environment, must
// probe that address too, and the env var still beats the file.
func TestHealthcheckReadsConfigFile(t *testing.T) {
	fc := startFragcache(t, "--upstream", "http://127.0.0.1:9")
	admin := strings.TrimPrefix(fc.admin, "http://")
	closed := deadPort(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "fragcache.yaml")
	if err := os.WriteFile(file, []byte("upstream: http://127.0.0.1:9\nadmin_listen: \""+admin+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	args := []string{"healthcheck", "--timeout", "2s"}
	if err := run(context.Background(), args, envOf(map[string]string{"FRAGCACHE_CONFIG": file}), &out, io.Discard); err != nil {
		t.Errorf("healthcheck with admin_listen %s in the config file: %v", admin, err)
	}
	env := envOf(map[string]string{"FRAGCACHE_CONFIG": file, "FRAGCACHE_ADMIN_LISTEN": closed})
	if err := run(context.Background(), []string{"healthcheck", "--timeout", "500ms"}, env, &out, io.Discard); err == nil {
		t.Errorf("healthcheck with FRAGCACHE_ADMIN_LISTEN=%s (closed) over the file's %s succeeded", closed, admin)
	}
}
