package main

import (
	"fragcache/proxy"

	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// demoApp is the embedded "legacy app" behind --demo: a dashboard whose
// fragments take from no time to three seconds, one of which always
// fails, served with Surrogate-Control: content="ESI/1.0".
type demoApp struct {
	srv *http.Server
	ln  net.Listener
	hit atomic.Int64 // requests served, shown on the page
}

// demoStreamBudget is the --stream-budget --demo implies (DESIGN rule
// 34): the first view of the page fills its slow boxes in by itself.
const demoStreamBudget = 4 * time.Second

// Delays of the demo's fragments.
const (
	demoOrdersDelay = time.Second
	demoReportDelay = 3 * time.Second
)

func startDemo(addr string, log *slog.Logger) (*demoApp, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	d := &demoApp{ln: ln}
	d.srv = &http.Server{
		Handler:           d.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("demo app stopped", slog.String("error", err.Error()))
		}
	}()
	return d, nil
}

// URL is the demo app's base URL.
func (d *demoApp) URL() string { return "http://" + d.ln.Addr().String() }

// Close stops the demo app, waiting briefly for slow fragments.
func (d *demoApp) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.srv.Shutdown(ctx)
}

// runDemoOnly serves the demo app alone: `fragcache demo --listen ADDR`.
func runDemoOnly(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fragcache demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address of the demo app")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return fmt.Errorf("%w: demo: %v", errUsage, err)
	}
	d, err := startDemo(*listen, slog.New(slog.NewJSONHandler(stderr, nil)))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintf(stdout, "fragcache demo app on %s\n", d.URL())
	<-ctx.Done()
	return d.Close()
}

func (d *demoApp) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.dashboard)
	mux.HandleFunc("GET /login", d.login)
	mux.HandleFunc("GET /logout", d.logout)
	mux.HandleFunc("GET /fragments/header", d.fragment(0, "max-age=300", func(*http.Request) string {
		return `<b>ACME Intranet</b> &middot; Operations dashboard`
	}))
	mux.HandleFunc("GET /fragments/orders", d.fragment(demoOrdersDelay, "max-age=20", func(*http.Request) string {
		now := time.Now().Format("15:04:05")
		return `<table class="grid"><tr><th>Order</th><th>Customer</th><th>Total</th></tr>` +
			`<tr><td>#1042</td><td>Globex</td><td>$1,200.00</td></tr>` +
			`<tr><td>#1043</td><td>Initech</td><td>$310.50</td></tr>` +
			`<tr><td>#1044</td><td>Umbrella</td><td>$78.99</td></tr></table>` +
			`<p class="small">orders as of ` + now + ` (took ~1 s to build)</p>`
	}))
	mux.HandleFunc("GET /fragments/report", d.fragment(demoReportDelay, "max-age=60", func(*http.Request) string {
		return `<pre class="report">Quarterly report
revenue   ##########  $1.2M
costs     ######      $0.7M
margin    ####        $0.5M</pre><p class="small">built at ` + time.Now().Format("15:04:05") + ` (took ~3 s)</p>`
	}))
	mux.HandleFunc("GET /fragments/inventory", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "inventory service down", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("GET /fragments/inventory-cached", d.fragment(0, "max-age=600", func(*http.Request) string {
		return `<p>Inventory: 1,204 items in stock <span class="small">(cached summary; the live service is down)</span></p>`
	}))
	mux.HandleFunc("GET /fragments/weather", d.fragment(200*time.Millisecond, "public, max-age=120", func(*http.Request) string {
		return `<p>Weather at HQ: 18&deg;C, light rain</p>`
	}))
	mux.HandleFunc("GET /fragments/news", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "news feed unavailable", http.StatusBadGateway)
	})
	mux.HandleFunc("GET /fragments/tab", d.fragment(0, "max-age=120", func(r *http.Request) string {
		return `<p>Tab content for <b>` + html.EscapeString(r.URL.Query().Get("name")) + `</b></p>`
	}))
	mux.HandleFunc("GET /fragments/greeting", func(w http.ResponseWriter, r *http.Request) {
		name := "guest"
		if c, err := r.Cookie("demo_user"); err == nil && c.Value != "" {
			name = c.Value
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "private, max-age=60")
		fmt.Fprintf(w, `<p>Your private notes, %s: 3 unread messages.</p>`, html.EscapeString(name))
	})
	return mux
}

