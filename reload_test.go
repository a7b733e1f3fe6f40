package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// reloadable is one fragcache started in-process whose reloads the test
// triggers through run's reload seam and waits for.
type reloadable struct {
	front, admin string
	hup          chan os.Signal
	results      chan error
	log          *lockedBuffer
}

// startReloadable runs fragcache on loopback ports with args added to
// the test defaults; hup nil subscribes it to the process's real SIGHUP.
func startReloadable(t *testing.T, hup chan os.Signal, args ...string) *reloadable {
	t.Helper()
	base := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--drain-delay", "0",
		"--access-log=false", "--shutdown-timeout", "5s"}
	r := &reloadable{hup: hup, results: make(chan error, 4), log: &lockedBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	hk := hooks{
		ready:    func(f, a net.Addr) { addrs <- [2]net.Addr{f, a} },
		reloaded: func(err error) { r.results <- err },
	}
	if hup != nil {
		hk.reload = hup
	}
	go func() {
		done <- runWith(ctx, append(base, args...), func(string) string { return "" }, io.Discard, r.log, hk)
	}()
	select {
	case a := <-addrs:
		r.front, r.admin = a[0].String(), "http://"+a[1].String()
	case err := <-done:
		cancel()
		t.Fatalf("fragcache did not start: %v\n%s", err, r.log.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("fragcache did not start within 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fragcache stopped with %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("fragcache did not stop within 15s")
		}
	})
	return r
}

// sighup asks for a reload and returns how it went.
func (r *reloadable) sighup(t *testing.T) error {
	t.Helper()
	r.hup <- syscall.SIGHUP
	return r.wait(t)
}

func (r *reloadable) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.results:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no reload within 5s")
		return nil
	}
}

// gauge reads one unlabelled series from /metrics.
func (r *reloadable) gauge(t *testing.T, name string) float64 {
	t.Helper()
	_, body := get(t, r.admin+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// writeCert writes a fresh self-signed certificate for 127.0.0.1 with
// the given serial to certFile and keyFile, and adds it to pool.
func writeCert(t *testing.T, certFile, keyFile string, serial int64, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("fragcache test %d", serial)},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	crt, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool.AddCert(crt)
}

// tlsGet makes one request on a new TLS connection and returns the
// answer's body and the serial of the certificate the server showed.
func tlsGet(t *testing.T, pool *x509.CertPool, url string) (string, int64) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		t.Fatalf("GET %s: no TLS connection state", url)
	}
	return string(b), resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

// The front listener speaks TLS with --tls-cert/--tls-key: a real TLS
// client gets the composed page, and the upstream learns the client's
// scheme from X-Forwarded-Proto (the handler sees a TLS connection).
func TestTLSFront(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page":   esiPage(`<p>A<esi:include src="/frag"/>B</p>`),
		"/frag":   frag("F", 0, "max-age=60"),
		"/passed": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") },
	})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := x509.NewCertPool()
	writeCert(t, cert, key, 1, pool)
	fc := startReloadable(t, make(chan os.Signal, 1), "--upstream", o.URL, "--wait", "2s", "--tls-cert", cert, "--tls-key", key)

	body, serial := tlsGet(t, pool, "https://"+fc.front+"/page")
	if body != "<p>AFB</p>" || serial != 1 {
		t.Errorf("GET https /page = %q from certificate %d, want %q from 1", body, serial, "<p>AFB</p>")
	}
	if body, _ := tlsGet(t, pool, "https://"+fc.front+"/passed"); body != "plain" {
		t.Errorf("GET https /passed = %q, want plain", body)
	}
	for _, path := range []string{"/page", "/passed"} {
		reqs := o.requests(path)
		if len(reqs) != 1 {
			t.Fatalf("%s reached the upstream %d times, want 1", path, len(reqs))
		}
		if got := reqs[0].Header.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("%s: upstream got X-Forwarded-Proto %q, want https", path, got)
		}
	}
	// Plain HTTP on the TLS port is no request fragcache serves.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + fc.front + "/passed"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP on the TLS listener answered %d", resp.StatusCode)
		}
	}
	if n := len(o.requests("/passed")); n != 1 {
		t.Errorf("plain HTTP on the TLS listener reached the upstream (%d requests)", n)
	}
}

