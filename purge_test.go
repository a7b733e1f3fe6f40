package main

// End-to-end tests of purging (DESIGN "Invalidation", precise rule 28):
// one fragcache in-process, real origins on loopback, the purge API on
// the admin listener.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newToken writes a random purge token to a file and returns both.
func newToken(t *testing.T) (token, file string) {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	token = hex.EncodeToString(b)
	file = filepath.Join(t.TempDir(), "purge-token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return token, file
}

// postPurge sends body to admin's /purge with token (none when empty)
// and returns the status and the answer.
func postPurge(t *testing.T, admin, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", admin+"/purge", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST /purge: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// mustPurge sends a purge that must be accepted.
func mustPurge(t *testing.T, admin, token, body string) purgeAnswer {
	t.Helper()
	code, ans := postPurge(t, admin, token, body)
	if code != http.StatusAccepted {
		t.Fatalf("purge %s: %d %s, want 202", body, code, ans)
	}
	var a purgeAnswer
	if err := json.Unmarshal([]byte(ans), &a); err != nil || a.ID == "" || a.Time == "" {
		t.Fatalf("purge answer %q: %v", ans, err)
	}
	return a
}

// versioned serves a fragment whose body is name plus the number of the
// fetch ("A1", "A2", …), after delay, with the purge tags given and
// max-age=600.
func versioned(name string, delay time.Duration, tags string) (http.HandlerFunc, *atomic.Int64) {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		v := n.Add(1) // numbered when the fetch arrives: before any purge made while it runs
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", "max-age=600")
		if tags != "" {
			w.Header().Set("Surrogate-Key", tags)
		}
		fmt.Fprintf(w, "%s%d", name, v)
	}, &n
}

// maxAge is the max-age of a composed page's Cache-Control, -1 without.
func maxAge(resp *http.Response) int {
	for _, d := range strings.Split(resp.Header.Get("Cache-Control"), ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(d), "max-age=%d", &n); err == nil {
			return n
		}
	}
	return -1
}

// A purge is refused, with nothing purged, unless the token is right and
// the body is a purge: 404 without a token configured, 401 without the
// right one, 405 for another method, 400 for a body that is too big,
// malformed or names nothing purgeable.
func TestPurgeRefusals(t *testing.T) {
	a, _ := versioned("A", 0, "ka")
	o := newOrigin(t, map[string]http.HandlerFunc{"/": esiPage(`[<esi:include src="/a">.</esi:include>]`), "/a": a})

	off := startFragcache(t, "--upstream", o.URL)
	if code, _ := postPurge(t, off.admin, "0123456789abcdef0123", `{"tags":["ka"]}`); code != 404 {
		t.Errorf("POST /purge without a token configured: %d, want 404", code)
	}

	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--purge-token-file", file)
	waitPage(t, fc.front+"/", "[A1]", 5*time.Second)
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf(`"t%d"`, i)
	}
	for _, tc := range []struct {
		name, token, body string
		want              int
	}{
		{"no token", "", `{"tags":["ka"]}`, 401},
		{"wrong token", token[1:] + "x", `{"tags":["ka"]}`, 401},
		{"a prefix of the token", token[:len(token)-1], `{"tags":["ka"]}`, 401},
		{"over 64 KiB", token, `{"tags":["` + strings.Repeat("k", 70<<10) + `"]}`, 400},
		{"malformed", token, `{"tags":["ka"`, 400},
		{"not an object", token, `["ka"]`, 400},
		{"a list of the wrong type", token, `{"tags":"ka"}`, 400},
		{"unknown key", token, `{"tags":["ka"],"keys":["x"]}`, 400},
		{"data after the object", token, `{"tags":["ka"]} {"tags":["kb"]}`, 400},
		{"empty lists", token, `{"tags":[],"urls":[]}`, 400},
		{"nothing", token, `{}`, 400},
		{"unknown mode", token, `{"tags":["ka"],"mode":"medium"}`, 400},
		{"an empty tag", token, `{"tags":[""]}`, 400},
		{"a prefix of 5 segments", token, `{"prefixes":["/a/b/c/d/e"]}`, 400},
		{"a prefix with a query", token, `{"prefixes":["/a?x=1"]}`, 400},
		{"a URL of a host not allowed", token, `{"urls":["http://elsewhere.example/a"]}`, 400},
		{"1001 items", token, `{"tags":[` + strings.Join(many, ",") + `]}`, 400},
		{"a good tag beside a bad prefix", token, `{"tags":["ka"],"prefixes":["/"]}`, 400},
	} {
		if code, ans := postPurge(t, fc.admin, tc.token, tc.body); code != tc.want {
			t.Errorf("%s: %d %.100s, want %d", tc.name, code, ans, tc.want)
		}
	}
	resp, _ := get(t, fc.admin+"/purge")
	if resp.StatusCode != 405 {
		t.Errorf("GET /purge: %d, want 405", resp.StatusCode)
	}
	resp, body := get(t, fc.front+"/")
	if body != "[A1]" || maxAge(resp) <= 0 {
		t.Errorf("page after the refused purges: %q max-age %d, want [A1] still fresh", body, maxAge(resp))
	}
	if n := fetches(o, "/a"); n != 1 {
		t.Errorf("/a fetched %d times, want 1: nothing was purged", n)
	}
	if v := instanceMetric(t, fc.admin, "fragcache_purges_total"); v != 0 {
		t.Errorf("fragcache_purges_total = %v after refused purges, want 0", v)
	}
	if !strings.Contains(fc.log.String(), "purge refused: wrong or missing token") {
		t.Error("wrong tokens were not logged")
	}
	if strings.Contains(fc.log.String(), token) {
		t.Error("the token reached the log")
	}
}

