package metrics

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminOptions configures the admin handler.
type AdminOptions struct {
	// Gatherer is scraped by /metrics.
	Gatherer prometheus.Gatherer
	// Ready reports whether the front listener takes traffic; /readyz
	// (and its alias /healthz) answers 503 while it returns false.
	Ready func() bool
	// Pprof mounts /debug/pprof/ when true.
	Pprof bool

	// Version and Started are the admin page's version and the start of
	// its uptime.
	Version string
	Started time.Time
	// Activity, when set, gives the admin page what the metrics do not
	// hold: the L2's state, the busiest srcs, the groups' last errors.
	Activity func() Activity
	// ListenHost is the admin listener's host as configured ("" for
	// every address): a request may name it, an IP literal or localhost
	// as its Host, and any other gets 421 (DESIGN rule 33).
	ListenHost string
	// Purge, when set, serves /purge (every method: it answers them
	// itself). Nil: /purge is not found.
	Purge http.Handler
}

// NewAdminHandler returns the handler of the admin listener: the admin
// page at /, /metrics, /livez, /readyz, /healthz and, only when asked
// for, /purge and /debug/pprof/; a request for another host than its own
// gets 421.
// It is safe for concurrent use.
func NewAdminHandler(o AdminOptions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", newAdminPage(o))
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	ready := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if o.Ready != nil && !o.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /readyz", ready)
	mux.HandleFunc("GET /healthz", ready)
	if o.Purge != nil {
		mux.Handle("/purge", o.Purge)
	}
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return hostGuard(o.ListenHost, mux)
}