// SIGHUP reloads the certificate: the next handshake shows the new one;
// a broken new certificate keeps the one in use, says why, and counts as
// a failed reload.
func TestTLSCertificateReloadOnSIGHUP(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
	})
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := x509.NewCertPool()
	writeCert(t, cert, key, 1, pool)
	fc := startReloadable(t, make(chan os.Signal, 1), "--upstream", o.URL, "--tls-cert", cert, "--tls-key", key)
	url := "https://" + fc.front + "/"
	if _, serial := tlsGet(t, pool, url); serial != 1 {
		t.Fatalf("certificate %d before the reload, want 1", serial)
	}

	writeCert(t, cert, key, 2, pool)
	if _, serial := tlsGet(t, pool, url); serial != 1 {
		t.Errorf("certificate %d before SIGHUP, want 1: files are read on reload only", serial)
	}
	if err := fc.sighup(t); err != nil {
		t.Fatalf("reload with a good new certificate: %v", err)
	}
	if _, serial := tlsGet(t, pool, url); serial != 2 {
		t.Errorf("certificate %d after SIGHUP, want the new one, 2", serial)
	}
	if v := fc.gauge(t, "fragcache_config_last_reload_successful"); v != 1 {
		t.Errorf("fragcache_config_last_reload_successful = %v after a good reload, want 1", v)
	}
	if !strings.Contains(fc.log.String(), "front certificate reloaded") {
		t.Errorf("no log line for the new certificate:\n%s", fc.log.String())
	}

	if err := os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := fc.sighup(t)
	if err == nil || !strings.Contains(err.Error(), "flag --tls-cert") {
		t.Errorf("reload with a broken certificate: %v, want an error naming --tls-cert", err)
	}
	if _, serial := tlsGet(t, pool, url); serial != 2 {
		t.Errorf("certificate %d after a broken reload, want the one in use, 2", serial)
	}
	if v := fc.gauge(t, "fragcache_config_last_reload_successful"); v != 0 {
		t.Errorf("fragcache_config_last_reload_successful = %v after a failed reload, want 0", v)
	}
	logs := fc.log.String()
	if !strings.Contains(logs, "config reload failed; the running configuration is kept") || !strings.Contains(logs, "tls-cert") {
		t.Errorf("the failed reload is not logged with its reason:\n%s", logs)
	}
}