func fetches(o *origin, path string) int { return o.count(path) }

// instanceMetric sums the series of name on an admin listener.
func instanceMetric(t *testing.T, admin, name string, labels ...string) float64 {
	t.Helper()
	return (&replica{admin: admin}).metric(t, name, labels...)
}

// Tag, URL and prefix purges, soft and hard, on one process: after a soft
// purge the next pages are served at once with the stale copy (not as
// fresh) while exactly one refresh runs; after a hard one the page waits
// for the new copy within --wait; the other fragment is untouched.
func TestPurgeSoftAndHard(t *testing.T) {
	for _, kind := range []struct{ name, items string }{
		{"tag", `"tags":["ka"]`},
		{"url", `"urls":["/w/a/item"]`},
		{"prefix", `"prefixes":["/w"]`},
	} {
		for _, mode := range []string{"soft", "hard"} {
			t.Run(kind.name+" "+mode, func(t *testing.T) {
				a, na := versioned("A", 200*time.Millisecond, "ka shared")
				aq, naq := versioned("Q", 0, "kq shared")
				b, nb := versioned("B", 0, "kb shared")
				o := newOrigin(t, map[string]http.HandlerFunc{
					"/":         esiPage(`[<esi:include src="/w/a/item">.</esi:include>][<esi:include src="/x/b">.</esi:include>]`),
					"/q":        esiPage(`[<esi:include src="/w/a/item?page=2">.</esi:include>]`),
					"/w/a/item": func(w http.ResponseWriter, r *http.Request) { pick(r, a, aq)(w, r) },
					"/x/b":      b,
				})
				token, file := newToken(t)
				fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--purge-token-file", file)
				waitPage(t, fc.front+"/", "[A1][B1]", 5*time.Second)
				waitPage(t, fc.front+"/q", "[Q1]", 5*time.Second)

				ans := mustPurge(t, fc.admin, token, `{`+kind.items+`,"mode":"`+mode+`"}`)
				if ans.Scope != "local" || ans.Mode != mode {
					t.Errorf("answer %+v, want scope local, mode %s", ans, mode)
				}
				if mode == "soft" {
					var wg sync.WaitGroup
					for range 10 {
						wg.Go(func() {
							start := time.Now()
							resp, body := get(t, fc.front+"/")
							if took := time.Since(start); body != "[A1][B1]" || took > 150*time.Millisecond || maxAge(resp) > 0 {
								t.Errorf("page after a soft purge: %q in %v, max-age %d; want [A1][B1] at once, not fresh", body, took, maxAge(resp))
							}
						})
					}
					wg.Wait()
					waitPage(t, fc.front+"/", "[A2][B1]", 5*time.Second)
					if n := na.Load(); n != 2 {
						t.Errorf("A fetched %d times, want 2: one refresh for all the stale pages", n)
					}
				} else {
					start := time.Now()
					resp, body := get(t, fc.front+"/")
					if took := time.Since(start); body != "[A2][B1]" || took < 150*time.Millisecond || took > time.Second {
						t.Errorf("page after a hard purge: %q in %v; want [A2][B1] after A's 200ms fetch", body, took)
					} else if maxAge(resp) <= 0 {
						t.Errorf("page with the new copy: max-age %d, want fresh", maxAge(resp))
					}
				}
				resp, body := get(t, fc.front+"/")
				if body != "[A2][B1]" || maxAge(resp) <= 0 {
					t.Errorf("page once refilled: %q max-age %d, want [A2][B1] fresh", body, maxAge(resp))
				}
				if n := nb.Load(); n != 1 {
					t.Errorf("B fetched %d times, want 1: not purged", n)
				}
				// Every query variant of the URL carries its url and path
				// tags (the tag purged is A's own).
				if kind.name == "tag" {
					if _, body := get(t, fc.front+"/q"); body != "[Q1]" {
						t.Errorf("the query variant after a purge of another tag: %q, want [Q1]", body)
					}
				} else {
					waitPage(t, fc.front+"/q", "[Q2]", 5*time.Second)
					if n := naq.Load(); n != 2 {
						t.Errorf("the query variant fetched %d times, want 2", n)
					}
				}
				if v := instanceMetric(t, fc.admin, "fragcache_purges_total", `mode="`+mode+`"`, `kind="`+kind.name+`"`); v != 1 {
					t.Errorf("fragcache_purges_total{mode=%s,kind=%s} = %v, want 1", mode, kind.name, v)
				}
			})
		}
	}
}

