package proxy

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
)

func TestStreamWire(t *testing.T) {
	w := newStreamWire("")
	id := string(w.id[:])
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Fatalf("id %q is not 64 bits in hex", id)
	}
	var b []byte
	b = w.appendOpen(b, 3)
	b = append(b, "ph"...)
	b = w.appendClose(b, 3)
	want := `<template data-fc="` + id + `:3"></template>ph<!--/fc:` + id + `:3-->`
	if string(b) != want {
		t.Fatalf("anchor = %s\nwant     %s", b, want)
	}
	b = w.appendFillStart(b[:0], 3)
	b = append(b, "<b>x</b>"...)
	b = w.appendFillEnd(b)
	b = w.appendFillStart(b, 12)
	b = w.appendFillEnd(b)
	want = `<script>` + streamRuntime + `</script>` +
		`<template data-fc-fill="` + id + `:3"><b>x</b></template><script>` + streamFillScript + `</script>` +
		`<template data-fc-fill="` + id + `:12"></template><script>` + streamFillScript + `</script>`
	if string(b) != want {
		t.Fatalf("fills = %s\nwant    %s", b, want)
	}
	if n := strings.Count(string(b), streamRuntime); n != 1 {
		t.Fatalf("runtime sent %d times", n)
	}
	if len(streamRuntime) > 700 {
		t.Errorf("runtime is %d bytes: a few hundred is the budget", len(streamRuntime))
	}
}

func TestStreamWireNonceAndIDs(t *testing.T) {
	w := newStreamWire("r4nd0m+/=")
	b := w.appendFillStart(nil, 1)
	b = w.appendFillEnd(b)
	if got := strings.Count(string(b), `<script nonce="r4nd0m+/=">`); got != 2 {
		t.Fatalf("%d scripts carry the nonce in %s", got, b)
	}
	seen := map[string]bool{}
	for range 1000 {
		w := newStreamWire("")
		if seen[string(w.id[:])] {
			t.Fatalf("id %s repeated", w.id)
		}
		seen[string(w.id[:])] = true
	}
}

// TestStreamScriptHashes pins the published hashes to the scripts' bytes:
// changing a script changes its hash, which README must then say.
func TestStreamScriptHashes(t *testing.T) {
	rt, fill := StreamScriptHashes()
	for _, c := range []struct{ script, hash string }{{streamRuntime, rt}, {streamFillScript, fill}} {
		sum := sha256.Sum256([]byte(c.script))
		if want := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; c.hash != want {
			t.Errorf("hash %s, want %s", c.hash, want)
		}
	}
	const (
		wantRuntime = "'sha256-qzktcxM0R+wp3iw5Iw3a2QvCTcsCGQM9axAZb19QyOc='"
		wantFill    = "'sha256-URFO4uqs7qeTLRCF5ea15W4uKg0MDIMtKwM60xqiwCo='"
	)
	if rt != wantRuntime || fill != wantFill {
		t.Errorf("the scripts changed: runtime %s, fill %s; update README and this test", rt, fill)
	}
}

func TestFillable(t *testing.T) {
	for body, want := range map[string]bool{
		`<p>hello</p>`:                     true,
		`<p>a < b</p>`:                     true,
		`<SCRIPT>x</SCRIPT>`:               false,
		`<div><script src=/a.js></script>`: false,
		`</Template><p>`:                   false,
		`<template><p>x</p>`:               true,
		``:                                 true,
	} {
		if got := fillable([]byte(body)); got != want {
			t.Errorf("fillable(%q) = %v, want %v", body, got, want)
		}
	}
}

func TestStreamPolicy(t *testing.T) {
	cases := []struct {
		name   string
		values []string
		nonce  string
		ok     bool
	}{
		{"no policy", nil, "", true},
		{"no script restriction", []string{"img-src 'self'; frame-ancestors 'none'"}, "", true},
		{"unsafe-inline", []string{"script-src 'self' 'unsafe-inline'"}, "", true},
		{"default-src unsafe-inline", []string{"default-src 'self' 'unsafe-inline'"}, "", true},
		{"self only", []string{"script-src 'self'"}, "", false},
		{"default-src none", []string{"default-src 'none'"}, "", false},
		{"nonce", []string{"script-src 'nonce-abc123' 'strict-dynamic'"}, "abc123", true},
		{"unsafe-inline ignored beside a nonce", []string{"script-src 'unsafe-inline' 'nonce-n1'"}, "n1", true},
		{"unsafe-inline with a hash", []string{"script-src 'unsafe-inline' 'sha256-abc='"}, "", false},
		{"both scripts' hashes", []string{"script-src 'self' " + streamRuntimeHash + " " + streamFillHash + " 'strict-dynamic'"}, "", true},
		{"one script's hash only", []string{"script-src 'self' " + streamRuntimeHash}, "", false},
		{"hashes in one policy, a nonce in the other", []string{"script-src " + streamRuntimeHash + " " + streamFillHash, "script-src 'nonce-abc'"}, "abc", true},
		{"unsafe-inline with strict-dynamic", []string{"script-src 'unsafe-inline' 'strict-dynamic'"}, "", false},
		{"script-src-elem wins", []string{"script-src 'none'; script-src-elem 'unsafe-inline'"}, "", true},
		{"script-src wins over default-src", []string{"default-src 'none'; script-src 'nonce-q'"}, "q", true},
		{"first directive counts", []string{"script-src 'nonce-a'; script-src 'unsafe-inline'"}, "a", true},
		{"two headers, common nonce", []string{"script-src 'nonce-a' 'nonce-b'", "default-src 'nonce-b'"}, "b", true},
		{"two headers, no common nonce", []string{"script-src 'nonce-a'", "script-src 'nonce-b'"}, "", false},
		{"report-only restricts too", []string{"script-src 'unsafe-inline'", "script-src 'self'"}, "", false},
		{"comma-joined policies", []string{"script-src 'nonce-a', script-src 'nonce-a'"}, "a", true},
		{"nonce that would break the attribute", []string{`script-src 'nonce-a"b'`}, "", false},
		{"case", []string{"SCRIPT-SRC 'UNSAFE-INLINE'"}, "", true},
	}
	for _, tc := range cases {
		nonce, ok := streamPolicy(tc.values)
		if nonce != tc.nonce || ok != tc.ok {
			t.Errorf("%s: streamPolicy(%q) = %q, %v; want %q, %v", tc.name, tc.values, nonce, ok, tc.nonce, tc.ok)
		}
	}
}

// TestFillSafe: a fill's content travels only when every </template in it
// ends one of the response's own anchors and it holds no script.
func TestFillSafe(t *testing.T) {
	w := newStreamWire("")
	own := string(w.appendOpen(nil, 7))
	other := `<template data-fc="0123456789abcdef:7"></template>`
	for _, tc := range []struct {
		content string
		ok      bool
	}{
		{"<p>plain</p>", true},
		{"<i>a" + own + "ph<!--/fc:x:7-->b</i>", true},
		{own + own, true},
		{"x</template>", false},
		{"x</TEMPLATE >", false},
		{other, false},
		{`<template data-fc="` + string(w.id[:]) + `:"></template>`, false},
		{"<template>t</template>", false},
		{"<SCRIPT>x()</SCRIPT>", false},
		{own + "<script src=a></script>", false},
	} {
		if got := w.fillSafe([]byte(tc.content)); got != tc.ok {
			t.Errorf("fillSafe(%q) = %v, want %v", tc.content, got, tc.ok)
		}
	}
}
