package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fragcache/proxy"
)

// The purge API (DESIGN "Invalidation", precise rule 28): POST /purge on
// the admin listener, never on the front one.
const (
	// maxPurgeBody bounds a request body.
	maxPurgeBody = 64 << 10
	// Right tokens share one bucket of purgeRate requests a second,
	// purgeBurst at once; wrong tokens (and none) another, smaller one,
	// so that guessing neither floods the log nor starves the right ones.
	purgeRate, purgeBurst = 100, 100
	wrongRate, wrongBurst = 10, 10
)

// purgeAPI serves /purge. It is safe for concurrent use; its token is
// replaced whole on reload.
type purgeAPI struct {
	p   *proxy.Proxy
	log *slog.Logger
	// token is the SHA-256 of the bearer token; nil: purging is off and
	// /purge is not found.
	token atomic.Pointer[[sha256.Size]byte]
	right *tokenBucket
	wrong *tokenBucket
}

func newPurgeAPI(p *proxy.Proxy, log *slog.Logger, token []byte) *purgeAPI {
	a := &purgeAPI{p: p, log: log, right: newTokenBucket(purgeRate, purgeBurst), wrong: newTokenBucket(wrongRate, wrongBurst)}
	a.setToken(token)
	return a
}

// setToken replaces the token; nil turns purging off.
func (a *purgeAPI) setToken(token []byte) {
	if token == nil {
		a.token.Store(nil)
		return
	}
	sum := sha256.Sum256(token)
	a.token.Store(&sum)
}

// on reports whether a token is configured.
func (a *purgeAPI) on() bool { return a.token.Load() != nil }

// purgeBody is the JSON body of POST /purge.
type purgeBody struct {
	Tags     []string `json:"tags"`
	URLs     []string `json:"urls"`
	Prefixes []string `json:"prefixes"`
	Mode     string   `json:"mode"`
}

// purgeAnswer is the body of a 202.
type purgeAnswer struct {
	ID    string `json:"id"`
	Time  string `json:"time"`
	Scope string `json:"scope"`
	Mode  string `json:"mode"`
	Tags  int    `json:"tags"`
}