// pick serves the query variant with q, the plain URL with plain.
func pick(r *http.Request, plain, q http.HandlerFunc) http.HandlerFunc {
	if r.URL.RawQuery != "" {
		return q
	}
	return plain
}

// After a hard purge, a fragment slower than --wait shows its placeholder
// until the new copy is there; never the purged one.
func TestPurgeHardSlowFragment(t *testing.T) {
	a, _ := versioned("A", 400*time.Millisecond, "ka")
	o := newOrigin(t, map[string]http.HandlerFunc{"/": esiPage(`[<esi:include src="/a">.</esi:include>]`), "/a": a})
	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "100ms", "--purge-token-file", file)
	waitPage(t, fc.front+"/", "[A1]", 5*time.Second)
	mustPurge(t, fc.admin, token, `{"tags":["ka"],"mode":"hard"}`)
	start := time.Now()
	resp, body := get(t, fc.front+"/")
	if took := time.Since(start); body != "[.]" || took > 350*time.Millisecond || resp.Header.Get("Cache-Control") != "private, no-store" {
		t.Errorf("page after a hard purge: %q in %v (%s), want the placeholder after about --wait", body, took, resp.Header.Get("Cache-Control"))
	}
	waitPage(t, fc.front+"/", "[A2]", 5*time.Second)
}

