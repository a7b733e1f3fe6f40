//go:build linux

package main

// End-to-end tests of the shared L2: fragcache replicas as separate
// processes (the binary built once per run) on loopback, one real
// redis-server each test starts, real origins. DESIGN "Beyond one
// machine"; issue checks of the cluster.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fragcache/internal/redistest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// replicaBinary builds fragcache once per test run.
func replicaBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "fragcache-replica-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "fragcache")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func init() { afterTests = append(afterTests, removeReplicaBinary) }

// removeReplicaBinary deletes what replicaBinary built.
func removeReplicaBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// replica is one fragcache process.
type replica struct {
	front, admin string
	cmd          *exec.Cmd
	log          *lockedBuffer
	exited       chan struct{}
}

// startReplica runs the fragcache binary with args beside the test
// defaults and env (NAME=value) beside a clean environment. With --redis
// it returns once the replica's L2 is up. It is stopped (SIGTERM, then
// SIGKILL) when the test ends, and dies with the test process.
func startReplica(t *testing.T, env []string, args ...string) *replica {
	t.Helper()
	base := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--drain-delay", "0",
		"--access-log=false", "--shutdown-timeout", "5s", "--log-format", "json"}
	cmd := exec.Command(replicaBinary(t), append(base, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FRAGCACHE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{cmd: cmd, log: &lockedBuffer{}, exited: make(chan struct{})}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			r.log.Write([]byte(line + "\n"))
			var m struct{ Msg, Front, Admin string }
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "listening" {
				addrs <- [2]string{m.Front, m.Admin}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() { cmd.Wait(); close(r.exited) }()
	t.Cleanup(r.stop)
	select {
	case a := <-addrs:
		r.front, r.admin = "http://"+a[0], "http://"+a[1]
	case <-r.exited:
		t.Fatalf("replica exited at start:\n%s", r.log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("replica did not start within 20s:\n%s", r.log.String())
	}
	if strings.Contains(strings.Join(args, " "), "--redis") {
		r.waitMetric(t, "fragcache_l2_up", 1, 10*time.Second)
	}
	return r
}

// stop ends the replica by its PID: SIGTERM, and SIGKILL after 10 s.
func (r *replica) stop() {
	select {
	case <-r.exited:
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
	}
}

// kill ends the replica at once (SIGKILL by PID).
func (r *replica) kill() {
	r.cmd.Process.Kill()
	<-r.exited
}

// metric returns the sum of the series of name whose labels contain all of
// labels (`op="get"` and so on) on the replica's /metrics.
func (r *replica) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	resp, err := client.Get(r.admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(m[1], l)
		}
		if v, err := strconv.ParseFloat(m[2], 64); ok && err == nil {
			sum += v
		}
	}
	return sum
}

// waitMetric waits until metric name (labels as for metric) is want.
func (r *replica) waitMetric(t *testing.T, name string, want float64, within time.Duration, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := r.metric(t, name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v after %v, want %v\n%s", name, labels, got, within, want, r.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slowPage is an origin whose page "/" holds n includes /f/0 … /f/n-1,
// each answering "<f/i>" after delay with cacheControl.
func slowPage(t *testing.T, n int, delay time.Duration, cacheControl string, extra ...string) (*origin, string) {
	routes := map[string]http.HandlerFunc{}
	for i := 0; i+1 < len(extra); i += 2 { // more pages: path, template
		routes[extra[i]] = esiPage(extra[i+1])
	}
	var page, want strings.Builder
	for i := range n {
		fmt.Fprintf(&page, `<esi:include src="/f/%d">.</esi:include>`, i)
		fmt.Fprintf(&want, `<f/%d>`, i)
		routes[fmt.Sprintf("/f/%d", i)] = frag(fmt.Sprintf("<f/%d>", i), delay, cacheControl)
	}
	routes["/"] = esiPage(page.String())
	return newOrigin(t, routes), want.String()
}

// pageLoad runs 6 clients in a closed loop over the replicas for d, each
// pausing between requests, asking for path(i) and judging each answer
// with ok. It returns the latencies, sorted, and how many answers failed.
func pageLoad(rs []*replica, d, pause time.Duration, path func(i int) string, ok func(code int, body string) bool) ([]time.Duration, int) {
	var mu sync.Mutex
	var took []time.Duration
	bad := 0
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(end); i++ {
				start := time.Now()
				code, b, err := getBody(rs[i%len(rs)].front + path(i))
				mu.Lock()
				took = append(took, time.Since(start))
				if err != nil || !ok(code, b) {
					bad++
				}
				mu.Unlock()
				time.Sleep(pause)
			}
		}()
	}
	wg.Wait()
	slices.Sort(took)
	return took, bad
}

// getBody is a GET of url with header pairs, its status and body.
func getBody(url string, hdr ...string) (int, string, error) { return doRequest("GET", url, hdr...) }

// waitPage waits until url answers want, and fails after within.
func waitPage(t *testing.T, url, want string, within time.Duration, hdr ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		code, b, err := getBody(url, hdr...)
		if err == nil && code == 200 && b == want {
			return
		}
		last = fmt.Sprintf("%d %q %v", code, b, err)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer %q within %v; last %s", url, want, within, last)
}

func cluster(t *testing.T, n int, rd *redistest.Server, upstream string, env []string, args ...string) []*replica {
	t.Helper()
	rs := make([]*replica, n)
	var wg sync.WaitGroup
	for i := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A generous --redis-timeout: on a loaded test machine a Redis
			// answer can take longer than the 25 ms default, which opens
			// the breaker and lets each replica fetch on its own. The
			// tests of that path give their own (a later flag wins).
			rs[i] = startReplica(t, env, append([]string{"--upstream", upstream, "--redis", rd.URL(), "--redis-timeout", "2s"}, args...)...)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return rs
}

// TestClusterOneFetchPerFragment: 3 replicas, 150 concurrent cold
// requests spread round-robin over them, a page of 10 includes each
// taking 300 ms: the origin sees exactly one fetch per fragment, and every
// later page from every replica is complete.
func TestClusterOneFetchPerFragment(t *testing.T) {
	rd := redistest.Start(t)
	o, want := slowPage(t, 10, 300*time.Millisecond, "max-age=60")
	rs := cluster(t, 3, rd, o.URL, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for i := range 150 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := getBody(rs[i%3].front + "/")
			if err != nil || code != 200 {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		t.Errorf("%d of 150 cold pages failed", failed)
	}
	for _, r := range rs {
		waitPage(t, r.front+"/", want, 5*time.Second)
	}
	for i := range 10 {
		if n := o.count(fmt.Sprintf("/f/%d", i)); n != 1 {
			t.Errorf("/f/%d fetched %d times from the origin, want 1", i, n)
		}
	}
	if t.Failed() {
		for i, r := range rs {
			t.Logf("replica %d: L2 timeouts %v, breaker_open %v, errors %v; lock waits failed %v, expired %v, timeout %v", i,
				r.metric(t, "fragcache_l2_requests_total", `result="timeout"`),
				r.metric(t, "fragcache_l2_requests_total", `result="breaker_open"`),
				r.metric(t, "fragcache_l2_requests_total", `result="error"`),
				r.metric(t, "fragcache_l2_lock_waits_total", `result="failed"`),
				r.metric(t, "fragcache_l2_lock_waits_total", `result="expired"`),
				r.metric(t, "fragcache_l2_lock_waits_total", `result="timeout"`))
		}
	}
	var waits float64
	for _, r := range rs {
		waits += r.metric(t, "fragcache_l2_lock_waits_total", `result="filled"`)
	}
	t.Logf("lock waits that ended filled: %v", waits)
}

// TestClusterFillServesOtherReplica: a fragment fetched through replica 1
// is in replica 2's first answer, with no origin fetch.
func TestClusterFillServesOtherReplica(t *testing.T) {
	rd := redistest.Start(t)
	o, want := slowPage(t, 3, 100*time.Millisecond, "max-age=60")
	rs := cluster(t, 2, rd, o.URL, nil, "--wait", "500ms")
	waitPage(t, rs[0].front+"/", want, 5*time.Second)
	before := o.count("/f/0") + o.count("/f/1") + o.count("/f/2")
	code, b, err := getBody(rs[1].front + "/")
	if err != nil || code != 200 || b != want {
		t.Fatalf("replica 2's first answer: %d %q %v, want %q", code, b, err, want)
	}
	if after := o.count("/f/0") + o.count("/f/1") + o.count("/f/2"); after != before {
		t.Errorf("replica 2 fetched %d fragments from the origin, want 0", after-before)
	}
	if hits := rs[1].metric(t, "fragcache_l2_requests_total", `op="get"`, `result="hit"`); hits < 3 {
		t.Errorf("replica 2's L2 hits = %v, want at least 3", hits)
	}
	// From now on replica 2 serves them from its L1: no Redis request.
	reqs := rs[1].metric(t, "fragcache_l2_requests_total")
	for range 20 {
		if code, b, err := getBody(rs[1].front + "/"); err != nil || code != 200 || b != want {
			t.Fatalf("L1 hit: %d %q %v", code, b, err)
		}
	}
	if after := rs[1].metric(t, "fragcache_l2_requests_total"); after != reqs {
		t.Errorf("20 pages served from L1 made %v Redis requests, want 0", after-reqs)
	}
}

// TestClusterStaleRefreshedOnce: after the fragments expire, requests to
// all three replicas cause exactly one refresh fetch per fragment.
func TestClusterStaleRefreshedOnce(t *testing.T) {
	rd := redistest.Start(t)
	o, want := slowPage(t, 2, 200*time.Millisecond, "max-age=1")
	rs := cluster(t, 3, rd, o.URL, nil, "--wait", "1s", "--stale-ttl", "1m")
	for _, r := range rs {
		waitPage(t, r.front+"/", want, 5*time.Second) // every L1 holds them
	}
	if n := o.count("/f/0"); n != 1 {
		t.Fatalf("/f/0 fetched %d times while cold, want 1", n)
	}
	time.Sleep(1500 * time.Millisecond) // now stale everywhere
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, b, err := getBody(rs[i%3].front + "/")
			if err != nil || code != 200 || b != want {
				t.Errorf("stale page: %d %q %v, want %q served stale", code, b, err, want)
			}
		}()
	}
	wg.Wait()
	time.Sleep(1 * time.Second) // the refresh (200 ms) ends
	for i := range 2 {
		if n := o.count(fmt.Sprintf("/f/%d", i)); n != 2 {
			t.Errorf("/f/%d fetched %d times in all, want 2 (the cold fetch and one refresh)", i, n)
		}
	}
}