// SIGHUP re-reads the YAML file: a broken file (a syntax error, an
// invalid value, an unknown key) keeps the running configuration and the
// log names the file and line; a good file applies its live settings
// (wait here) to the next request and names the changed settings that
// need a restart, which the running proxy keeps. The reload metrics
// follow.
func TestSIGHUPReloadsTheConfigFile(t *testing.T) {
	routes := map[string]http.HandlerFunc{}
	for _, d := range []string{"a", "b", "c", "d"} {
		routes["/"+d+"/page"] = esiPage(`<p><esi:include src="slow">placeholder</esi:include></p>`)
		routes["/"+d+"/slow"] = frag("SLOW", 300*time.Millisecond, "max-age=60")
	}
	o := newOrigin(t, routes)
	file := filepath.Join(t.TempDir(), "fragcache.yaml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("upstream: " + o.URL + "\nwait: 3s\nmax_wait: 3s\n")
	fc := startReloadable(t, make(chan os.Signal, 1), "--config", file)
	page := func(d string) string {
		_, body := get(t, "http://"+fc.front+"/"+d+"/page")
		return body
	}
	if got := page("a"); got != "<p>SLOW</p>" {
		t.Fatalf("page with wait 3s = %q, want the slow fragment in it", got)
	}
	if v := fc.gauge(t, "fragcache_config_last_reload_successful"); v != 1 {
		t.Errorf("fragcache_config_last_reload_successful = %v at start, want 1", v)
	}
	started := fc.gauge(t, "fragcache_config_last_reload_success_timestamp_seconds")
	if now := float64(time.Now().Unix()); started < now-60 || started > now+1 {
		t.Errorf("reload timestamp at start = %v, want about %v", started, now)
	}

	for _, bad := range []struct {
		name, body string
		want       []string
	}{
		{"invalid value and unknown key", "upstream: " + o.URL + "\nwait: 0s\nmax_depth: 0\nwiat: 1s\n",
			[]string{"fragcache.yaml:3: max_depth: must be at least 1", `fragcache.yaml:4: unknown key "wiat" (did you mean wait?)`}},
		{"syntax error", "upstream: " + o.URL + "\nwait: 0s\nfragments:\n  - name: x\n    match: [/x\n",
			[]string{"fragcache.yaml:4: did not find expected"}},
		{"invalid rule", "upstream: " + o.URL + "\nwait: 0s\nfragments:\n  - name: x\n    match: nope\n",
			[]string{"fragcache.yaml:4: fragments: a rule needs match"}},
	} {
		write(bad.body)
		err := fc.sighup(t)
		for _, want := range bad.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: reload: %v, want it to say %q", bad.name, err, want)
			}
		}
		logs := fc.log.String()
		if !strings.Contains(logs, "config reload failed; the running configuration is kept") || !strings.Contains(logs, bad.want[0]) {
			t.Errorf("%s: the failed reload is not logged with file and line:\n%s", bad.name, logs)
		}
		if v := fc.gauge(t, "fragcache_config_last_reload_successful"); v != 0 {
			t.Errorf("%s: fragcache_config_last_reload_successful = %v, want 0", bad.name, v)
		}
		if ts := fc.gauge(t, "fragcache_config_last_reload_success_timestamp_seconds"); ts != started {
			t.Errorf("%s: reload timestamp moved to %v on a failed reload, want %v", bad.name, ts, started)
		}
	}
	// Every broken file said wait: 0s; the running wait (3s) still holds.
	if got := page("b"); got != "<p>SLOW</p>" {
		t.Errorf("page after failed reloads = %q, want the running configuration (wait 3s) to compose it", got)
	}

	write("upstream: " + o.URL + "\nwait: 0s\nmax_wait: 3s\nfetch_concurrency: 8\nfragments:\n  - name: slow\n    match: /c/\n")
	if err := fc.sighup(t); err != nil {
		t.Fatalf("reload of a good file: %v", err)
	}
	logs := fc.log.String()
	if !strings.Contains(logs, "need a restart and take effect then") || !strings.Contains(logs, `"needs_restart":"fetch_concurrency"`) ||
		!strings.Contains(logs, `"applied":"wait,fragments"`) {
		t.Errorf("the reload does not name what it applied (wait, fragments) and what needs a restart (fetch_concurrency):\n%s", logs)
	}
	if v := fc.gauge(t, "fragcache_config_last_reload_successful"); v != 1 {
		t.Errorf("fragcache_config_last_reload_successful = %v after a good file, want 1", v)
	}
	if ts := fc.gauge(t, "fragcache_config_last_reload_success_timestamp_seconds"); ts <= started {
		t.Errorf("reload timestamp %v after a good reload, want later than the start's %v", ts, started)
	}
	// wait 0 applies to the next page: it no longer waits for the slow
	// fragment.
	start := time.Now()
	if got := page("c"); got != "<p>placeholder</p>" {
		t.Errorf("page after reloading wait: 0 = %q, want the placeholder at once", got)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("page after reloading wait: 0 took %s, want no wait for the 300ms fragment", d)
	}
	// The same restart setting is named again by the next reload, since it
	// still waits for the restart.
	write("upstream: " + o.URL + "\nwait: 3s\nmax_wait: 3s\nfetch_concurrency: 8\n")
	if err := fc.sighup(t); err != nil {
		t.Fatalf("second reload: %v", err)
	}
	if n := strings.Count(fc.log.String(), `"needs_restart":"fetch_concurrency"`); n != 2 {
		t.Errorf("fetch_concurrency named as needing a restart by %d reloads, want 2", n)
	}
	if got := page("d"); got != "<p>SLOW</p>" {
		t.Errorf("page after reloading wait: 3s = %q, want the slow fragment again", got)
	}
}

