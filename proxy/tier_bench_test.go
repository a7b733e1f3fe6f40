package proxy

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"fragcache/internal/redistest"
	"fragcache/metrics"
)

// BenchmarkTierLoad measures what the shared L2 adds to a local miss, on a
// real redis-server and a loopback origin with 1 KiB fragments:
//
//   - origin: a fetch without the L2 (the baseline);
//   - l2-hit: a miss served from Redis (read and decode);
//   - l2-fill: a miss that takes the fill lock, fetches, stores and
//     releases (the cold path of the first replica).
//
// Each reports its p50 and p99 besides the mean:
//
//	go test -run XXX -bench TierLoad -benchtime 2000x ./proxy/
func BenchmarkTierLoad(b *testing.B) {
	rd := redistest.Start(b)
	o := newBenchOrigin(b, 1)
	m := metrics.New(prometheus.NewRegistry(), metrics.Options{Version: "bench", L2: true})
	p, err := New(Config{Upstream: "http://" + o.addr, Metrics: m, Redis: rd.URL(), ScopeSecret: []byte("bench-secret-0123456789abcdef")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !p.l2.Up() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tr := &tier{l2: p.l2, origin: p.fetch, users: true, bypassFor: time.Minute, failFor: time.Second, timeout: 25 * time.Millisecond}
	lv := p.live.Load()
	arg := func(i int) (string, *loadArg) {
		rs := lv.env.src.resolveSrc(fmt.Sprintf("/cold/%d-%d", time.Now().UnixNano(), i), func() string { return "/" })
		fwd := fragFwd{proto: "http"}
		a := &loadArg{t: rs.t, keyURL: fragmentKeyURL(&rs.t, &fwd), frag: rs.frag, rule: rs.rule, esiParsed: true,
			scope: scopeAnon, proto: "http"}
		return rs.key(scopeAnon, &fwd, ""), a
	}
	run := func(b *testing.B, load func(ctx context.Context, key string, a *loadArg) error, prepare func(key string, a *loadArg)) {
		keys := make([]string, b.N)
		args := make([]*loadArg, b.N)
		for i := range b.N {
			keys[i], args[i] = arg(i)
			if prepare != nil {
				prepare(keys[i], args[i])
			}
		}
		took := make([]time.Duration, b.N)
		ctx := context.Background()
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			if err := load(ctx, keys[i], args[i]); err != nil {
				b.Fatal(err)
			}
			took[i] = time.Since(start)
		}
		b.StopTimer()
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("origin", func(b *testing.B) {
		run(b, func(ctx context.Context, key string, a *loadArg) error {
			_, err := p.fetch.Load(ctx, key, a, false)
			return err
		}, nil)
	})
	b.Run("l2-fill", func(b *testing.B) {
		run(b, func(ctx context.Context, key string, a *loadArg) error {
			_, err := tr.Load(ctx, key, a, false)
			return err
		}, nil)
	})
	b.Run("l2-hit", func(b *testing.B) {
		run(b, func(ctx context.Context, key string, a *loadArg) error {
			e, err := tr.Load(ctx, key, a, false)
			if err == nil && e.Value == nil {
				err = fmt.Errorf("no value")
			}
			return err
		}, func(key string, a *loadArg) {
			if _, err := tr.Load(context.Background(), key, a, false); err != nil {
				b.Fatal(err)
			}
		})
	})
}
