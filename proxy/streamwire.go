package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

// The wire format of a streamed page (DESIGN.md, precise rule 30). Each
// streamable include that is still pending is sent as
//
//	<template data-fc="ID:N"></template>placeholder<!--/fc:ID:N-->
//
// and, when its fragment arrives within the budget, as a fill near the end
// of the body:
//
//	<template data-fc-fill="ID:N">content</template><script>fillScript</script>
//
// The runtime, sent once before the first fill, swaps a fill in: it takes
// the fill from the script's previous element sibling, finds the anchor
// whose data-fc is exactly ID:N, removes what lies between the anchor and
// its closing comment, moves the fill's nodes there (never cloning them,
// never assigning HTML, no eval), and removes the anchor, the comment, the
// fill and the scripts. Anything else it ignores. Both scripts are
// byte-constant, so a policy may allow them by hash (README lists them).

// streamRuntime is the runtime script's text.
const streamRuntime = `(function(d){self.__fragcache||(self.__fragcache=function(s){` +
	`var f=s.previousElementSibling,t,a,e,n,i;` +
	`if(f&&f.tagName==="TEMPLATE"&&f.hasAttribute("data-fc-fill")){` +
	`t=d.getElementsByTagName("template");e=f.getAttribute("data-fc-fill");` +
	`for(i=0;i<t.length;i++)if(t[i].getAttribute("data-fc")===e){a=t[i];break}` +
	`if(a){e="/fc:"+e;for(n=a.nextSibling;n&&!(n.nodeType===8&&n.data===e);)n=n.nextSibling;` +
	`if(n){while(a.nextSibling!==n)a.parentNode.removeChild(a.nextSibling);` +
	`n.parentNode.insertBefore(f.content,n);n.remove();a.remove()}}f.remove()}s.remove()});` +
	`d.currentScript.remove()})(document)`

// streamFillScript is each fill's script text.
const streamFillScript = `__fragcache(document.currentScript)`

// StreamScriptHashes are the CSP hash sources of the runtime and fill
// scripts, as README publishes them.
func StreamScriptHashes() (runtime, fill string) {
	return streamRuntimeHash, streamFillHash
}

var streamRuntimeHash, streamFillHash = cspHash(streamRuntime), cspHash(streamFillScript)