// The race: a purge made while the fragment's fetch runs. The fetch's
// answer is older than the purge: after a soft purge it is never served
// as fresh and one more fetch replaces it; after a hard purge it is never
// served, not even to a page that joined the fetch after the purge.
func TestPurgeDuringFetch(t *testing.T) {
	for _, mode := range []string{"soft", "hard"} {
		t.Run(mode, func(t *testing.T) {
			a, na := versioned("A", 600*time.Millisecond, "ka")
			o := newOrigin(t, map[string]http.HandlerFunc{
				"/":     esiPage(`[<esi:include src="/a">.</esi:include>]`),
				"/wait": esiPage(`[<esi:include src="/a" timeout="2s">.</esi:include>]`),
				"/a":    a,
			})
			token, file := newToken(t)
			fc := startFragcache(t, "--upstream", o.URL, "--wait", "50ms", "--max-wait", "2s", "--purge-token-file", file)
			_, first := get(t, fc.front+"/") // starts the fetch of A1
			if first != "[.]" {
				t.Fatalf("first page %q, want the placeholder", first)
			}
			time.Sleep(200 * time.Millisecond)
			mustPurge(t, fc.admin, token, `{"tags":["ka"],"mode":"`+mode+`"}`)
			joined := pageAsync(fc.front + "/wait") // joins the running fetch, after the purge
			time.Sleep(600 * time.Millisecond)      // the fetch of A1 has ended
			j := <-joined
			seenA1 := 0
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				resp, body := get(t, fc.front+"/")
				if body == "[A1]" {
					seenA1++
					if mode == "hard" || maxAge(resp) > 0 {
						t.Fatalf("after a %s purge during its fetch, A1 served with Cache-Control %q", mode, resp.Header.Get("Cache-Control"))
					}
				}
				if body == "[A2]" && maxAge(resp) > 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if _, body := get(t, fc.front+"/"); body != "[A2]" {
				t.Fatalf("page after the race settled: %q, want [A2]", body)
			}
			if mode == "hard" && strings.Contains(j.body, "A1") {
				t.Errorf("a page that joined the fetch after the hard purge got %q", j.body)
			}
			if n := na.Load(); n != 2 {
				t.Errorf("A fetched %d times, want 2 (the raced fetch and one after the purge)", n)
			}
			t.Logf("%s: the joined page got %q; A1 served stale %d times", mode, j.body, seenA1)
		})
	}
}

// POST /purge is the admin listener's only: on the front listener it is
// an ordinary request, passed to the app, and purges nothing.
func TestPurgeNotOnFrontListener(t *testing.T) {
	a, na := versioned("A", 0, "ka")
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":      esiPage(`[<esi:include src="/a">.</esi:include>]`),
		"/a":     a,
		"/purge": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "the app's own /purge") },
	})
	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--purge-token-file", file)
	waitPage(t, fc.front+"/", "[A1]", 5*time.Second)
	code, body := postPurge(t, fc.front, token, `{"tags":["ka"],"mode":"hard"}`)
	if code != 200 || body != "the app's own /purge" || o.count("/purge") != 1 {
		t.Errorf("POST /purge on the front listener: %d %q, want the app's answer", code, body)
	}
	if _, body := get(t, fc.front+"/"); body != "[A1]" || na.Load() != 1 {
		t.Errorf("page after a POST /purge on the front listener: %q, %d fetches; want [A1] and 1", body, na.Load())
	}
}

