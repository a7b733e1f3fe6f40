package proxy

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fragcache/cachestore"
	"fragcache/metrics"
)

func TestServerTimingEntries(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Fragments: []string{"orders"}})
	c := &composer{notes: []debugNote{
		{frag: m.Fragment("orders"), raw: "/widgets/orders?user=1", out: outHit, at: 120 * time.Microsecond},
		{frag: m.Fragment(metrics.OtherFragment), raw: "/u/$(HTTP_COOKIE{uid})/cart?t=$(QUERY_STRING{t})", out: outPending, at: 50 * time.Millisecond},
		{frag: m.Fragment(metrics.OtherFragment), raw: `/odd"name\x` + "\r\n" + `é`, out: outAlt, at: 3 * time.Millisecond},
		{raw: "https://user:pw@cdn.example/x#top", out: outDenied},
	}}
	got := string(c.appendServerTiming(nil))
	want := `fc-1;desc="orders hit";dur=0.1, ` +
		`fc-2;desc="/u/$(HTTP_COOKIE{uid})/cart pending";dur=50.0, ` +
		`fc-3;desc="/odd\"name\\x???? alt";dur=3.0, ` +
		`fc-4;desc="https://cdn.example/x denied";dur=0.0`
	if got != want {
		t.Errorf("Server-Timing\n got %s\nwant %s", got, want)
	}
}

// Past 1 KiB, the entries stop and one fc-more counts the rest by
// outcome; the whole stays within the bound, however many includes.
func TestServerTimingBound(t *testing.T) {
	for _, n := range []int{10, 23, 24, 25, 300, 10000} {
		c := &composer{}
		for i := range n {
			out := outHit
			if i%3 == 0 {
				out = outPending
			}
			c.notes = append(c.notes, debugNote{raw: fmt.Sprintf("/fragments/item-%d", i), out: out, at: time.Millisecond})
		}
		got := string(c.appendServerTiming(nil))
		if len(got) > maxTimingBytes {
			t.Errorf("%d includes: %d bytes, want at most %d", n, len(got), maxTimingBytes)
		}
		entries := strings.Split(got, ", ")
		last := entries[len(entries)-1]
		listed := len(entries)
		if strings.HasPrefix(last, "fc-more;") {
			listed--
			m := regexp.MustCompile(`^fc-more;desc="(\d+) more: (.*)"$`).FindStringSubmatch(last)
			if m == nil {
				t.Fatalf("%d includes: fc-more entry %q", n, last)
			}
			rest := n - listed
			if m[1] != fmt.Sprint(rest) {
				t.Errorf("%d includes: fc-more says %s more, want %d", n, m[1], rest)
			}
			pending := 0
			for i := listed; i < n; i++ {
				if i%3 == 0 {
					pending++
				}
			}
			var parts []string
			if rest-pending > 0 {
				parts = append(parts, fmt.Sprintf("hit=%d", rest-pending))
			}
			if pending > 0 {
				parts = append(parts, fmt.Sprintf("pending=%d", pending))
			}
			if m[2] != strings.Join(parts, ",") {
				t.Errorf("%d includes: fc-more counts %q, want %q", n, m[2], strings.Join(parts, ","))
			}
		} else if listed != n {
			t.Errorf("%d includes: %d entries and no fc-more", n, listed)
		}
		for i, e := range entries[:listed] {
			if !strings.HasPrefix(e, fmt.Sprintf("fc-%d;desc=\"/fragments/item-%d ", i+1, i)) {
				t.Errorf("%d includes: entry %d is %q", n, i+1, e)
				break
			}
		}
		if n <= 10 && listed != n {
			t.Errorf("%d includes: only %d listed; they fit in 1 KiB", n, listed)
		}
	}
}

func TestSrcName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/widgets/orders", "/widgets/orders"},
		{"/w?user=alice&t=secret", "/w"},
		{"/u/$(HTTP_COOKIE{uid})/cart?$(QUERY_STRING)", "/u/$(HTTP_COOKIE{uid})/cart"},
		{"/page#frag", "/page"},
		{"http://user:secret@cdn.example:8080/x?y", "http://cdn.example:8080/x"},
		{"http://cdn.example/a@b", "http://cdn.example/a@b"},
		{"//user:secret@cdn.example/x", "//cdn.example/x"},
		{"/a//b@c", "/a//b@c"},
		{strings.Repeat("x", 300), strings.Repeat("x", maxSrcName)},
	} {
		if got := srcName(c.in); got != c.want {
			t.Errorf("srcName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// The srcs table counts lookups and fetches per src as written, keeps
// the groups' last errors, and stays bounded: a src that is no longer
// looked up is forgotten.
func TestActivityTable(t *testing.T) {
	a := newActivity()
	s := a.src("/u/$(HTTP_COOKIE{uid})/cart?x=1", "carts")
	if a.src("/u/$(HTTP_COOKIE{uid})/cart?x=2", "carts") != s {
		t.Fatal("the same src without its query is not the same row")
	}
	s.looked(cachestore.Miss)
	s.looked(cachestore.Hit)
	s.looked(cachestore.Stale)
	s.looked(cachestore.Hit)
	s.fetched("carts", 30*time.Millisecond, metrics.FetchSuccess, nil)
	s.fetched("carts", 2*time.Second, metrics.FetchStatusError, &fetchError{result: metrics.FetchStatusError, status: 503})
	s.fetched("carts", time.Second, metrics.FetchDenied, &fetchError{result: metrics.FetchDenied, err: errBreakerOpen{time.Second}})
	s.fetched("carts", time.Millisecond, metrics.FetchConnectError, errors.Join(cachestore.ErrClosed))
	rows, groups := a.snapshot(100)
	if len(rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rows))
	}
	r := rows[0]
	if r.Src != "/u/$(HTTP_COOKIE{uid})/cart" || r.Fragment != "carts" || r.Lookups != 4 || r.Hits != 3 || r.Fetches != 4 {
		t.Errorf("row %+v", r)
	}
	if r.LastError.What != "host's circuit breaker open" || time.Since(r.LastError.At) > time.Minute {
		t.Errorf("last error %+v", r.LastError)
	}
	if g := groups["carts"]; g.What != "host's circuit breaker open" {
		t.Errorf("group's last error %+v", g)
	}
	if r.FetchP50 <= 0 || r.FetchP99 < r.FetchP50 {
		t.Errorf("fetch p50 %v, p99 %v", r.FetchP50, r.FetchP99)
	}
	if got := fetchErrorText(metrics.FetchStatusError, &fetchError{status: 503}); got != "status 503" {
		t.Errorf("status error text %q", got)
	}

	// Bounded: many srcs seen once each push out the old ones, but a src
	// still in use keeps its row and its counts.
	for i := range 3 * maxSrcRows {
		a.src(fmt.Sprintf("/once/%d", i), "other").looked(cachestore.Miss)
		if i%100 == 0 {
			a.src("/u/$(HTTP_COOKIE{uid})/cart", "carts").looked(cachestore.Hit)
		}
	}
	all := a.srcs.all()
	if len(all) > 2*maxSrcRows {
		t.Errorf("%d rows held, want at most %d", len(all), 2*maxSrcRows)
	}
	rows, _ = a.snapshot(100)
	if len(rows) != 100 || rows[0].Src != "/u/$(HTTP_COOKIE{uid})/cart" || rows[0].Lookups < 4 {
		t.Errorf("%d rows; first %+v", len(rows), rows[0])
	}
	if a.src("/once/0", "other").lookups.Load() != 0 {
		t.Error("a src seen once at the start was not forgotten")
	}
}