// fragment serves a fragment after delay with the given Cache-Control.
func (d *demoApp) fragment(delay time.Duration, cacheControl string, body func(*http.Request) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", cacheControl)
		io.WriteString(w, body(r))
	}
}

func (d *demoApp) login(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" || len(name) > 40 {
		name = "guest"
	}
	http.SetCookie(w, &http.Cookie{Name: "demo_user", Value: url.QueryEscape(name), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusFound)
}

func (d *demoApp) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: "demo_user", Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusFound)
}

func (d *demoApp) dashboard(w http.ResponseWriter, _ *http.Request) {
	n := d.hit.Add(1)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
	w.Header().Set("Cache-Control", "no-store")
	page := strings.ReplaceAll(demoPage, "@N@", fmt.Sprint(n))
	io.WriteString(w, page)
}

const demoPage = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ACME Intranet - Dashboard</title>
<style>
* { box-sizing: border-box; }
body { font: 15px/1.45 Verdana, Geneva, sans-serif; background: #eef; color: #223; margin: 0; }
.top { background: #336; color: #fff; padding: 10px 14px; }
main { max-width: 1200px; margin: 0 auto; padding: 4px 10px 20px; }
.legend { background: #fff; border: 1px solid #99c; margin: 10px 0; padding: 8px 12px; }
.legend .fc-badge { margin: 0 2px; }
.grid-boxes { display: grid; grid-template-columns: repeat(auto-fit, minmax(330px, 1fr)); gap: 12px; }
.box { position: relative; background: #fff; border: 1px solid #99c; padding: 8px 10px; min-width: 0; }
.box h2 { font-size: 15px; background: #ccd; margin: -8px -10px 8px; padding: 5px 10px; padding-right: 104px; }
.box .scroll { overflow-x: auto; }
.grid { border-collapse: collapse; }
.grid td, .grid th { border: 1px solid #ccc; padding: 2px 6px; }
.small { color: #555; font-size: 12px; }
.wait { color: #a60; font-style: italic; }
.failed { color: #b00; border-left: 3px solid #b00; padding-left: .5em; }
pre.report { overflow-x: auto; }
/* fragcache marks each of the demo's boxes with the outcome of its include. */
.fc-box[data-fc-outcome]::before, .fc-badge { display: inline-block; font: bold 11px/18px Verdana, sans-serif; text-transform: uppercase;
  letter-spacing: .04em; padding: 0 8px; border-radius: 9px; background: #667; color: #fff; }
.fc-box[data-fc-outcome]::before { content: attr(data-fc-outcome); position: absolute; top: 6px; right: 8px; }
.top .fc-box[data-fc-outcome]::before { top: 10px; right: 14px; }
.fc-box[data-fc-outcome=hit]::before, .fc-box[data-fc-outcome=updating]::before, .fc-box[data-fc-outcome=stale]::before,
.fc-badge.hit { background: #17803d; }
.fc-box[data-fc-outcome=miss]::before, .fc-box[data-fc-outcome=bypass]::before, .fc-badge.miss { background: #2759b8; }
.fc-box[data-fc-outcome=pending]::before, .fc-box[data-fc-outcome=shed]::before, .fc-badge.pending { background: #b35c00; }
.fc-box[data-fc-outcome=streaming]::before, .fc-badge.streaming { background: #6b3fa0; }
.fc-box[data-fc-outcome=alt]::before, .fc-box[data-fc-outcome=except]::before, .fc-box[data-fc-outcome=removed]::before,
.fc-box[data-fc-outcome=failed]::before, .fc-badge.fallback { background: #b3261e; }
@media (max-width: 480px) { body { font-size: 14px; } main { padding: 2px 6px 16px; } .grid td, .grid th { padding: 2px 4px; } }
</style></head>
<body>
<div class="top" id="top"><esi:include src="/fragments/header"><div>ACME Intranet</div></esi:include></div>
<main>
<p class="legend" id="legend">Each box's badge says where fragcache took its content from for this view: <span class="fc-badge hit">hit</span> from its cache,
<span class="fc-badge miss">miss</span> fetched in time, <span class="fc-badge streaming">streaming</span> still loading when the page was sent and filled in on this
view as it arrives, <span class="fc-badge pending">pending</span> still loading (its placeholder shows; reload in a few seconds)
or <span class="fc-badge fallback">alt</span> <span class="fc-badge fallback">except</span> a fallback for a fragment that failed.</p>
<div class="grid-boxes">
<div class="box" id="welcome"><h2>Welcome</h2>
<esi:vars><p>Hello, <b>$(HTTP_COOKIE{demo_user}|'guest')</b>.
<a href="/login?name=alice">log in as alice</a> &middot; <a href="/login?name=bob">log in as bob</a> &middot; <a href="/logout">log out</a></p></esi:vars>
<esi:include src="/fragments/greeting"/>
<p class="small">Page built by the legacy app (view @N@). Fragments come from fragcache's cache; slow ones show a placeholder until their background fetch is done, then fill in on this same view (the demo streams them: <code>--stream-budget 4s</code>; with <code>--stream-budget 0</code> a reload shows them).</p>
<p class="small">Logged in, you see the placeholders again at first: a logged-in visitor's fragments are fetched with their cookie and cached for them alone, never shared with the anonymous copy.</p>
</div>
<div class="box" id="orders"><h2>Recent orders (about 1 s to build)</h2>
<div class="scroll"><esi:include src="/fragments/orders" timeout="100ms"><p class="wait">Loading orders&hellip;</p></esi:include></div>
</div>
<div class="box" id="report"><h2>Quarterly report (about 3 s to build)</h2>
<esi:include src="/fragments/report"><p class="wait">The report is being prepared&hellip;</p></esi:include>
</div>
<div class="box" id="inventory"><h2>Inventory (its service is down: alt)</h2>
<esi:include src="/fragments/inventory" alt="/fragments/inventory-cached"><p class="failed">Inventory is unavailable right now.</p></esi:include>
</div>
<div class="box" id="news"><h2>News (try / except)</h2>
<esi:try>
<esi:attempt><esi:include src="/fragments/news"/></esi:attempt>
<esi:except><p>The news feed is resting.</p><esi:include src="/fragments/weather"/></esi:except>
</esi:try>
</div>
<div class="box" id="tabs"><h2>Tabs (choose on the query string)</h2>
<p><a href="/?tab=sales">sales</a> &middot; <a href="/?tab=support">support</a> &middot; <a href="/">none</a></p>
<esi:choose>
<esi:when test="$(QUERY_STRING{tab})=='sales'"><esi:include src="/fragments/tab?name=sales"/></esi:when>
<esi:when test="$(QUERY_STRING{tab})=='support'"><esi:include src="/fragments/tab?name=support"/></esi:when>
<esi:otherwise><p>Pick a tab above.</p></esi:otherwise>
</esi:choose>
</div>
</div>
<esi:remove><p>This text is shown only when the page is viewed without fragcache.</p></esi:remove>
<esi:comment text="the legacy app knows nothing of caching"/>
</main>
</body></html>
`

// demoFragmentRules names the demo's fragments for the metrics labels.
func demoFragmentRules() []proxy.FragmentRule {
	return []proxy.FragmentRule{
		{Name: "orders", Match: "/fragments/orders"},
		{Name: "report", Match: "/fragments/report"},
		{Name: "inventory", Match: "/fragments/inventory"},
		{Name: "greeting", Match: "/fragments/greeting"},
	}
}