// The tags of a fragment's answer are kept within their bounds (64, of
// 128 bytes, the rest dropped and counted), purge what they name, and
// never reach the client; the page's own tag headers pass through.
func TestPurgeUpstreamTags(t *testing.T) {
	var keys []string
	for i := range 70 {
		keys = append(keys, fmt.Sprintf("k%02d", i))
	}
	long := strings.Repeat("L", 129)
	var n atomic.Int64
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Surrogate-Key", "page-key")
			esiPage(`[<esi:include src="/a">.</esi:include>]`)(w, r)
		},
		"/a": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Cache-Control", "max-age=600")
			w.Header().Set("Surrogate-Key", strings.Join(keys[:40], " "))
			w.Header().Set("xkey", long+" "+strings.Join(keys[40:], " "))
			w.Header().Set("Cache-Tag", "k00, tail")
			fmt.Fprintf(w, "A%d", n.Add(1))
		},
	})
	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--purge-token-file", file)
	waitPage(t, fc.front+"/", "[A1]", 5*time.Second)
	resp, _ := get(t, fc.front+"/")
	if got := resp.Header.Values("Surrogate-Key"); len(got) != 1 || got[0] != "page-key" {
		t.Errorf("page's Surrogate-Key %q, want its own only", got)
	}
	if resp.Header.Get("Xkey") != "" || resp.Header.Get("Cache-Tag") != "" {
		t.Errorf("a fragment's tag headers reached the client: %v", resp.Header)
	}
	// Dropped: the long one, k64..k69 and tail (the 64 are k00..k63).
	if v := instanceMetric(t, fc.admin, "fragcache_purge_tags_dropped_total"); v != 8 {
		t.Errorf("fragcache_purge_tags_dropped_total = %v, want 8", v)
	}
	for _, tc := range []struct {
		tag     string
		purges  bool
		version string
	}{{"k64", false, "[A1]"}, {"tail", false, "[A1]"}, {"k63", true, "[A2]"}, {"k00", true, "[A3]"}} {
		mustPurge(t, fc.admin, token, `{"tags":["`+tc.tag+`"],"mode":"hard"}`)
		if _, body := get(t, fc.front+"/"); body != tc.version {
			t.Errorf("page after a hard purge of %s: %q, want %s", tc.tag, body, tc.version)
		}
	}
}

// A purge ends the backoff of a fragment whose fetch failed: the next page
// fetches it at once instead of after the backoff.
func TestPurgeEndsBackoff(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	var n atomic.Int64
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/a">.</esi:include>]`),
		"/a": func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			if failing.Load() {
				http.Error(w, "down", 500)
				return
			}
			frag("A", 0, "max-age=600")(w, r)
		},
	})
	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "500ms", "--purge-token-file", file)
	if _, body := get(t, fc.front+"/"); body != "[.]" || n.Load() != 1 {
		t.Fatalf("page while /a fails: %q after %d fetches", body, n.Load())
	}
	failing.Store(false)
	if _, body := get(t, fc.front+"/"); body != "[.]" || n.Load() != 1 {
		t.Fatalf("page in backoff: %q after %d fetches, want the placeholder and no fetch", body, n.Load())
	}
	mustPurge(t, fc.admin, token, `{"urls":["/a"]}`)
	if _, body := get(t, fc.front+"/"); body != "[A]" || n.Load() != 2 {
		t.Errorf("page after a purge of the failing URL: %q after %d fetches, want [A] at once", body, n.Load())
	}
}

// fragcache purge: a client of the API that exits 0 on 202, 1 on any
// other answer, 2 on a usage error; the token from the environment or a
// file, never an argument.
func TestPurgeCommand(t *testing.T) {
	a, na := versioned("A", 0, "ka")
	o := newOrigin(t, map[string]http.HandlerFunc{"/": esiPage(`[<esi:include src="/a">.</esi:include>]`), "/a": a})
	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "1s", "--purge-token-file", file)
	waitPage(t, fc.front+"/", "[A1]", 5*time.Second)
	admin := strings.TrimPrefix(fc.admin, "http://")
	_, wrongFile := newToken(t)
	version := 1
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
	}{
		{"token from the environment", []string{"--tag", "ka", "--hard"}, map[string]string{"FRAGCACHE_PURGE_TOKEN": token}, 0},
		{"token from a file", []string{"--url", "/a", "--purge-token-file", file}, nil, 0},
		{"token file from the environment", []string{"--prefix", "/a"}, map[string]string{"FRAGCACHE_PURGE_TOKEN_FILE": file}, 0},
		{"wrong token", []string{"--tag", "ka", "--purge-token-file", wrongFile}, nil, 1},
		{"refused body", []string{"--prefix", "/a/b/c/d/e"}, map[string]string{"FRAGCACHE_PURGE_TOKEN": token}, 1},
		{"nothing named", nil, map[string]string{"FRAGCACHE_PURGE_TOKEN": token}, 2},
		{"a token as an argument", []string{"--tag", "ka", token}, nil, 2},
		{"no token", []string{"--tag", "ka"}, nil, 2},
		{"two tokens", []string{"--tag", "ka", "--purge-token-file", file}, map[string]string{"FRAGCACHE_PURGE_TOKEN": token}, 2},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append([]string{"purge", "--admin-listen", admin}, tc.args...), envOf(tc.env), &out, &errb)
		if code := exitCode(err, io.Discard); code != tc.code {
			t.Errorf("%s: exit %d (%v), want %d", tc.name, code, err, tc.code)
		}
		if tc.code == 0 {
			if !strings.Contains(out.String(), `"id"`) {
				t.Errorf("%s: printed %q, want the answer", tc.name, out.String())
			}
			version++
			waitPage(t, fc.front+"/", fmt.Sprintf("[A%d]", version), 5*time.Second)
		}
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("%s: the error shows the token", tc.name)
		}
	}
	if n := na.Load(); n != 4 {
		t.Errorf("A fetched %d times, want 4 (3 accepted purges)", n)
	}
}