func (a *purgeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	want := a.token.Load()
	if want == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		purgeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if !a.authorized(r, want) {
		if ok, wait := a.wrong.take(time.Now()); !ok {
			tooMany(w, wait)
			return
		}
		a.log.Warn("purge refused: wrong or missing token", slog.String("remote", r.RemoteAddr))
		w.Header().Set("WWW-Authenticate", `Bearer realm="fragcache purge"`)
		purgeError(w, http.StatusUnauthorized, "a right bearer token is required")
		return
	}
	if ok, wait := a.right.take(time.Now()); !ok {
		tooMany(w, wait)
		return
	}
	req, err := readPurgeBody(r.Body)
	if err != nil {
		purgeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req.Source = r.RemoteAddr
	res, err := a.p.Purge(r.Context(), req)
	if err != nil {
		purgeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ans := purgeAnswer{ID: res.ID, Time: res.At.UTC().Format(time.RFC3339Nano), Scope: "local", Mode: "soft", Tags: res.Tags}
	if res.Cluster {
		ans.Scope = "cluster"
	}
	if req.Hard {
		ans.Mode = "hard"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(ans)
}

// authorized compares the request's bearer token with want in constant
// time (both hashed first, so that not even the length leaks).
func (a *purgeAPI) authorized(r *http.Request, want *[sha256.Size]byte) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// readPurgeBody decodes a purge body: at most maxPurgeBody bytes of one
// JSON object with only the known keys, a mode of "soft" (the default)
// or "hard", at most proxy.MaxPurgeItems items. proxy.Purge checks the
// items themselves.
func readPurgeBody(body io.Reader) (proxy.PurgeRequest, error) {
	b, err := io.ReadAll(io.LimitReader(body, maxPurgeBody+1))
	if err != nil {
		return proxy.PurgeRequest{}, fmt.Errorf("reading the body: %v", err)
	}
	if len(b) > maxPurgeBody {
		return proxy.PurgeRequest{}, fmt.Errorf("body over %d bytes", maxPurgeBody)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var pb purgeBody
	if err := dec.Decode(&pb); err != nil {
		return proxy.PurgeRequest{}, fmt.Errorf("not a purge body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return proxy.PurgeRequest{}, errors.New("not a purge body: data after the object")
	}
	req := proxy.PurgeRequest{Tags: pb.Tags, URLs: pb.URLs, Prefixes: pb.Prefixes}
	switch pb.Mode {
	case "", "soft":
	case "hard":
		req.Hard = true
	default:
		return proxy.PurgeRequest{}, fmt.Errorf("mode %.40q: soft or hard", pb.Mode)
	}
	if n := len(pb.Tags) + len(pb.URLs) + len(pb.Prefixes); n > proxy.MaxPurgeItems {
		return proxy.PurgeRequest{}, fmt.Errorf("%d items, at most %d", n, proxy.MaxPurgeItems)
	}
	return req, nil
}

func purgeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	purgeError(w, http.StatusTooManyRequests, "too many purge requests")
}

// tokenBucket is a rate limiter: rate tokens a second, at most burst
// saved. Safe for concurrent use.
type tokenBucket struct {
	rate, burst float64
	// mu protects tokens and last.
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst float64) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, tokens: burst}
}

// take spends one token at now, or reports how long until one is there.
func (b *tokenBucket) take(now time.Time) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// purgeCommand is `fragcache purge`: a client of POST /purge. It finds the
// admin listener as healthcheck does, and the token in
// FRAGCACHE_PURGE_TOKEN or the token file (--purge-token-file, else
// FRAGCACHE_PURGE_TOKEN_FILE, else purge_token_file in the file named by
// FRAGCACHE_CONFIG), never in an argument. It prints the answer and
// returns nil on 202, an error on any other answer, and one wrapping
// errUsage on a usage error (exit 2).
func purgeCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fragcache purge", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	file, err := subcommandConfig(getenv, "purge")
	if err != nil {
		return err
	}
	var tags, urls, prefixes listFlag
	fs.Var(&tags, "tag", "a tag to purge; repeatable")
	fs.Var(&urls, "url", "a fragment URL to purge (every query variant); repeatable")
	fs.Var(&prefixes, "prefix", "a path prefix of 1 to 4 segments to purge; repeatable")
	hard := fs.Bool("hard", false, "make the fragments missing instead of stale")
	addr := fs.String("admin-listen", adminDefault(getenv, file), "admin listener of the fragcache to purge")
	tokenFile := fs.String("purge-token-file", envOr(getenv, "FRAGCACHE_PURGE_TOKEN_FILE", file.PurgeTokenFile), "file holding the token")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: purge: %v", errUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		// Not quoted: it may be a token given where it must never be.
		return fmt.Errorf("%w: purge: unexpected argument (a token is never an argument: set %s or use a token file)", errUsage, purgeTokenEnv)
	case len(tags)+len(urls)+len(prefixes) == 0:
		return fmt.Errorf("%w: purge: name at least one --tag, --url or --prefix", errUsage)
	}
	token := []byte(strings.TrimSpace(getenv(purgeTokenEnv)))
	switch {
	case len(token) > 0 && *tokenFile != "":
		return fmt.Errorf("%w: purge: both %s and a token file are set", errUsage, purgeTokenEnv)
	case *tokenFile != "":
		if token, err = readTokenFile(*tokenFile); err != nil {
			return fmt.Errorf("%w: purge: %v", errUsage, err)
		}
	case len(token) == 0:
		return fmt.Errorf("%w: purge: no token: set %s or --purge-token-file", errUsage, purgeTokenEnv)
	}
	base, err := adminBase(*addr, "purge")
	if err != nil {
		return err
	}
	body := purgeBody{Tags: tags, URLs: urls, Prefixes: prefixes, Mode: "soft"}
	if *hard {
		body.Mode = "hard"
	}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/purge", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+string(token))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	defer resp.Body.Close()
	ans, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("purge: %s answered %d: %s", base, resp.StatusCode, bytes.TrimSpace(ans))
	}
	_, err = stdout.Write(ans)
	return err
}

// subcommandConfig loads the YAML file named by FRAGCACHE_CONFIG, for
// the settings a subcommand shares with the server (the admin listener,
// the token file); without one, the defaults.
func subcommandConfig(getenv func(string) string, name string) (*config, error) {
	c := newConfig()
	if file := getenv("FRAGCACHE_CONFIG"); file != "" {
		if errs := c.loadYAML(file); len(errs) > 0 {
			return nil, fmt.Errorf("%w: %s:\n%w", errUsage, name, errors.Join(errs...))
		}
	}
	return c, nil
}

// adminDefault is the admin listener a subcommand talks to unless told:
// FRAGCACHE_ADMIN_LISTEN, else the file's, else the server's default.
func adminDefault(getenv func(string) string, file *config) string {
	return envOr(getenv, "FRAGCACHE_ADMIN_LISTEN", file.AdminListen)
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// adminBase turns an --admin-listen address into the URL a local client
// reaches it at: a wildcard host is 127.0.0.1.
func adminBase(addr, name string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%w: %s: --admin-listen %q is not host:port", errUsage, name, addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}
