package metrics

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Activity is what the admin page shows that the metrics cannot hold:
// the proxy fills it in (AdminOptions.Activity).
type Activity struct {
	// L2 is the shared L2's state: "off" (no --redis), "up" or "down".
	L2 string
	// Srcs are the busiest include srcs, busiest first. Src is the src as
	// its page wrote it, never a substituted value, a query or a scope.
	Srcs []SrcActivity
	// LastErrors are the last failed fetch of each fragment group, by
	// the group's name.
	LastErrors map[string]LastError
}

// SrcActivity is one row of the admin page's table of srcs.
type SrcActivity struct {
	Src      string // as written, e.g. /user/$(HTTP_COOKIE{uid})/cart
	Fragment string // the fragment rule's name, or "other"
	Lookups  uint64
	Hits     uint64 // lookups answered from the cache, fresh or stale
	Fetches  uint64
	// FetchP50 and FetchP99 are fetch times in seconds; NaN without
	// fetches.
	FetchP50, FetchP99 float64
	LastError          LastError
}

// LastError is a failed fetch: what it met and when. The zero value is
// none.
type LastError struct {
	What string
	At   time.Time
}

// Quantile estimates the q-quantile (0 < q < 1) of observations counted
// per bucket: counts[i] observations at most bounds[i] (and above
// bounds[i-1]), counts[len(bounds)] above the last bound. It interpolates
// linearly inside a bucket, as Prometheus's histogram_quantile does, and
// returns the last bound for the +Inf bucket; NaN without observations.
func Quantile(q float64, bounds []float64, counts []uint64) float64 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 || len(counts) != len(bounds)+1 {
		return math.NaN()
	}
	rank := q * float64(total)
	var below float64
	for i, c := range counts {
		if c == 0 || below+float64(c) < rank {
			below += float64(c)
			continue
		}
		if i == len(bounds) {
			return bounds[len(bounds)-1]
		}
		lo := 0.0
		if i > 0 {
			lo = bounds[i-1]
		}
		return lo + (bounds[i]-lo)*(rank-below)/float64(c)
	}
	return bounds[len(bounds)-1]
}

// adminCSP is the admin page's Content-Security-Policy: nothing but its
// own inline style (DESIGN rule 33).
const adminCSP = "default-src 'none'; style-src 'unsafe-inline'"

// adminRefresh is how often the admin page reloads itself.
const adminRefresh = 5 * time.Second

// maxGroupRows bounds the admin page's table of fragment groups.
const maxGroupRows = 100

// adminPage serves the admin listener's "/": fragcache's state at a
// glance, read from the same registry /metrics exposes plus the proxy's
// Activity.
type adminPage struct {
	o   AdminOptions
	tpl *template.Template
}

func newAdminPage(o AdminOptions) *adminPage {
	return &adminPage{o: o, tpl: template.Must(template.New("admin").Parse(adminHTML))}
}