// A reload that changes a fragment rule soft-purges its rule:<name> tag
// (DESIGN rule 35): its fragments are refreshed once, the others are not.
// The purge token file is re-read by the same reload.
func TestReloadPurgesChangedRule(t *testing.T) {
	news, nn := versioned("N", 0, "")
	other, no := versioned("O", 0, "")
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/":         esiPage(`[<esi:include src="/news/top">.</esi:include>][<esi:include src="/other">.</esi:include>]`),
		"/news/top": news,
		"/other":    other,
	})
	token, file := newToken(t)
	cfg := newConfigFile(t)
	base := "upstream: " + o.URL + "\nwait: 1s\npurge_token_file: " + file + "\nfragments:\n  - name: news\n    match: /news/\n"
	cfg.write(t, base+"    ttl: 10m\n")
	fc := startReloadable(t, make(chan os.Signal, 1), "--config", string(cfg))
	front := "http://" + fc.front
	waitPage(t, front+"/", "[N1][O1]", 5*time.Second)
	fc.reloadTo(t, cfg, base+"    ttl: 10m\n") // unchanged: nothing purged
	if resp, body := get(t, front+"/"); body != "[N1][O1]" || maxAge(resp) <= 0 {
		t.Errorf("after a reload that changed nothing: %q max-age %d", body, maxAge(resp))
	}
	newToken := strings.Repeat("n", 24)
	os.WriteFile(file, []byte(newToken), 0o600)
	fc.reloadTo(t, cfg, base+"    ttl: 20m\n")
	if resp, body := get(t, front+"/"); body != "[N1][O1]" || maxAge(resp) > 0 {
		t.Errorf("right after the rule changed: %q max-age %d, want the stale copy", body, maxAge(resp))
	}
	waitPage(t, front+"/", "[N2][O1]", 5*time.Second)
	if nn.Load() != 2 || no.Load() != 1 {
		t.Errorf("fetches: news %d, other %d; want 2 and 1", nn.Load(), no.Load())
	}
	if code, _ := postPurge(t, fc.admin, token, `{"tags":["all"]}`); code != 401 {
		t.Errorf("the old token after the reload: %d, want 401", code)
	}
	mustPurge(t, fc.admin, newToken, `{"tags":["all"]}`)
}

