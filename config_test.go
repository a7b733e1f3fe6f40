package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"fragcache/proxy"
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
	c, err := loadConfig([]string{"--upstream", "http://flag:3", "--esi-cookie", "a", "--esi-cookie", "b,c"}, env, nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"flag beats env", c.Proxy.Upstream, "http://flag:3"},
		{"env beats file", c.Proxy.Wait, 2 * time.Second},
		{"file beats default", c.Proxy.FragmentTTL, 2 * time.Minute},
		{"default", c.Proxy.StaleTTL, 10 * time.Minute},
		{"IEC size", c.Proxy.CacheSize, int64(1 << 30)},
		{"SI size", c.Proxy.MaxPageSize, int64(256_000_000)},
		{"YAML list", strings.Join(c.Proxy.AllowHosts, " "), "cdn.example api.example:8443"},
		{"repeated and comma flags", strings.Join(c.Proxy.ESICookies, " "), "a b c"},
		{"rule", c.Proxy.Fragments[0], proxy.FragmentRule{Name: "weather", Match: "/widgets/weather", Share: true, TTL: 5 * time.Minute}},
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
	_, err := loadConfig([]string{"--config", file, "--wait", "soon", "--esi-trigger", "always", "--max-depth", "0"}, envOf(nil), nil)
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
	_, err = loadConfig([]string{"--upstream", "ftp://x/path", "--esi-trigger", "always", "--max-depth", "0", "--log-format", "xml"}, envOf(nil), nil)
	for _, want := range []string{"--upstream", "--esi-trigger", "--max-depth", "--log-format"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation error lacks %s: %v", want, err)
		}
	}
}