// TestClusterLockHolderKilled: the replica holding a fragment's fill lock
// is killed (SIGKILL) mid-fetch; another replica takes the lock over
// within 3.5 s and its page fills; no waiting page hangs past its
// deadline.
func TestClusterLockHolderKilled(t *testing.T) {
	rd := redistest.Start(t)
	o, want := slowPage(t, 1, 2*time.Second, "max-age=60")
	rs := cluster(t, 3, rd, o.URL, nil, "--wait", "200ms")
	if code, _, err := getBody(rs[0].front + "/"); err != nil || code != 200 {
		t.Fatalf("first page: %d %v", code, err)
	}
	// Replica 1 holds the lock and fetches; 2 and 3 wait for it.
	for _, r := range rs[1:] {
		start := time.Now()
		if code, _, err := getBody(r.front + "/"); err != nil || code != 200 {
			t.Fatalf("waiting replica's page: %d %v", code, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("a page waited %v behind another replica's lock; its deadline is 200ms", d)
		}
	}
	if n := o.count("/f/0"); n != 1 {
		t.Fatalf("/f/0 fetched %d times before the kill, want 1 (the holder's)", n)
	}
	killed := time.Now()
	rs[0].kill()
	deadline := killed.Add(3500 * time.Millisecond)
	for o.count("/f/0") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(killed)
	if o.count("/f/0") < 2 {
		t.Fatalf("no replica took the lock over within 3.5s of the kill")
	}
	t.Logf("the lock was taken over %v after the holder was killed", took.Round(time.Millisecond))
	for _, r := range rs[1:] {
		waitPage(t, r.front+"/", want, 5*time.Second)
		start := time.Now()
		if code, _, err := getBody(r.front + "/"); err != nil || code != 200 || time.Since(start) > time.Second {
			t.Errorf("page after the takeover: %d %v in %v", code, err, time.Since(start))
		}
	}
	if n := o.count("/f/0"); n != 2 {
		t.Errorf("/f/0 fetched %d times, want 2 (the killed holder's and the one that took over)", n)
	}
}

// TestClusterRedisDownAndBack: Redis stopped under load, then started
// again: every page is 200 and whole (from L1 and direct fetches); the L2
// is used again within 5 s of Redis coming back. Redis answering slowly
// (CLIENT PAUSE) costs a page nothing beyond its wait.
func TestClusterRedisDownAndBack(t *testing.T) {
	rd := redistest.Start(t)
	// /v includes a fragment no replica has seen, for each n.
	o, want := slowPage(t, 4, 20*time.Millisecond, "max-age=1", "/v", `[<esi:include src="/f/0?n=$(QUERY_STRING{n})">.</esi:include>]`)
	rs := cluster(t, 3, rd, o.URL, nil, "--wait", "300ms", "--stale-ttl", "0", "--redis-timeout", "25ms")
	load := func(d time.Duration) (pages, bad int, worst time.Duration) {
		took, bad := pageLoad(rs, d, 5*time.Millisecond, func(int) string { return "/" }, func(code int, b string) bool {
			return code == 200 && (b == want || strings.Contains(b, "<f/"))
		})
		return len(took), bad, took[len(took)-1]
	}
	done := make(chan struct{})
	var pages, bad int
	var worst time.Duration
	go func() { pages, bad, worst = load(4 * time.Second); close(done) }()
	time.Sleep(time.Second)
	rd.Stop()
	time.Sleep(1500 * time.Millisecond)
	rd.Restart()
	back := time.Now()
	<-done
	if bad > 0 || pages == 0 {
		t.Errorf("%d of %d pages were not 200 and composed while Redis was down", bad, pages)
	}
	if worst > 2*time.Second {
		t.Errorf("slowest page %v; a page waits --wait (300ms) at most", worst)
	}
	for _, r := range rs {
		r.waitMetric(t, "fragcache_l2_up", 1, 5*time.Second-time.Since(back))
	}
	t.Logf("Redis down and back: %d pages, all 200; slowest %v; the L2 was up again %v after the restart",
		pages, worst.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))

	// Slow: every Redis request blocks for 1 s; pages still answer in
	// about --wait and the L2 times out once before its breaker opens.
	timeouts := rs[0].metric(t, "fragcache_l2_requests_total", `result="timeout"`)
	go rd.Pause(time.Second)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	code, b, err := getBody(rs[0].front + "/v?n=" + strconv.Itoa(int(start.UnixNano())))
	if d := time.Since(start); err != nil || code != 200 || d > time.Second {
		t.Errorf("page while Redis is paused: %d %q %v in %v", code, b, err, d)
	}
	time.Sleep(200 * time.Millisecond)
	if got := rs[0].metric(t, "fragcache_l2_requests_total", `result="timeout"`) - timeouts; got > 2 {
		t.Errorf("%v L2 timeouts while Redis was paused, want at most one per request in flight", got)
	}
}