func cspHash(script string) string {
	sum := sha256.Sum256([]byte(script))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// streamWire writes one streamed response's markup: its id and nonce are
// the response's.
type streamWire struct {
	id      [16]byte // 64 random bits in hex
	nonce   string   // the page's CSP nonce, or ""
	runtime bool     // the runtime has been sent
}

// newStreamWire gives a response its random id; nonce is the one the
// page's policy lists ("" when none is needed).
func newStreamWire(nonce string) streamWire {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	w := streamWire{nonce: nonce}
	const hex = "0123456789abcdef"
	for i, c := range b {
		w.id[2*i], w.id[2*i+1] = hex[c>>4], hex[c&15]
	}
	return w
}

func (w *streamWire) appendID(dst []byte, n int) []byte {
	dst = append(dst, w.id[:]...)
	dst = append(dst, ':')
	return strconv.AppendInt(dst, int64(n), 10)
}

// appendOpen appends the anchor that opens include n's placeholder.
func (w *streamWire) appendOpen(dst []byte, n int) []byte {
	dst = append(dst, `<template data-fc="`...)
	dst = w.appendID(dst, n)
	return append(dst, `"></template>`...)
}

// appendClose appends the comment that closes include n's placeholder.
func (w *streamWire) appendClose(dst []byte, n int) []byte {
	dst = append(dst, `<!--/fc:`...)
	dst = w.appendID(dst, n)
	return append(dst, `-->`...)
}

// appendFillStart appends what goes before include n's content in its
// fill (and the runtime, the first time).
func (w *streamWire) appendFillStart(dst []byte, n int) []byte {
	if !w.runtime {
		w.runtime = true
		dst = w.appendScript(dst, streamRuntime)
	}
	dst = append(dst, `<template data-fc-fill="`...)
	dst = w.appendID(dst, n)
	return append(dst, `">`...)
}

// appendFillEnd appends what goes after a fill's content.
func (w *streamWire) appendFillEnd(dst []byte) []byte {
	dst = append(dst, `</template>`...)
	return w.appendScript(dst, streamFillScript)
}

func (w *streamWire) appendScript(dst []byte, text string) []byte {
	dst = append(dst, `<script`...)
	if w.nonce != "" {
		dst = append(dst, ` nonce="`...)
		dst = append(dst, w.nonce...)
		dst = append(dst, '"')
	}
	dst = append(dst, '>')
	dst = append(dst, text...)
	return append(dst, `</script>`...)
}

// fillable reports whether a fragment body may travel in a fill: one that
// holds a script (which would not run there, rule 29) or could end the
// fill's template early is kept for the next request.
func fillable(body []byte) bool {
	return !hasTagFold(body, "<script") && !hasTagFold(body, "</template")
}

// hasTagFold reports whether b holds the lower-case ASCII s in any case.
func hasTagFold(b []byte, s string) bool { return indexFold(b, s) >= 0 }

func hasFold(b []byte, s string) bool {
	if len(b) < len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// streamPolicy decides, from the values of a page's
// Content-Security-Policy and Content-Security-Policy-Report-Only headers,
// whether the inline scripts may run (DESIGN.md, precise rule 31): each
// policy's script policy is its script-src-elem, else script-src, else
// default-src; one that has none does not restrict scripts; one that
// allows 'unsafe-inline' without a nonce, a hash or 'strict-dynamic'
// allows them, as does one that lists both scripts' hashes; any other
// needs a nonce, and one nonce listed by all of those is reused. ok is false when the page must not stream.
func streamPolicy(values []string) (nonce string, ok bool) {
	var common []string
	needNonce := false
	for _, v := range values {
		for _, policy := range strings.Split(v, ",") {
			srcs, restricted := scriptSources(policy)
			if !restricted {
				continue
			}
			var nonces []string
			inline, other := false, false
			runtimeHash, fillHash := false, false
			for _, s := range srcs {
				ls := strings.ToLower(s)
				switch {
				case s == streamRuntimeHash:
					runtimeHash = true
				case s == streamFillHash:
					fillHash = true
				}
				switch {
				case strings.HasPrefix(ls, "'nonce-") && strings.HasSuffix(ls, "'") && len(s) > len("'nonce-'"):
					nonces = append(nonces, s[len("'nonce-"):len(s)-1])
				case strings.HasPrefix(ls, "'sha256-"), strings.HasPrefix(ls, "'sha384-"), strings.HasPrefix(ls, "'sha512-"), ls == "'strict-dynamic'":
					other = true
				case ls == "'unsafe-inline'":
					inline = true
				}
			}
			if inline && len(nonces) == 0 && !other || runtimeHash && fillHash {
				continue // allowed inline, or the policy lists both scripts' hashes (README)
			}
			if len(nonces) == 0 {
				return "", false
			}
			if !needNonce {
				needNonce, common = true, nonces
				continue
			}
			common = intersect(common, nonces)
			if len(common) == 0 {
				return "", false
			}
		}
	}
	if !needNonce {
		return "", true
	}
	for _, n := range common {
		if validNonce(n) {
			return n, true
		}
	}
	return "", false
}

// scriptSources returns the source list of a policy's script policy, and
// false when the policy has none.
func scriptSources(policy string) ([]string, bool) {
	var found [3][]string
	var has [3]bool
	for _, d := range strings.Split(policy, ";") {
		f := strings.Fields(d)
		if len(f) == 0 {
			continue
		}
		k := -1
		switch strings.ToLower(f[0]) {
		case "script-src-elem":
			k = 0
		case "script-src":
			k = 1
		case "default-src":
			k = 2
		}
		if k >= 0 && !has[k] { // the first of a directive counts (CSP3)
			has[k], found[k] = true, f[1:]
		}
	}
	for k := range has {
		if has[k] {
			return found[k], true
		}
	}
	return nil, false
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
				break
			}
		}
	}
	return out
}

// validNonce reports whether a nonce is base64 (or base64url), so that it
// can be written into an attribute as it is.
func validNonce(n string) bool {
	if n == "" || len(n) > 256 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// fillSafe reports whether a fill's rendered content may travel in its
// template: it holds no script (a script moved out of a template would
// run, out of the page's order), and every "</template" in it ends one of
// this response's own anchors, so nothing a fragment sends can end the
// fill early (rule 29).
func (w *streamWire) fillSafe(content []byte) bool {
	if hasTagFold(content, "<script") {
		return false
	}
	prefix := append(append([]byte(`<template data-fc="`), w.id[:]...), ':')
	for rest, at := content, 0; ; {
		i := indexFold(rest, "</template")
		if i < 0 {
			return true
		}
		// The anchor is `<template data-fc="ID:N"></template>`: before
		// the end tag, `">`, the digits of N, and the prefix.
		j := at + i
		k := j - 2
		if k < 0 || string(content[k:j]) != `">` {
			return false
		}
		for k > 0 && content[k-1] >= '0' && content[k-1] <= '9' {
			k--
		}
		if k == j-2 || k < len(prefix) || !bytes.Equal(content[k-len(prefix):k], prefix) {
			return false
		}
		rest, at = rest[i+len("</template"):], j+len("</template")
	}
}

// indexFold is the index of the first s (lower-case ASCII) in b in any
// case, or -1.
func indexFold(b []byte, s string) int {
	for i := 0; ; {
		k := bytes.IndexByte(b[i:], '<')
		if k < 0 {
			return -1
		}
		i += k
		if hasFold(b[i:], s) {
			return i
		}
		i++
	}
}