// The purge token (DESIGN rule 24): from the environment or a file, not
// both; trimmed, at least 16 bytes; its value in no error.
func TestPurgeTokenConfig(t *testing.T) {
	_, file := newToken(t)
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("  too-short-tok \n"), 0o600)
	const secret = "a-short-secret"
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		ok   bool
		want string
	}{
		{"file", []string{"--purge-token-file", file}, nil, true, ""},
		{"environment", nil, map[string]string{"FRAGCACHE_PURGE_TOKEN": " 0123456789abcdef0123 "}, true, ""},
		{"both", []string{"--purge-token-file", file}, map[string]string{"FRAGCACHE_PURGE_TOKEN": "0123456789abcdef0123"}, false, "FRAGCACHE_PURGE_TOKEN is set as well"},
		{"short file", []string{"--purge-token-file", short}, nil, false, "holds 13 bytes"},
		{"short environment", nil, map[string]string{"FRAGCACHE_PURGE_TOKEN": secret}, false, "<redacted> is shorter than 16 bytes"},
		{"missing file", []string{"--purge-token-file", short + ".gone"}, nil, false, "no such file"},
	} {
		c, err := loadConfig(append([]string{"--upstream", "http://a:1"}, tc.args...), envOf(tc.env), nil)
		switch {
		case tc.ok && (err != nil || len(c.purgeToken) < 16 || bytes.TrimSpace(c.purgeToken) == nil):
			t.Errorf("%s: %v", tc.name, err)
		case tc.ok && !bytes.Equal(c.purgeToken, bytes.TrimSpace(c.purgeToken)):
			t.Errorf("%s: token %q not trimmed", tc.name, c.purgeToken)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one saying %q", tc.name, err, tc.want)
		case !tc.ok && (strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "too-short-tok")):
			t.Errorf("%s: the error shows the token: %v", tc.name, err)
		}
	}
}

// The purge API is rate-limited: right tokens share 100 a second (burst
// 100), wrong ones their own, smaller bucket; beyond either, 429 with
// Retry-After. Guessing does not starve the right token.
func TestPurgeRateLimits(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{"/": esiPage(`[]`)})
	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--purge-token-file", file)
	// A client of its own: connections it dialled for the burst and never
	// used are closed before fragcache stops (their server side would
	// hold the admin listener's shutdown for 5 s).
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	burst := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	send := func(n int, tok string) map[int]int {
		var mu sync.Mutex
		codes := map[int]int{}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				req, _ := http.NewRequest("POST", fc.admin+"/purge", strings.NewReader(`{"tags":["x"]}`))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := burst.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
					t.Error("429 without Retry-After")
				}
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return codes
	}
	start := time.Now()
	wrong := send(40, "not-the-token-at-all")
	if wrong[401] == 0 || wrong[429] == 0 || wrong[401] > 10+int(10*time.Since(start).Seconds())+1 {
		t.Errorf("40 wrong tokens at once: %v, want up to about 10 401s and the rest 429", wrong)
	}
	if code, _ := postPurge(t, fc.admin, token, `{"tags":["x"]}`); code != 202 {
		t.Errorf("the right token after the wrong ones: %d, want 202", code)
	}
	start = time.Now()
	right := send(300, token)
	if limit := 100 + int(100*time.Since(start).Seconds()) + 1; right[202] == 0 || right[429] == 0 || right[202] > limit {
		t.Errorf("300 purges at once: %v, want at most %d accepted and the rest 429", right, limit)
	}
	t.Logf("wrong tokens: %v; right: %v", wrong, right)
}

// README's curl line is a purge fragcache accepts, with the answer README
// shows.
func TestReadmePurgeExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "curl -X POST -H \"Authorization: Bearer $FRAGCACHE_PURGE_TOKEN\" --data '")
	body, _, ok2 := strings.Cut(rest, "'")
	if !ok || !ok2 {
		t.Fatal("README has no curl line of a purge")
	}
	o := newOrigin(t, map[string]http.HandlerFunc{"/": esiPage(`[]`)})
	token, file := newToken(t)
	fc := startFragcache(t, "--upstream", o.URL, "--purge-token-file", file)
	a := mustPurge(t, fc.admin, token, body)
	if a.Scope != "local" || a.Mode != "soft" || a.Tags != 3 {
		t.Errorf("README's purge answered %+v, want 3 tags, soft, local without Redis", a)
	}
}