// TestClusterPrivacy: user A's private fragment fetched through replica 1
// never reaches user B through replica 2; replicas that share
// --scope-secret share A's entry, one with another secret does not.
func TestClusterPrivacy(t *testing.T) {
	rd := redistest.Start(t)
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/me">.</esi:include>]`),
		"/me": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Cache-Control", "private, max-age=60")
			io.WriteString(w, "me="+r.Header.Get("Cookie"))
		},
	})
	same := []string{"FRAGCACHE_SCOPE_SECRET=one-secret-for-the-cluster-0123456789"}
	rs := cluster(t, 2, rd, o.URL, same, "--wait", "1s")
	other := startReplica(t, []string{"FRAGCACHE_SCOPE_SECRET=another-secret-of-its-own-0123456789"},
		"--upstream", o.URL, "--redis", rd.URL(), "--wait", "1s")

	waitPage(t, rs[0].front+"/", "[me=user=alice]", 3*time.Second, "Cookie", "user=alice")
	for _, tc := range []struct{ who, cookie, want string }{
		{"bob through replica 2", "user=bob", "[me=user=bob]"},
		{"anonymous through replica 2", "", "[.]"},
	} {
		var hdr []string
		if tc.cookie != "" {
			hdr = []string{"Cookie", tc.cookie}
		}
		for range 3 {
			_, b, err := getBody(rs[1].front+"/", hdr...)
			if err != nil || strings.Contains(b, "alice") {
				t.Fatalf("%s: %q %v: alice's fragment reached another user", tc.who, b, err)
			}
		}
		if tc.cookie != "" {
			waitPage(t, rs[1].front+"/", tc.want, 3*time.Second, hdr...)
		}
	}
	fetches := o.count("/me")
	code, b, err := getBody(rs[1].front+"/", "Cookie", "user=alice")
	if err != nil || code != 200 || b != "[me=user=alice]" || o.count("/me") != fetches {
		t.Errorf("alice through replica 2 (same secret): %d %q %v with %d new origin fetches, want her fragment from the L2",
			code, b, err, o.count("/me")-fetches)
	}
	_, b, _ = getBody(other.front+"/", "Cookie", "user=alice")
	if o.count("/me") == fetches {
		t.Errorf("a replica with another --scope-secret got alice's entry from the L2 (%q)", b)
	}
}

