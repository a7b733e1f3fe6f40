package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAltLookedUpWhenSrcFails: with a slow include first, a failing src
// with an instant alt second renders the alt within --wait. The alt's
// lookup starts the moment its src fails, not when the wait for the slow
// include before it is over (DESIGN precise rule 1).
func TestAltLookedUpWhenSrcFails(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/slow">S</esi:include>]` +
			`[<esi:include src="/broken" alt="/alt">B</esi:include>]`),
		"/slow": frag("slow", 2*time.Second, "max-age=60"),
		"/broken": func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(50 * time.Millisecond)
			http.Error(w, "down", http.StatusInternalServerError)
		},
		"/alt": frag("alt", 50*time.Millisecond, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "300ms")
	start := time.Now()
	_, b := get(t, fc.front+"/")
	took := time.Since(start)
	if !strings.HasSuffix(b, "][alt]") {
		t.Errorf("first view = %q; want the alt rendered in the second slot", b)
	}
	if took > 2*time.Second {
		t.Errorf("the page took %v; want about --wait (300ms)", took)
	}
}

// TestNestedIncludesLookedUpOnArrival: a fragment that arrives while a
// slow include before it is still awaited has its own includes looked up
// at once, so they render in the same page.
func TestNestedIncludesLookedUpOnArrival(t *testing.T) {
	o := newOrigin(t, map[string]http.HandlerFunc{
		"/": esiPage(`[<esi:include src="/slow">S</esi:include>]` +
			`[<esi:include src="/outer">O</esi:include>]`),
		"/slow":  frag("slow", 2*time.Second, "max-age=60"),
		"/outer": esiFrag(`outer(<esi:include src="/inner">I</esi:include>)`, 50*time.Millisecond),
		"/inner": frag("inner", 100*time.Millisecond, "max-age=60"),
	})
	fc := startFragcache(t, "--upstream", o.URL, "--wait", "600ms")
	_, b := get(t, fc.front+"/")
	if !strings.HasSuffix(b, "][outer(inner)]") {
		t.Errorf("first view = %q; want the nested include of the second fragment rendered", b)
	}
}

// esiFrag answers a fragment that opts in to ESI, after delay.
func esiFrag(body string, delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Surrogate-Control", `content="ESI/1.0"`)
		io.WriteString(w, body)
	}
}