// TestConfigStreamFalse: a fragment rule's `stream: false` reaches the
// proxy's rule, and a value that is not a boolean is an error.
func TestConfigStreamFalse(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.yaml")
	os.WriteFile(file, []byte("upstream: http://a:1\nfragments:\n  - name: a\n    match: /a\n    stream: false\n  - name: b\n    match: /b\n"), 0o600)
	c, err := loadConfig([]string{"--config", file}, envOf(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fr := c.Proxy.Fragments; len(fr) != 2 || !fr[0].NoStream || fr[1].NoStream {
		t.Fatalf("rules = %+v, want only a with NoStream", fr)
	}
	os.WriteFile(file, []byte("upstream: http://a:1\nfragments:\n  - name: a\n    match: /a\n    stream: sometimes\n"), 0o600)
	if _, err := loadConfig([]string{"--config", file}, envOf(nil), nil); err == nil || !strings.Contains(err.Error(), "fragments.stream") {
		t.Fatalf("stream: sometimes gave %v", err)
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
		{"stream budget", []string{"--upstream", "http://a", "--stream-budget", "3s"}, true},
		{"stream budget within the wait", []string{"--upstream", "http://a", "--wait", "1s", "--stream-budget", "1s"}, false},
		{"stream budget past the fetch timeout", []string{"--upstream", "http://a", "--stream-budget", "11s"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(tc.args, envOf(nil), nil)
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

// With nothing configured but the upstream, the proxy runs with exactly
// proxy.DefaultConfig: main restates no default of the proxy's.
func TestProxyDefaultsComeFromProxy(t *testing.T) {
	c, err := loadConfig([]string{"--upstream", "http://a:1"}, envOf(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := proxy.DefaultConfig()
	want.Upstream = "http://a:1"
	if !reflect.DeepEqual(c.Proxy, want) {
		t.Errorf("proxy settings with nothing configured:\n got %+v\nwant %+v", c.Proxy, want)
	}
}

// Each error names where its value came from: the flag, the environment
// variable, or the file and line (of the list item, of the rule), for
// main's own checks and for the proxy's alike.
func TestConfigErrorsNameTheirSource(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "fragcache.yaml")
	yaml := "upstream: http://a:1\n" + // 1
		"wait: -1s\n" + // 2
		"allow_host:\n" + // 3
		"  - cdn.example\n" + // 4
		"  - http://bad\n" + // 5
		"fragments:\n" + // 6
		"  - name: ok\n" + // 7
		"    match: /ok\n" + // 8
		"  - name: other\n" + // 9
		"    match: /x\n" + // 10
		"preserve_host: true\n" + // 11
		"listen: nowhere\n" // 12
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"FRAGCACHE_CONFIG": file, "FRAGCACHE_MAX_DEPTH": "0", "FRAGCACHE_FETCH_QUEUE": "lots"})
	_, err := loadConfig([]string{"--cache-size", "1KiB", "--trusted-proxy", "10.0.0.0/8,10.1.1.1/8", "--drain-delay", "-1s"}, env, nil)
	if !errors.Is(err, errUsage) {
		t.Fatalf("err = %v, want a usage error", err)
	}
	for _, want := range []string{
		"fragcache.yaml:2: wait: must not be negative (got -1s)",
		`fragcache.yaml:5: allow_host: "http://bad": want host or host:port`,
		`fragcache.yaml:9: fragments: the name "other" is reserved`,
		"fragcache.yaml:11: preserve_host: requires --public-host",
		`fragcache.yaml:12: listen: "nowhere" is not host:port`,
		"env FRAGCACHE_MAX_DEPTH: must be at least 1 (got 0)",
		`env FRAGCACHE_FETCH_QUEUE: "lots" is not a whole number`,
		"flag --cache-size: must be at least 1MiB (got 1KiB)",
		`flag --trusted-proxy: "10.1.1.1/8": has bits set past its /8`,
		"flag --drain-delay: must not be negative (got -1s)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	for _, field := range []string{"PublicHosts", "PreserveHost", "MaxDepth", "AllowHosts", "Fragments[", "\nproxy: "} {
		if strings.Contains(err.Error(), field) {
			t.Errorf("the proxy's name %q leaks into the command line's errors:\n%v", field, err)
		}
	}
}

// The new proxy settings are mapped from every source.
func TestNewProxySettings(t *testing.T) {
	env := envOf(map[string]string{"FRAGCACHE_TRUSTED_PROXY": "10.0.0.0/8, fd00::/8"})
	c, err := loadConfig([]string{"--upstream", "http://a:1", "--fetch-queue", "10", "--scope-cookie", "sid",
		"--scope-cookie", "auth,lang", "--preserve-host", "--public-host", "www.example"}, env, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Proxy
	if p.FetchQueue != 10 || strings.Join(p.ScopeCookies, " ") != "sid auth lang" ||
		strings.Join(p.TrustedProxies, " ") != "10.0.0.0/8 fd00::/8" || !p.PreserveHost {
		t.Errorf("FetchQueue %d, ScopeCookies %q, TrustedProxies %q, PreserveHost %v",
			p.FetchQueue, p.ScopeCookies, p.TrustedProxies, p.PreserveHost)
	}
	if _, err := loadConfig([]string{"--upstream", "http://a:1", "--preserve-host"}, envOf(nil), nil); err == nil ||
		!strings.Contains(err.Error(), "flag --preserve-host: requires --public-host") {
		t.Errorf("--preserve-host without --public-host: %v", err)
	}
}

// --help prints the usage once (the flag package printed it a second
// time).
func TestHelpPrintsUsageOnce(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var stderr bytes.Buffer
		err := run(context.Background(), []string{arg}, envOf(nil), io.Discard, &stderr)
		if code := exitCode(err, io.Discard); code != 0 {
			t.Errorf("%s: exit %d", arg, code)
		}
		if n := strings.Count(stderr.String(), "Usage: fragcache"); n != 1 {
			t.Errorf("%s printed the usage %d times", arg, n)
		}
	}
}

// An unknown flag says so in one line, first, with the nearest flag; no
// usage is printed.
func TestUnknownFlagOneLine(t *testing.T) {
	tests := []struct{ arg, want string }{
		{"--upstrem", "unknown flag --upstrem (did you mean --upstream?)"},
		{"--wiat", "unknown flag --wiat (did you mean --wait?)"},
		{"--Fetch-Queue=3", "unknown flag --Fetch-Queue (did you mean --fetch-queue?)"},
		{"--trusted-proxies", "unknown flag --trusted-proxies (did you mean --trusted-proxy?)"},
		{"--frobnicate", "unknown flag --frobnicate (see --help)"},
	}
	for _, tc := range tests {
		var stderr, out bytes.Buffer
		err := run(context.Background(), []string{tc.arg, "http://a:1"}, envOf(nil), io.Discard, &stderr)
		if stderr.Len() != 0 {
			t.Errorf("%s: printed before the error:\n%s", tc.arg, stderr.String())
		}
		if code := exitCode(err, &out); code != 2 {
			t.Errorf("%s: exit %d, want 2", tc.arg, code)
		}
		if got := out.String(); got != "fragcache: invalid configuration: "+tc.want+"\n" {
			t.Errorf("%s: stderr %q, want the one line %q", tc.arg, got, tc.want)
		}
	}
}

// An unknown YAML key names the nearest known one, in the settings and in
// a fragment rule.
func TestUnknownYAMLKeySuggestion(t *testing.T) {
	file := filepath.Join(t.TempDir(), "fragcache.yaml")
	os.WriteFile(file, []byte("upstream: http://a:1\nfetch_que: 3\nfragment:\n  - match: /a\nfragments:\n  - mach: /a\n    naem: a\n"), 0o600)
	_, err := loadConfig([]string{"--config", file}, envOf(nil), nil)
	for _, want := range []string{
		`fragcache.yaml:2: unknown key "fetch_que" (did you mean fetch_queue?)`,
		`fragcache.yaml:3: unknown key "fragment" (did you mean fragments?)`,
		`fragcache.yaml:6: unknown key "mach" in a fragment rule (did you mean match?)`,
		`fragcache.yaml:7: unknown key "naem" in a fragment rule (did you mean name?)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// A FRAGCACHE_* variable that matches no setting is a warning that never
// shows its value; the env-only secrets and the variables of the tests
// and checks are not warned about.
func TestUnknownEnvironmentWarnings(t *testing.T) {
	environ := []string{
		"FRAGCACHE_UPSTREM=http://secret-value", "FRAGCACHE_DEMO=1", "FRAGCACHE_WAIT=1s", "FRAGCACHE_CONFIG=",
		"FRAGCACHE_REDIS_PASSWORD=secret-value", "FRAGCACHE_PURGE_TOKEN=secret-value", "FRAGCACHE_DEBUG_TOKEN=secret-value",
		"FRAGCACHE_REQUIRE_EXTERNAL=1", "FRAGCACHE_SOAK=1", "FRAGCACHE_SOAK_CACHE_MIB=64", "FRAGCACHE_BIN=/x",
		"FRAGCACHE_GOTOOLCHAIN=go1.26.10", "LANG=C.UTF-8", "FRAGCACHEX=1",
	}
	c, err := loadConfig([]string{"--upstream", "http://a:1"}, envOf(nil), environ)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"environment variable FRAGCACHE_DEMO matches no setting: --demo is a flag only",
		"environment variable FRAGCACHE_UPSTREM matches no setting (did you mean FRAGCACHE_UPSTREAM?)",
	}
	if got := strings.Join(c.warnings, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}

	// run logs them at start.
	var stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runWith(ctx, []string{"--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
			"--drain-delay", "0"}, envOf(nil), io.Discard, &stderr,
			hooks{environ: func() []string { return environ }, ready: func(_, _ net.Addr) { cancel() }})
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"level":"WARN","msg":"environment variable FRAGCACHE_UPSTREM matches no setting`) {
		t.Errorf("no warning logged at start:\n%s", logs)
	}
	if strings.Contains(logs, "secret-value") {
		t.Errorf("a variable's value reached the log:\n%s", logs)
	}
}

// Secrets never appear in errors; one given as a flag is warned about,
// naming its environment form (DESIGN rule 24).
func TestSecretsStayOut(t *testing.T) {
	const secret = "s3cret-hmac-key-0123456789"
	c, err := loadConfig([]string{"--upstream", "http://a:1", "--scope-secret", secret}, envOf(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.warnings, "\n"); !strings.Contains(got, "set FRAGCACHE_SCOPE_SECRET instead") || strings.Contains(got, secret) {
		t.Errorf("warnings for a secret flag: %q", got)
	}
	if string(c.Proxy.ScopeSecret) != secret {
		t.Errorf("ScopeSecret = %q", c.Proxy.ScopeSecret)
	}
	file := filepath.Join(t.TempDir(), "fragcache.yaml")
	os.WriteFile(file, []byte("upstream: http://a:1\nscope_secret: ["+secret+"]\n"), 0o600)
	_, err = loadConfig([]string{"--config", file, "--wait", "x"}, envOf(map[string]string{"FRAGCACHE_SCOPE_SECRET": secret}), nil)
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "scope_secret must be a single value") {
		t.Errorf("error: %v", err)
	}
	var usage bytes.Buffer
	printUsage(&usage, newConfig().opts)
	if !strings.Contains(usage.String(), "(default random per process)") {
		t.Errorf("--help does not describe the scope secret's default:\n%s", usage.String())
	}
}

// README's configuration table and --help agree: every flag once, its
// environment variable, YAML key, default, meaning and what SIGHUP does
// with it.
func TestReadmeFlagTableMatchesHelp(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var usage bytes.Buffer
	opts := newConfig().opts
	printUsage(&usage, opts)
	rows := map[string][]string{}
	var order []string
	for _, line := range strings.Split(string(readme), "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.ReplaceAll(strings.TrimSpace(cells[i]), "`", "")
		}
		if len(cells) != 6 {
			t.Errorf("README row has %d cells, want 6: %s", len(cells), line)
			continue
		}
		if _, dup := rows[cells[0]]; dup {
			t.Errorf("README lists %s twice", cells[0])
		}
		rows[cells[0]] = cells
		order = append(order, cells[0])
	}
	for i, o := range opts {
		flag := "--" + o.name
		cells, ok := rows[flag]
		if !ok {
			t.Errorf("README's table lacks %s", flag)
			continue
		}
		env, key := o.env(), o.yamlKey()
		if o.flagOnly {
			env, key = "(flag only)", ""
		}
		if o.noYAML {
			key = ""
		}
		reload := "restart"
		if o.live {
			reload = "live"
		}
		want := []string{flag, env, key, o.defaultText(), reload, o.help}
		for j, name := range []string{"flag", "environment", "YAML key", "default", "reload", "meaning"} {
			if cells[j] != want[j] {
				t.Errorf("%s: README's %s is %q, --help's %q", flag, name, cells[j], want[j])
			}
		}
		if i < len(order) && order[i] != flag {
			t.Errorf("README row %d is %s, --help's %s", i+1, order[i], flag)
		}
		lines := fmt.Sprintf("  --%-18s %s\n      %s (", o.name, env, o.help)
		at := strings.Index(usage.String(), lines)
		if at < 0 {
			t.Errorf("--help lacks the lines of %s", flag)
			continue
		}
		help, _, _ := strings.Cut(usage.String()[at+len(lines):], "\n")
		if marked := strings.HasSuffix(help, "; reload: live)"); marked != o.live {
			t.Errorf("--help marks %s reload: live %v, want %v (%q)", flag, marked, o.live, help)
		}
	}
	if len(rows) != len(opts) {
		t.Errorf("README lists %d flags, --help %d", len(rows), len(opts))
	}
}

// go.mod names the Go release CI builds with, so that a plain go build
// (README) does not use an older, vulnerable one.
func TestToolchainMatchesCI(t *testing.T) {
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	check, err := os.ReadFile(".ci/check")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^toolchain (go\S+)$`).FindSubmatch(mod)
	c := regexp.MustCompile(`GOTOOLCHAIN=\$\{FRAGCACHE_GOTOOLCHAIN:-(go[^}]+)\}`).FindSubmatch(check)
	if m == nil || c == nil || string(m[1]) != string(c[1]) {
		t.Errorf("go.mod toolchain %q, .ci/check %q: want one release in both", m, c)
	}
}

// The settings the command line calls live are exactly those the proxy
// applies on Reload (proxy.LiveFields), and DESIGN rule 35's: a flag
// marked live that the proxy ignored would be logged as applied while
// nothing changed.
func TestLiveOptionsMatchTheProxy(t *testing.T) {
	proxyLive := proxy.LiveFields()
	seen := map[string]bool{}
	for _, o := range newConfig().opts {
		if o.field == "" {
			continue
		}
		seen[o.field] = true
		if want := slices.Contains(proxyLive, o.field); o.live != want {
			t.Errorf("--%s (proxy.Config.%s): live %v, proxy.LiveFields says %v", o.name, o.field, o.live, want)
		}
	}
	for _, f := range proxyLive {
		if !seen[f] && f != "Fragments" {
			t.Errorf("proxy.Config.%s is live but no flag sets it", f)
		}
	}
	var live []string
	for _, o := range newConfig().opts {
		if o.live {
			live = append(live, o.name)
		}
	}
	want := []string{"wait", "fragment-ttl", "stale-ttl", "stream-budget", "cache-size", "allow-host", "esi-cookie", "max-depth",
		"max-includes", "max-wait", "max-page-size", "max-fragment-size", "purge-token-file", "tls-cert", "tls-key"}
	if !slices.Equal(live, want) {
		t.Errorf("live flags %q, want DESIGN rule 35's that exist: %q", live, want)
	}
}

// TestDemoImpliesStreamBudget: --demo streams with a 4s budget (DESIGN
// rule 34) unless the budget is given, or a given --wait or
// --fetch-timeout leaves no room for it.
func TestDemoImpliesStreamBudget(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want time.Duration
	}{
		{[]string{"--demo"}, nil, 4 * time.Second},
		{[]string{"--demo", "--stream-budget", "0"}, nil, 0},
		{[]string{"--demo", "--stream-budget", "2s"}, nil, 2 * time.Second},
		{[]string{"--demo"}, map[string]string{"FRAGCACHE_STREAM_BUDGET": "0"}, 0},
		{[]string{"--demo", "--wait", "5s", "--fetch-timeout", "10s"}, nil, 0},
		{[]string{"--demo", "--fetch-timeout", "3s"}, nil, 0},
		{[]string{"--upstream", "http://app:8080"}, nil, 0},
	} {
		c, err := loadConfig(tc.args, envOf(tc.env), nil)
		if err != nil {
			t.Errorf("%q %v: %v", tc.args, tc.env, err)
			continue
		}
		if c.Proxy.StreamBudget != tc.want {
			t.Errorf("%q %v: stream budget %v, want %v", tc.args, tc.env, c.Proxy.StreamBudget, tc.want)
		}
	}
}
