package l2

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The driver's own lines (failed dials while a test has Redis down)
	// would clutter the output.
	redis.SetLogger(DriverLog{L: slog.New(slog.DiscardHandler)})
	goleak.VerifyTestMain(m)
}

// recorder is an Observer and a Listener that records what it is told.
type recorder struct {
	reqs  [NumOps][NumResults]atomic.Int64
	waits [NumWaitResults]atomic.Int64
	up    atomic.Bool
	ups   atomic.Int64 // Up(true) calls
	downs atomic.Int64 // Up(false) calls

	mu       sync.Mutex
	purges   []PurgeEvent    // guarded by mu
	synced   []PurgeSnapshot // guarded by mu
	desynced int             // guarded by mu
}

func (r *recorder) Request(op Op, res Result, _ time.Duration) { r.reqs[op][res].Add(1) }
func (r *recorder) Up(up bool) {
	r.up.Store(up)
	if up {
		r.ups.Add(1)
	} else {
		r.downs.Add(1)
	}
}
func (r *recorder) LockWait(w WaitResult) { r.waits[w].Add(1) }
func (r *recorder) Purged(p PurgeEvent) {
	r.mu.Lock()
	r.purges = append(r.purges, p)
	r.mu.Unlock()
}
func (r *recorder) Synced(s PurgeSnapshot) {
	r.mu.Lock()
	r.synced = append(r.synced, s)
	r.mu.Unlock()
}
func (r *recorder) Desynced() {
	r.mu.Lock()
	r.desynced++
	r.mu.Unlock()
}

func (r *recorder) count(op Op, res Result) int64 { return r.reqs[op][res].Load() }

func (r *recorder) state() (purges []PurgeEvent, synced []PurgeSnapshot, desynced int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]PurgeEvent(nil), r.purges...), append([]PurgeSnapshot(nil), r.synced...), r.desynced
}

// newClient returns a client of url with a generous timeout (functional
// tests run under the race detector on a shared machine), closed at the
// end of the test, once it is up and subscribed.
func newClient(t testing.TB, url string, edit ...func(*Config)) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg := Config{URL: url, Timeout: time.Second, Observer: rec, Listener: rec}
	for _, e := range edit {
		e(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	eventually(t, 5*time.Second, "client up and subscribed", func() bool {
		_, synced, _ := rec.state()
		return c.Up() && c.subUp.Load() && len(synced) > 0
	})
	return c, rec
}

// eventually polls cond every 5 ms until it holds, or fails the test after
// d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// entry returns an entry fresh for fresh and stale for stale more.
func entry(body string, fresh, stale time.Duration, tags ...Tag) Entry {
	now := time.Now()
	return Entry{Body: []byte(body), FreshUntil: now.Add(fresh), StaleUntil: now.Add(fresh + stale), Tags: tags}
}

// acquire takes key's lock, failing the test otherwise.
func acquire(t testing.TB, c *Client, ctx context.Context, key string) *Lock {
	t.Helper()
	a, err := c.Acquire(ctx, key)
	if err != nil || a.Lock == nil {
		t.Fatalf("Acquire(%q) = %+v, %v; want the lock", key, a, err)
	}
	return a.Lock
}