// The process's real SIGHUP reaches run, which reloads instead of the
// process ending with status 129 (the default action).
func TestRealSIGHUPReloads(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
	})
	fc := startReloadable(t, nil, "--upstream", o.URL)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := fc.wait(t); err != nil {
		t.Errorf("reload on SIGHUP: %v", err)
	}
	if _, body := get(t, "http://"+fc.front+"/"); body != "ok" {
		t.Errorf("after SIGHUP: %q, want ok", body)
	}
}

// configFile is a YAML file that a test rewrites between reloads.
type configFile string

func newConfigFile(t *testing.T) configFile {
	return configFile(filepath.Join(t.TempDir(), "fragcache.yaml"))
}

func (f configFile) write(t *testing.T, body string) {
	t.Helper()
	if err := os.WriteFile(string(f), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reloadTo writes body and reloads it, failing the test if the reload
// fails.
func (r *reloadable) reloadTo(t *testing.T, f configFile, body string) {
	t.Helper()
	f.write(t, body)
	if err := r.sighup(t); err != nil {
		t.Fatalf("reload of\n%s: %v", body, err)
	}
}

// scrape returns the admin listener's /metrics.
func (r *reloadable) scrape(t *testing.T) string {
	t.Helper()
	_, body := get(t, r.admin+"/metrics")
	return body
}

// series reads one series, written as /metrics writes it (labels sorted
// by name), from a scrape; ok is false when the scrape has none.
func series(t *testing.T, scrape, s string) (v float64, ok bool) {
	t.Helper()
	for _, line := range strings.Split(scrape, "\n") {
		if rest, found := strings.CutPrefix(line, s+" "); found {
			f, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f, true
		}
	}
	return 0, false
}

// pageAsync GETs url in the background; the answer comes on the channel.
func pageAsync(url string) <-chan pageResult {
	ch := make(chan pageResult, 1)
	go func() {
		start := time.Now()
		code, body, err := fetchPage(context.Background(), url)
		ch <- pageResult{code, body, err, time.Since(start)}
	}()
	return ch
}

type pageResult struct {
	code int
	body string
	err  error
	took time.Duration
}

func (r pageResult) check(t *testing.T, what, want string) {
	t.Helper()
	if r.err != nil || r.code != 200 || r.body != want {
		t.Errorf("%s: %d %q (%v), want 200 %q", what, r.code, r.body, r.err, want)
	}
}

// A reload of wait applies to the requests that start after it; a
// request that was waiting for a slow fragment when it came keeps
// waiting by the old value and gets the fragment. The fragment is fetched
// once: the new request joins the running fetch, without waiting for it.
func TestReloadWaitKeepsRequestsInFlight(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`<p><esi:include src="/slow">P</esi:include></p>`),
		"/slow": frag("SLOW", 800*time.Millisecond, "max-age=60"),
	})
	cfg := newConfigFile(t)
	cfg.write(t, "upstream: "+o.URL+"\nwait: 5s\nmax_wait: 5s\n")
	fc := startReloadable(t, make(chan os.Signal, 1), "--config", string(cfg))

	before := pageAsync("http://" + fc.front + "/page")
	eventually(t, "the slow fragment's fetch reaches the origin", func() bool { return o.count("/slow") == 1 })
	fc.reloadTo(t, cfg, "upstream: "+o.URL+"\nwait: 0s\nmax_wait: 5s\n")

	after := pageAsync("http://" + fc.front + "/page")
	a := <-after
	a.check(t, "request after the reload to wait: 0", "<p>P</p>")
	if a.took > 400*time.Millisecond {
		t.Errorf("request after the reload to wait: 0 took %s, want no wait for the 800ms fragment", a.took)
	}
	b := <-before
	b.check(t, "request that started under wait: 5s", "<p>SLOW</p>")
	if b.took < 600*time.Millisecond {
		t.Errorf("request that started under wait: 5s took %s, want it to have waited for the 800ms fragment", b.took)
	}
	if n := o.count("/slow"); n != 1 {
		t.Errorf("the slow fragment was fetched %d times, want 1", n)
	}
}