// TestClusterCorruptEntries: a value in Redis that is not the entry of its
// key (trailing bytes, another key's value) is a miss, never served.
func TestClusterCorruptEntries(t *testing.T) {
	rd := redistest.Start(t, "--enable-debug-command", "local")
	o, want := slowPage(t, 2, 0, "max-age=60")
	rs := cluster(t, 2, rd, o.URL, nil, "--wait", "1s")
	waitPage(t, rs[0].front+"/", want, 5*time.Second)
	keys, err := rd.Do("KEYS", "fragcache:v1:f:*")
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := keys.([]any)
	if len(ks) != 2 {
		t.Fatalf("entry keys in Redis: %v, want 2", keys)
	}
	k0, k1 := fmt.Sprint(ks[0]), fmt.Sprint(ks[1])
	rd.MustDo("RENAME", k0, "tmp")
	rd.MustDo("RENAME", k1, k0) // each key now holds the other's value
	rd.MustDo("RENAME", "tmp", k1)
	rd.MustDo("APPEND", k0, "trailing")
	before := o.count("/f/0") + o.count("/f/1")
	code, b, err := getBody(rs[1].front + "/")
	if err != nil || code != 200 || (b != want && b != "..") {
		t.Errorf("page over swapped values: %d %q %v, want its own fragments or placeholders", code, b, err)
	}
	waitPage(t, rs[1].front+"/", want, 5*time.Second)
	if after := o.count("/f/0") + o.count("/f/1"); after-before != 2 {
		t.Errorf("%d origin fetches after the values were swapped, want 2 (both are misses)", after-before)
	}
	if c := rs[1].metric(t, "fragcache_l2_requests_total", `result="corrupt"`); c < 2 {
		t.Errorf("corrupt reads counted %v, want at least 2", c)
	}
}

