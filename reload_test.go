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
	"path/filepath"
	"strconv"
	"strings"
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