// max-includes and max-fragment-size reloaded: a request in flight keeps
// counting includes by the old limit, also for the nested includes of a
// fragment that arrives after the reload; a new one counts by the new
// limit. A fragment client follows the new size cap.
func TestReloadLimitsKeepRequestsInFlight(t *testing.T) {
	big := strings.Repeat("b", 8<<10)
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`<p><esi:include src="/outer">O</esi:include></p>`),
		"/outer": func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(600 * time.Millisecond)
			esiPage(`[<esi:include src="/in1">p1</esi:include><esi:include src="/in2">p2</esi:include>]`)(w, r)
		},
		"/in1": frag("I1", 0, "max-age=60"),
		"/in2": frag("I2", 0, "max-age=60"),
		"/big/": func(w http.ResponseWriter, r *http.Request) {
			esiPage(`<p><esi:include src="/frag/big?v=`+path.Base(r.URL.Path)+`">small</esi:include></p>`)(w, r)
		},
		"/frag/big": frag(big, 0, "max-age=60"),
	})
	cfg := newConfigFile(t)
	base := "upstream: " + o.URL + "\nwait: 5s\nmax_wait: 5s\n"
	cfg.write(t, base+"max_includes: 10\n")
	fc := startReloadable(t, make(chan os.Signal, 1), "--config", string(cfg))

	before := pageAsync("http://" + fc.front + "/page")
	eventually(t, "the outer fragment's fetch reaches the origin", func() bool { return o.count("/outer") == 1 })
	fc.reloadTo(t, cfg, base+"max_includes: 1\n")
	(<-before).check(t, "request that started under max_includes: 10", "<p>[I1I2]</p>")

	scrape := fc.scrape(t)
	limited, _ := series(t, scrape, `fragcache_esi_errors_total{reason="include_limit"}`)
	_, body := get(t, "http://"+fc.front+"/page")
	if body != "<p>[p1p2]</p>" {
		t.Errorf("request after the reload to max_includes: 1 = %q, want the nested includes over the limit as placeholders", body)
	}
	if v, _ := series(t, fc.scrape(t), `fragcache_esi_errors_total{reason="include_limit"}`); v != limited+2 {
		t.Errorf("include_limit errors %v after the page, want %v", v, limited+2)
	}
	fc.reloadTo(t, cfg, base+"max_includes: 10\n")
	if _, body := get(t, "http://"+fc.front+"/page"); body != "<p>[I1I2]</p>" {
		t.Errorf("request after the reload back to max_includes: 10 = %q, want every include", body)
	}
	for _, p := range []string{"/outer", "/in1", "/in2"} {
		if n := o.count(p); n != 1 {
			t.Errorf("%s fetched %d times, want 1 (cached since)", p, n)
		}
	}

	// An 8 KiB fragment is over a 4 KiB cap and under the default 1 MiB.
	// A failed fragment backs off, so the page after the reload includes
	// another URL of it.
	fc.reloadTo(t, cfg, base+"max_fragment_size: 4KiB\n")
	if _, body := get(t, "http://"+fc.front+"/big/1"); body != "<p>small</p>" {
		t.Errorf("page with an 8KiB fragment under max_fragment_size 4KiB = %.40q, want the placeholder", body)
	}
	tooLarge := `fragcache_fragment_fetches_total{fragment="other",result="too_large",trigger="foreground"}`
	if v, _ := series(t, fc.scrape(t), tooLarge); v != 1 {
		t.Errorf("too_large fetches = %v, want 1", v)
	}
	fc.reloadTo(t, cfg, base)
	if _, body := get(t, "http://"+fc.front+"/big/2"); body != "<p>"+big+"</p>" {
		t.Errorf("page with an 8KiB fragment after the reload to the default 1MiB = %.40q, want the fragment", body)
	}
	if v, _ := series(t, fc.scrape(t), tooLarge); v != 1 {
		t.Errorf("too_large fetches = %v after the reload, want still 1", v)
	}
}