// TestClusterNoSecretKeepsUsersLocal: without --scope-secret a user's
// fragments never reach Redis (each replica's scopes are its own), and no
// Redis key holds a credential.
func TestClusterNoSecretKeepsUsersLocal(t *testing.T) {
	rd := redistest.Start(t)
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/me">.</esi:include>][<esi:include src="/pub">.</esi:include>]`),
		"/me": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Cache-Control", "private, max-age=60")
			io.WriteString(w, "me="+r.Header.Get("Cookie"))
		},
		"/pub": frag("pub", 0, "public, max-age=60"),
	})
	rs := cluster(t, 1, rd, o.URL, nil, "--wait", "1s")
	waitPage(t, rs[0].front+"/", "[me=user=alice-secret-cookie][pub]", 3*time.Second, "Cookie", "user=alice-secret-cookie")
	keys, err := rd.Do("KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := keys.([]any)
	entries := 0
	for _, k := range ks {
		key := fmt.Sprint(k)
		if strings.Contains(key, ":f:") {
			entries++
		}
		v, _ := rd.Do("GET", key)
		if strings.Contains(key, "alice") || strings.Contains(fmt.Sprint(v), "alice") {
			t.Errorf("Redis key %q holds alice's fragment or cookie", key)
		}
	}
	if entries != 1 {
		t.Errorf("%d entries in Redis, want 1 (the public fragment only): %v", entries, ks)
	}
}