func (p *adminPage) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	var buf bytes.Buffer
	if err := p.tpl.Execute(&buf, p.view(time.Now())); err != nil {
		http.Error(w, "admin page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", adminCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// adminView is what the page's template shows.
type adminView struct {
	Refresh  int
	Version  string
	Uptime   string
	Now      string
	L2       string
	Cache    string
	Breakers []breakerRow
	Groups   []statRow
	Srcs     []statRow
	Problem  string // the registry could not be read
}

type breakerRow struct{ Upstream, State string }

// statRow is a row of the groups' or the srcs' table, formatted.
type statRow struct {
	Name, Fragment               string
	Lookups, HitRatio, Fetches   string
	P50, P99, LastError, ErrWhen string
	Low                          bool // hit ratio under half
}

func (p *adminPage) view(now time.Time) adminView {
	v := adminView{Refresh: int(adminRefresh / time.Second), Version: p.o.Version, L2: "off",
		Now: now.UTC().Format("2006-01-02 15:04:05 UTC")}
	if !p.o.Started.IsZero() {
		v.Uptime = formatAge(now.Sub(p.o.Started))
	}
	var act Activity
	if p.o.Activity != nil {
		act = p.o.Activity()
		if act.L2 != "" {
			v.L2 = act.L2
		}
	}
	var fams []*dto.MetricFamily
	if p.o.Gatherer != nil {
		var err error
		if fams, err = p.o.Gatherer.Gather(); err != nil {
			v.Problem = err.Error()
		}
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	v.Breakers = breakers(byName[namespace+"_upstream_breaker_state"])
	if cost, max := gaugeValue(byName[namespace+"_cache_cost_bytes"]), gaugeValue(byName[namespace+"_cache_max_cost_bytes"]); max > 0 {
		v.Cache = fmt.Sprintf("%s of %s (%.0f %%)", formatBytes(cost), formatBytes(max), 100*cost/max)
	}
	for _, g := range groups(byName, act.LastErrors) {
		v.Groups = append(v.Groups, g.row(now))
	}
	for _, s := range act.Srcs {
		r := stat{name: s.Src, fragment: s.Fragment, lookups: s.Lookups, hits: s.Hits, fetches: s.Fetches,
			p50: s.FetchP50, p99: s.FetchP99, lastErr: s.LastError}
		v.Srcs = append(v.Srcs, r.row(now))
	}
	return v
}

// stat is one group's or src's figures before formatting.
type stat struct {
	name, fragment         string
	lookups, hits, fetches uint64
	p50, p99               float64
	lastErr                LastError
}

func (s *stat) row(now time.Time) statRow {
	r := statRow{Name: s.name, Fragment: s.fragment, Lookups: fmt.Sprint(s.lookups), Fetches: fmt.Sprint(s.fetches),
		HitRatio: "–", P50: formatSeconds(s.p50), P99: formatSeconds(s.p99), LastError: "–", ErrWhen: "–"}
	if s.lookups > 0 {
		ratio := float64(s.hits) / float64(s.lookups)
		r.HitRatio = fmt.Sprintf("%.1f %%", 100*ratio)
		r.Low = ratio < 0.5
	}
	if s.lastErr.What != "" {
		r.LastError = s.lastErr.What
		r.ErrWhen = formatAge(now.Sub(s.lastErr.At)) + " ago (" + s.lastErr.At.UTC().Format("15:04:05 UTC") + ")"
	}
	return r
}

// groups are the fragment groups' figures from the registry: lookups and
// hits from fragcache_fragment_lookups_total, fetch times from
// fragcache_fragment_fetch_duration_seconds; busiest first.
func groups(byName map[string]*dto.MetricFamily, lastErrs map[string]LastError) []*stat {
	by := map[string]*stat{}
	get := func(name string) *stat {
		s := by[name]
		if s == nil {
			s = &stat{name: name, p50: math.NaN(), p99: math.NaN(), lastErr: lastErrs[name]}
			by[name] = s
		}
		return s
	}
	if f := byName[namespace+"_fragment_lookups_total"]; f != nil {
		for _, m := range f.GetMetric() {
			s := get(label(m, "fragment"))
			n := uint64(m.GetCounter().GetValue())
			s.lookups += n
			switch label(m, "result") {
			case "hit", "updating", "stale":
				s.hits += n
			}
		}
	}
	if f := byName[namespace+"_fragment_fetch_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			s := get(label(m, "fragment"))
			h := m.GetHistogram()
			s.fetches = h.GetSampleCount()
			var bounds []float64
			var counts []uint64
			var prev uint64
			for _, b := range h.GetBucket() {
				if math.IsInf(b.GetUpperBound(), +1) {
					continue
				}
				bounds = append(bounds, b.GetUpperBound())
				counts = append(counts, b.GetCumulativeCount()-prev)
				prev = b.GetCumulativeCount()
			}
			counts = append(counts, h.GetSampleCount()-prev)
			s.p50, s.p99 = Quantile(0.5, bounds, counts), Quantile(0.99, bounds, counts)
		}
	}
	out := make([]*stat, 0, len(by))
	for _, s := range by {
		// A group with no series left (a rule a reload removed) is not
		// listed, whatever error it met last.
		if s.lookups > 0 || s.fetches > 0 {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *stat) int {
		if c := cmp.Compare(b.lookups+b.fetches, a.lookups+a.fetches); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	if len(out) > maxGroupRows {
		out = out[:maxGroupRows]
	}
	return out
}

func breakers(f *dto.MetricFamily) []breakerRow {
	var rows []breakerRow
	for _, m := range f.GetMetric() {
		state := "closed"
		switch int(m.GetGauge().GetValue()) {
		case BreakerOpen:
			state = "open"
		case BreakerHalfOpen:
			state = "half-open"
		}
		rows = append(rows, breakerRow{Upstream: label(m, "upstream"), State: state})
	}
	slices.SortFunc(rows, func(a, b breakerRow) int { return strings.Compare(a.Upstream, b.Upstream) })
	return rows
}

func gaugeValue(f *dto.MetricFamily) float64 {
	if f == nil || len(f.GetMetric()) == 0 {
		return 0
	}
	return f.GetMetric()[0].GetGauge().GetValue()
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func formatSeconds(s float64) string {
	switch {
	case math.IsNaN(s):
		return "–"
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	}
	return fmt.Sprintf("%.2f s", s)
}

func formatAge(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

func formatBytes(b float64) string {
	for _, u := range []struct {
		name string
		size float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b >= u.size {
			return fmt.Sprintf("%.1f %s", b/u.size, u.name)
		}
	}
	return fmt.Sprintf("%.0f B", b)
}

// hostGuard answers 421 to a request whose Host is neither an IP
// literal, localhost, nor the admin listener's own host (DESIGN rule 33):
// a page on a name that an attacker made resolve to this address (DNS
// rebinding) cannot read the admin listener from a visitor's browser.
func hostGuard(own string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !adminHostAllowed(r.Host, own) {
			http.Error(w, "misdirected request: use an IP address or localhost", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminHostAllowed reports whether a request's Host may reach the admin
// listener whose host is own ("" when it listens on every address).
func adminHostAllowed(host, own string) bool {
	if host == "" {
		return true // HTTP/1.0 without Host: no browser's request
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	h = strings.TrimSuffix(h, ".")
	return strings.EqualFold(h, "localhost") || own != "" && strings.EqualFold(h, strings.TrimSuffix(own, "."))
}

const adminHTML = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{{.Refresh}}">
<title>fragcache {{.Version}}</title>
<style>
:root { color-scheme: light; --line: #d8dbe2; --muted: #5c6370; --bad: #b42318; --ok: #067647; --warn: #b54708; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2129; background: #f6f7f9; }
header { background: #1f2a44; color: #fff; padding: 12px 20px; display: flex; flex-wrap: wrap; gap: 6px 24px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; }
header span { color: #c9d2e3; }
main { padding: 12px 20px 24px; max-width: 1400px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 12px 0; padding: 10px 14px; }
h2 { font-size: 15px; margin: 0 0 8px; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 28px; margin: 0; padding: 0; list-style: none; }
.facts b { font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
td.num, th.num { text-align: right; }
td.src { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: normal; word-break: break-all; min-width: 14em; }
.state { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.state-closed, .state-up { background: #dcfae6; color: var(--ok); }
.state-open, .state-down { background: #fee4e2; color: var(--bad); }
.state-half-open { background: #fef0c7; color: var(--warn); }
.state-off { background: #eaecf0; color: var(--muted); }
.low { color: var(--warn); font-weight: 600; }
.err { color: var(--bad); }
.note { color: var(--muted); font-size: 12px; margin: 8px 0 0; }
@media (max-width: 600px) { header, main { padding-left: 10px; padding-right: 10px; } th, td { padding: 4px 5px; } }
</style></head>
<body>
<header><h1>fragcache</h1><span>version {{.Version}}</span>{{if .Uptime}}<span>up {{.Uptime}}</span>{{end}}<span>{{.Now}}</span></header>
<main>
{{if .Problem}}<section><p class="err">Some metrics could not be read: {{.Problem}}</p></section>{{end}}
<section id="state"><h2>State</h2>
<ul class="facts">
<li>Shared L2: <span class="state state-{{.L2}}" id="l2">{{.L2}}</span></li>
{{if .Cache}}<li>Cache: <b>{{.Cache}}</b></li>{{end}}
{{range .Breakers}}<li>Breaker {{.Upstream}}: <span class="state state-{{.State}}">{{.State}}</span></li>{{end}}
</ul></section>
<section id="groups"><h2>Fragment groups</h2>
<div class="scroll"><table>
<thead><tr><th>group</th><th class="num">lookups</th><th class="num">hit ratio</th><th class="num">fetches</th><th class="num">fetch p50</th><th class="num">fetch p99</th><th>last error</th><th>when</th></tr></thead>
<tbody>
{{range .Groups}}<tr><td>{{.Name}}</td><td class="num">{{.Lookups}}</td><td class="num{{if .Low}} low{{end}}">{{.HitRatio}}</td><td class="num">{{.Fetches}}</td><td class="num">{{.P50}}</td><td class="num">{{.P99}}</td><td class="err">{{.LastError}}</td><td>{{.ErrWhen}}</td></tr>
{{else}}<tr><td colspan="8">No fragment looked up yet.</td></tr>
{{end}}</tbody></table></div></section>
<section id="srcs"><h2>Busiest srcs</h2>
<div class="scroll"><table>
<thead><tr><th>src, as the page wrote it</th><th>group</th><th class="num">lookups</th><th class="num">hit ratio</th><th class="num">fetches</th><th class="num">fetch p50</th><th class="num">fetch p99</th><th>last error</th><th>when</th></tr></thead>
<tbody>
{{range .Srcs}}<tr><td class="src">{{.Name}}</td><td>{{.Fragment}}</td><td class="num">{{.Lookups}}</td><td class="num{{if .Low}} low{{end}}">{{.HitRatio}}</td><td class="num">{{.Fetches}}</td><td class="num">{{.P50}}</td><td class="num">{{.P99}}</td><td class="err">{{.LastError}}</td><td>{{.ErrWhen}}</td></tr>
{{else}}<tr><td colspan="9">No include looked up yet.</td></tr>
{{end}}</tbody></table></div>
<p class="note">The 100 busiest srcs of the last 10 to 20 minutes, without their query; variables as written, never a visitor's values. Hit ratio: lookups answered from the cache, fresh or stale. Refreshes every {{.Refresh}} s; /metrics has the rest.</p></section>
</main></body></html>
`