// A fragment rule renamed and changed (share, ttl) by a reload: the new
// requests are counted under the new name and the old name's series are
// gone; the fragment is now fetched without the client's cookie, and the
// rule's ttl makes an answer that said max-age=0 cacheable.
func TestReloadFragmentRule(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`<p><esi:include src="/news/top">P</esi:include></p>`),
		"/news/top": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Cache-Control", "max-age=0")
			fmt.Fprintf(w, "NEWS cookie=%v", r.Header.Get("Cookie") != "")
		},
	})
	cfg := newConfigFile(t)
	base := "upstream: " + o.URL + "\nwait: 5s\nfragments:\n"
	cfg.write(t, base+"  - name: news\n    match: /news/\n")
	fc := startReloadable(t, make(chan os.Signal, 1), "--config", string(cfg))
	page := func() string {
		_, body := get(t, "http://"+fc.front+"/page", "Cookie", "sid=alice")
		return body
	}
	const newsOK = `fragcache_fragment_fetches_total{fragment="news",result="success",trigger="foreground"}`
	const headlinesOK = `fragcache_fragment_fetches_total{fragment="headlines",result="success",trigger="foreground"}`
	const headlinesHit = `fragcache_fragment_lookups_total{fragment="headlines",result="hit"}`

	for i := range 2 {
		if got := page(); got != "<p>NEWS cookie=true</p>" {
			t.Errorf("request %d under the news rule = %q, want the fragment fetched with the cookie", i, got)
		}
	}
	if n := o.count("/news/top"); n != 2 {
		t.Errorf("/news/top fetched %d times under max-age=0, want 2", n)
	}
	scrape := fc.scrape(t)
	if v, _ := series(t, scrape, newsOK); v != 2 {
		t.Errorf("%s = %v, want 2", newsOK, v)
	}
	if _, ok := series(t, scrape, headlinesOK); ok {
		t.Errorf("%s exists before the rule does", headlinesOK)
	}

	fc.reloadTo(t, cfg, base+"  - name: headlines\n    match: /news/\n    share: true\n    ttl: 1m\n")
	for i := range 3 {
		if got := page(); got != "<p>NEWS cookie=false</p>" {
			t.Errorf("request %d under the headlines rule = %q, want the shared fragment, fetched without the cookie", i, got)
		}
	}
	reqs := o.requests("/news/top")
	if len(reqs) != 3 {
		t.Fatalf("/news/top fetched %d times in all, want 3: one more after the reload, then cached by the rule's ttl", len(reqs))
	}
	if c := reqs[2].Header.Get("Cookie"); c != "" {
		t.Errorf("the fetch under share: true carried Cookie %q", c)
	}
	scrape = fc.scrape(t)
	for s, want := range map[string]float64{headlinesOK: 1, headlinesHit: 2} {
		if v, ok := series(t, scrape, s); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", s, v, ok, want)
		}
	}
	for _, line := range strings.Split(scrape, "\n") {
		if strings.Contains(line, `fragment="news"`) {
			t.Errorf("a series of the removed rule is still exported: %s", line)
		}
	}
}

// allow-host reloaded: a src on another host is refused, then fetched
// once the host is allowed (with its own upstream series), then refused
// again when the reload takes it away, although its copy is still cached.
func TestReloadAllowHost(t *testing.T) {
	other := newOrigin(t, map[string]http.HandlerFunc{"/w": frag("W", 0, "max-age=60")})
	otherHost := strings.TrimPrefix(other.URL, "http://")
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`<p><esi:include src="` + other.URL + `/w">refused</esi:include></p>`),
	})
	cfg := newConfigFile(t)
	base := "upstream: " + o.URL + "\nwait: 5s\n"
	cfg.write(t, base)
	fc := startReloadable(t, make(chan os.Signal, 1), "--config", string(cfg))
	page := func() string {
		_, body := get(t, "http://"+fc.front+"/page")
		return body
	}
	upstreamSeries := `fragcache_upstream_request_duration_seconds_count{upstream="` + otherHost + `"}`

	if got := page(); got != "<p>refused</p>" {
		t.Errorf("page with a src on a host not allowed = %q, want the placeholder", got)
	}
	fc.reloadTo(t, cfg, base+"allow_host:\n  - "+otherHost+"\n")
	if got := page(); got != "<p>W</p>" {
		t.Errorf("page after the reload allowed %s = %q, want its fragment", otherHost, got)
	}
	if v, _ := series(t, fc.scrape(t), upstreamSeries); v != 1 {
		t.Errorf("%s = %v, want 1", upstreamSeries, v)
	}
	fc.reloadTo(t, cfg, base)
	if got := page(); got != "<p>refused</p>" {
		t.Errorf("page after the reload took %s away = %q, want the placeholder", otherHost, got)
	}
	if n := other.count("/w"); n != 1 {
		t.Errorf("the other host was asked %d times, want 1 (only while allowed)", n)
	}
}