// TestClusterFigures measures what docs/performance.md reports for the
// shared L2; it runs only with FRAGCACHE_CLUSTER_FIGURES=1:
//
//	FRAGCACHE_CLUSTER_FIGURES=1 go test -run TestClusterFigures -v -timeout 10m .
//
// Fetches per fragment: 150 concurrent cold page requests round-robin over
// 1, 3 and 6 replicas, with and without --redis, a page of 10 includes of
// 300 ms each. Redis down: page p50/p99 of a closed loop of 6 clients over
// 3 replicas with Redis healthy, then with Redis stopped, both with fresh
// fragments each second so that the L2 is on the miss path.
func TestClusterFigures(t *testing.T) {
	if os.Getenv("FRAGCACHE_CLUSTER_FIGURES") != "1" {
		t.Skip("set FRAGCACHE_CLUSTER_FIGURES=1 to measure the cluster figures")
	}
	for _, l2on := range []bool{false, true} {
		for _, n := range []int{1, 3, 6} {
			rd := redistest.Start(t)
			o, _ := slowPage(t, 10, 300*time.Millisecond, "max-age=60")
			var rs []*replica
			if l2on {
				rs = cluster(t, n, rd, o.URL, nil)
			} else {
				for range n {
					rs = append(rs, startReplica(t, nil, "--upstream", o.URL))
				}
			}
			var wg sync.WaitGroup
			for i := range 150 {
				wg.Add(1)
				go func() { defer wg.Done(); getBody(rs[i%n].front + "/") }()
			}
			wg.Wait()
			time.Sleep(500 * time.Millisecond)
			total := 0
			for i := range 10 {
				total += o.count(fmt.Sprintf("/f/%d", i))
			}
			var timeouts, open float64
			for _, r := range rs {
				if l2on {
					timeouts += r.metric(t, "fragcache_l2_requests_total", `result="timeout"`)
					open += r.metric(t, "fragcache_l2_requests_total", `result="breaker_open"`)
				}
			}
			t.Logf("replicas %d, L2 %v: %.1f origin fetches per fragment (L2 timeouts %v, breaker_open %v)", n, l2on, float64(total)/10, timeouts, open)
			for _, r := range rs {
				r.stop()
			}
			rd.Stop()
		}
	}

	rd := redistest.Start(t)
	o, _ := slowPage(t, 4, 20*time.Millisecond, "max-age=1", "/v", `<esi:include src="/f/0?n=$(QUERY_STRING{n})">.</esi:include><esi:include src="/f/1?n=$(QUERY_STRING{n})">.</esi:include>`)
	const wait, redisTimeout = 50 * time.Millisecond, 25 * time.Millisecond
	rs := cluster(t, 3, rd, o.URL, nil, "--wait", wait.String(), "--redis-timeout", redisTimeout.String())
	measure := func(d time.Duration) (p50, p99 time.Duration, bad int) {
		took, bad := pageLoad(rs, d, 0, func(int) string { return "/v?n=" + strconv.FormatInt(time.Now().Unix(), 10) },
			func(code int, _ string) bool { return code == 200 })
		return took[len(took)/2], took[len(took)*99/100], bad
	}
	p50, p99, bad := measure(10 * time.Second)
	t.Logf("Redis healthy: page p50 %v p99 %v, %d not 200", p50, p99, bad)
	rd.Stop()
	dp50, dp99, dbad := measure(10 * time.Second)
	t.Logf("Redis down:    page p50 %v p99 %v, %d not 200; bound --wait + --redis-timeout + 10ms over the healthy p99: %v",
		dp50, dp99, dbad, p99+redisTimeout+10*time.Millisecond)
	if dbad > 0 || dp99 > wait+redisTimeout+10*time.Millisecond+p99 {
		t.Errorf("Redis down: p99 %v, %d failed", dp99, dbad)
	}
}
