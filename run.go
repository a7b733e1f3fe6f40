package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fragcache/metrics"
	"fragcache/proxy"
)

// hooks is what run gets from the process besides its arguments, and the
// end-to-end tests' seams.
type hooks struct {
	// ready learns the listeners' addresses once both serve.
	ready func(front, admin net.Addr)
	// environ lists the environment as KEY=value, for the warnings about
	// FRAGCACHE_* variables that match no setting; nil: no warnings.
	environ func() []string
	// reload delivers the reload requests; nil: run subscribes to the
	// process's SIGHUP itself.
	reload <-chan os.Signal
	// reloaded learns how each reload went: nil, or why the running
	// configuration was kept.
	reloaded func(error)
}

// run is the whole program: it reads the configuration from args and
// getenv, serves until ctx ends, and shuts down in order. Nothing else in
// fragcache reads flags or the environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runWith(ctx, args, getenv, stdout, stderr, hooks{})
}

func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, hk hooks) error {
	started := time.Now()
	if len(args) > 0 {
		switch args[0] {
		case "healthcheck":
			return healthcheck(args[1:], getenv, stdout)
		case "purge":
			return purgeCommand(ctx, args[1:], getenv, stdout)
		case "demo":
			return runDemoOnly(ctx, args[1:], stdout, stderr)
		}
	}
	var environ []string
	if hk.environ != nil {
		environ = hk.environ()
	}
	cfg, err := loadConfig(args, getenv, environ)
	if errors.Is(err, errHelp) {
		printUsage(stderr, newConfig().opts)
		return err
	}
	if err != nil {
		return err
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, "fragcache", version)
		return nil
	}
	// From here on SIGHUP reloads instead of ending the process.
	reloads := hk.reload
	if reloads == nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		reloads = hup
	}
	log := newLogger(cfg.LogFormat, stderr)
	for _, w := range cfg.warnings {
		log.Warn(w)
	}

	var demo *demoApp
	if cfg.Demo {
		demo, err = startDemo("127.0.0.1:0", log)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer demo.Close()
	}
	pc := proxyConfig(cfg, demo)

	reg := prometheus.NewRegistry()
	var names []string
	for _, r := range pc.Fragments {
		if r.Name != "" {
			names = append(names, r.Name)
		}
	}
	upstreams := append([]string{hostOf(pc.Upstream)}, pc.AllowHosts...)
	m := metrics.New(reg, metrics.Options{Version: version, Fragments: names, Upstreams: upstreams, L2: cfg.Proxy.Redis != ""})
	m.Prewarm()
	m.ConfigReloadSuccessful.Set(1)
	m.ConfigReloadTime.Set(float64(time.Now().UnixNano()) / 1e9)

	pc.Logger, pc.Metrics, pc.Version = log, m, version
	p, err := proxy.New(pc)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = p.Close()
		return fmt.Errorf("listen: %w", err)
	}
	aln, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		ln.Close()
		_ = p.Close()
		return fmt.Errorf("admin listen: %w", err)
	}

	// The front listener speaks TLS itself with --tls-cert: fasthttp sees
	// *tls.Conn connections, so the handler's ctx.IsTLS() is true.
	front := ln
	scheme := "http"
	var certs *certificate
	if cfg.cert != nil {
		certs = newCertificate(cfg.cert)
		front = tls.NewListener(ln, &tls.Config{
			GetCertificate: certs.get,
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"http/1.1"},
		})
		scheme = "https"
		log.Info("front certificate loaded", certs.attrs()...)
	}

	var ready atomic.Bool
	ready.Store(true)
	purges := newPurgeAPI(p, log, cfg.purgeToken)
	admin := &http.Server{
		Handler: metrics.NewAdminHandler(metrics.AdminOptions{Gatherer: reg, Ready: ready.Load, Pprof: cfg.Pprof,
			Version: version, Started: started, Activity: p.Activity, ListenHost: listenHost(cfg.AdminListen), Purge: purges}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      time.Minute, // a CPU profile takes 30 s by default
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	serveErr := make(chan error, 2)
	frontDone := make(chan struct{})
	go func() {
		defer close(frontDone)
		serveErr <- p.Serve(front)
	}()
	go func() {
		if err := admin.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("admin: %w", err)
		}
	}()
	log.Info("listening", slog.String("front", ln.Addr().String()), slog.String("scheme", scheme),
		slog.String("admin", aln.Addr().String()), slog.String("upstream", pc.Upstream), slog.String("version", version))
	if p.L2() {
		users := "user-scoped fragments stay local (no --scope-secret)"
		if len(pc.ScopeSecret) > 0 {
			users = "user-scoped fragments shared (--scope-secret set)"
		}
		log.Info("shared L2 on", slog.String("redis", redisHost(pc.Redis)), slog.String("prefix", pc.RedisPrefix),
			slog.Duration("timeout", pc.RedisTimeout), slog.String("users", users))
	} else {
		log.Info("shared L2 off: this replica keeps its own cache (set --redis to share one)")
	}
	logPurgeAPI(log, purges.on())
	if demo != nil {
		fmt.Fprintf(stdout, "fragcache demo: open %s://%s/ (slow fragments fill in as they arrive); the admin page on http://%s/, metrics on http://%s/metrics\n",
			scheme, displayAddr(ln.Addr()), displayAddr(aln.Addr()), displayAddr(aln.Addr()))
	}
	if hk.ready != nil {
		hk.ready(ln.Addr(), aln.Addr())
	}

	var runErr error
	rl := reloader{args: args, getenv: getenv, started: cfg, applied: cfg, p: p, demo: demo, certs: certs, purges: purges, log: log, m: m}
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", slog.Duration("drain_delay", cfg.DrainDelay))
			break wait
		case runErr = <-serveErr:
			log.Error("listener failed", slog.String("error", runErr.Error()))
			break wait
		case <-reloads:
			err := rl.reload()
			if hk.reloaded != nil {
				hk.reloaded(err)
			}
		}
	}

	// Readiness goes first so load balancers stop sending; the listener
	// stays open for the drain delay so requests still in their way are
	// served, and every answer of the drain closes its connection, so that
	// no keep-alive client is left holding one that the shutdown below
	// closes under its next request.
	ready.Store(false)
	p.Drain()
	if runErr == nil && cfg.DrainDelay > 0 {
		time.Sleep(cfg.DrainDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{runErr}
	if err := p.Shutdown(sctx); err != nil {
		errs = append(errs, fmt.Errorf("shutdown: %w", err))
	}
	// fasthttp's Shutdown does nothing when Serve has not registered the
	// listener yet (a stop right after start): closing it ends a Serve
	// that starts late, and run returns only once Serve has.
	ln.Close()
	select {
	case <-frontDone:
	case <-sctx.Done():
		errs = append(errs, fmt.Errorf("shutdown: front listener: %w", sctx.Err()))
	}
	if err := p.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	if err := admin.Shutdown(sctx); err != nil {
		// What is still running when the timeout ends (a long pprof
		// profile, say) is cut rather than left behind run.
		admin.Close()
		errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
	}
	log.Info("stopped")
	return errors.Join(errs...)
}

// proxyConfig is the proxy's part of cfg as the proxy runs it: with
// --demo, the demo app is the upstream, its cookie may be expanded and,
// unless the file has fragment rules, its boxes are named by the demo's.
func proxyConfig(cfg *config, demo *demoApp) proxy.Config {
	pc := cfg.Proxy
	if demo != nil {
		pc.Upstream = demo.URL()
		pc.ESICookies = append(slices.Clone(pc.ESICookies), "demo_user")
		pc.MarkOutcomes = true // its boxes say where they came from (rule 34)
		if len(pc.Fragments) == 0 {
			// Named so that /metrics shows the demo's boxes by name (rule
			// 34); a --config with fragment rules wins.
			pc.Fragments = demoFragmentRules()
		}
	}
	return pc
}

// reloader re-reads the configuration on SIGHUP (DESIGN rule 35). It
// applies the live settings to the running proxy (proxy.Reload) and the
// front certificate, and names every other change, which takes effect on
// restart.
type reloader struct {
	args   []string
	getenv func(string) string
	// started is the configuration run started with: a restart setting
	// that differs from it still needs the restart, however many reloads
	// happened since.
	started *config
	// applied is the configuration of the last successful reload (or of
	// the start): the live settings that differ from it are the ones a
	// reload applies.
	applied *config
	p       *proxy.Proxy
	demo    *demoApp     // nil without --demo
	certs   *certificate // nil without TLS
	purges  *purgeAPI
	log     *slog.Logger
	m       *metrics.Metrics
}

// reload loads flags, environment and file again, with the same
// precedence, and applies what is live. A configuration that fails to
// load or to apply (a bad value, a broken file or certificate) changes
// nothing: it is logged with what is wrong, file and line included, and
// fragcache_config_last_reload_successful becomes 0.
func (r *reloader) reload() error {
	next, err := loadConfig(r.args, r.getenv, nil)
	if err == nil {
		err = r.p.Reload(proxyConfig(next, r.demo))
	}
	if err != nil {
		r.m.ConfigReloadSuccessful.Set(0)
		r.log.Error("config reload failed; the running configuration is kept", slog.String("error", err.Error()))
		return err
	}
	certLive := r.certs != nil && next.cert != nil
	live := func(key string) bool {
		if key == "tls_cert" || key == "tls_key" {
			return certLive
		}
		return key == "fragments" || next.optByKey(key).live
	}
	var applied, restart []string
	for _, key := range r.applied.changed(next) {
		if live(key) {
			applied = append(applied, key)
		}
	}
	for _, key := range r.started.changed(next) {
		if !live(key) {
			restart = append(restart, key)
		}
	}
	if certLive {
		r.certs.swap(next.cert)
		r.log.Info("front certificate reloaded", r.certs.attrs()...)
	}
	wasOn := r.purges.on()
	r.purges.setToken(next.purgeToken) // the token file is re-read by every reload
	if on := r.purges.on(); on != wasOn {
		logPurgeAPI(r.log, on)
	}
	r.applied = next
	r.m.ConfigReloadSuccessful.Set(1)
	r.m.ConfigReloadTime.Set(float64(time.Now().UnixNano()) / 1e9)
	attrs := []any{slog.String("applied", strings.Join(applied, ",")), slog.String("file", next.ConfigFile)}
	if len(restart) > 0 {
		r.log.Warn("config reloaded; these changed settings need a restart and take effect then",
			append(attrs, slog.String("needs_restart", strings.Join(restart, ",")))...)
	} else {
		r.log.Info("config reloaded", attrs...)
	}
	return nil
}

// certificate is the front listener's certificate, swapped whole on
// reload while handshakes read it.
type certificate struct {
	cur atomic.Pointer[tls.Certificate]
}

func newCertificate(c *tls.Certificate) *certificate {
	var cs certificate
	cs.cur.Store(c)
	return &cs
}

func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cur.Load(), nil }