// Reloads under traffic: readers compose pages without a pause while the
// file flips between two sets of live settings (include limit, rules,
// allowed host, cache budget) twenty times. Every answer is a whole page
// of one set or the other, and once the flipping ends a new request and
// the metrics follow the last set. Bounded: 20 reloads, at most 4000
// requests, readers stop when the reloads end.
func TestReloadUnderTraffic(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/page": esiPage(`[<esi:include src="/f/a">a</esi:include><esi:include src="/f/b">b</esi:include><esi:include src="/f/c">c</esi:include>]`),
		"/f/": func(w http.ResponseWriter, r *http.Request) {
			frag(strings.ToUpper(path.Base(r.URL.Path)), 0, "max-age=60")(w, r)
		},
	})
	cfg := newConfigFile(t)
	sets := []string{
		"upstream: " + o.URL + "\nwait: 2s\nmax_includes: 3\ncache_size: 64MiB\nfragments:\n  - name: even\n    match: /f/\n",
		"upstream: " + o.URL + "\nwait: 2s\nmax_includes: 1\ncache_size: 32MiB\nallow_host: [cdn.example]\nfragments:\n  - name: odd\n    match: /f/\n    ttl: 5m\n",
	}
	want := []string{"[ABC]", "[Abc]"}
	cfg.write(t, sets[0])
	fc := startReloadable(t, make(chan os.Signal, 1), "--config", string(cfg))

	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		sent     atomic.Int64
		seen     [2]atomic.Int64
		badMu    sync.Mutex
		bad      []string
		maxTotal = int64(4000)
	)
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if sent.Add(1) > maxTotal {
					return
				}
				code, body, err := fetchPage(context.Background(), "http://"+fc.front+"/page")
				switch {
				case err == nil && code == 200 && body == want[0]:
					seen[0].Add(1)
				case err == nil && code == 200 && body == want[1]:
					seen[1].Add(1)
				default:
					badMu.Lock()
					if len(bad) < 5 {
						bad = append(bad, fmt.Sprintf("%d %q %v", code, body, err))
					}
					badMu.Unlock()
				}
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; i <= 20 && time.Now().Before(deadline); i++ {
		time.Sleep(20 * time.Millisecond)
		fc.reloadTo(t, cfg, sets[i%2])
	}
	close(stop)
	wg.Wait()
	t.Logf("%d requests: %d by the first set, %d by the second", seen[0].Load()+seen[1].Load(), seen[0].Load(), seen[1].Load())
	if len(bad) > 0 {
		t.Errorf("answers that are no whole page of either set: %q", bad)
	}
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Errorf("pages by set: %d, %d; want both sets seen during the reloads", seen[0].Load(), seen[1].Load())
	}

	// The last reload applied the first set (20 is even).
	if _, body := get(t, "http://"+fc.front+"/page"); body != want[0] {
		t.Errorf("page after the last reload = %q, want %q", body, want[0])
	}
	scrape := fc.scrape(t)
	if v, _ := series(t, scrape, "fragcache_cache_max_cost_bytes"); v != 64<<20 {
		t.Errorf("fragcache_cache_max_cost_bytes = %v, want 64MiB", v)
	}
	for _, line := range strings.Split(scrape, "\n") {
		if strings.Contains(line, `fragment="odd"`) {
			t.Errorf("a series of the rule the last reload removed is still exported: %s", line)
		}
	}
	if v, ok := series(t, scrape, `fragcache_fragment_lookups_total{fragment="even",result="hit"}`); !ok || v == 0 {
		t.Errorf("no hits counted under the rule of the last set (%v, present %v)", v, ok)
	}
	for _, p := range []string{"/f/a", "/f/b", "/f/c"} {
		if n := o.count(p); n != 1 {
			t.Errorf("%s fetched %d times, want 1: reloads keep the cache", p, n)
		}
	}
}