func (c *certificate) swap(n *tls.Certificate) { c.cur.Store(n) }

// attrs describe the current certificate for the log.
func (c *certificate) attrs() []any {
	leaf := c.cur.Load().Leaf
	if leaf == nil {
		return nil
	}
	return []any{slog.String("subject", leaf.Subject.String()), slog.Time("not_after", leaf.NotAfter),
		slog.String("serial", leaf.SerialNumber.Text(16))}
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

func hostOf(u string) string {
	s := u
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	return strings.TrimSuffix(s, "/")
}

// listenHost is the host of a listen address: "" for every address.
func listenHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return host
}

// displayAddr turns a wildcard listen address into one a browser can open.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// healthcheck GETs /livez on the admin listener: for images without a
// shell. Its address is the server's, with the same precedence:
// --admin-listen, else FRAGCACHE_ADMIN_LISTEN, else admin_listen in the
// YAML file named by FRAGCACHE_CONFIG, else the server's default,
// 127.0.0.1:9188.
func healthcheck(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fragcache healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	def := getenv("FRAGCACHE_ADMIN_LISTEN")
	if def == "" {
		c, err := subcommandConfig(getenv, "healthcheck")
		if err != nil {
			return err
		}
		def = c.AdminListen
	}
	addr := fs.String("admin-listen", def, "admin listener to check")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: healthcheck: %v", errUsage, err)
	}
	base, err := adminBase(*addr, "healthcheck")
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(base + "/livez")
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /livez answered %d", resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

// logPurgeAPI says whether POST /purge is served.
func logPurgeAPI(log *slog.Logger, on bool) {
	if on {
		log.Info("purge API on: POST /purge on the admin listener")
	} else {
		log.Info("purge API off: no purge token (FRAGCACHE_PURGE_TOKEN or --purge-token-file)")
	}
}

// redisHost is the host:port of a Redis URL, for the log: never its
// password.
func redisHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Scheme + "://" + u.Host
}
