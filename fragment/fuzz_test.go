package fragment

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	`<html><esi:include src="/a"/><esi:include src='/b?x=$(QUERY_STRING{x})'>ph</esi:include></html>`,
	`<esi:try><esi:attempt><esi:include src="/x"/></esi:attempt><esi:except>E</esi:except></esi:try>`,
	`<esi:choose><esi:when test="$(HTTP_COOKIE{g})=='a' | !(1<2)">a</esi:when><esi:otherwise>o</esi:otherwise></esi:choose>`,
	`<esi:vars>$(HTTP_HOST) $(HTTP_USER_AGENT{os}|'x')</esi:vars><!--esi <esi:include src="/e"/> -->`,
	`<esi:remove>x</esi:remove><esi:comment text="c"/><!-- <esi:include src="/n"/> --><![CDATA[<esi:x>]]>`,
	`<esi:vars><esi:try><esi:attempt>`, `</esi:choose><esi:when test="(">`, `<esi:foo>x</esi:foo><esi:include src="/a`,
	"<esi:include\n src = \"/a\" alt='/b' onerror=\"continue\" timeout=\"5\" ttl=\"1h\" />",
}

// FuzzParse checks that no body makes Parse, Evaluate or Render panic, that
// the template's raw pieces rebuild the body exactly, and that the limits
// hold.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(0), uint8(0), uint16(0))
		f.Add([]byte(s), uint8(2), uint8(2), uint16(4))
	}
	f.Fuzz(func(t *testing.T, body []byte, maxDir, maxNest uint8, maxAttr uint16) {
		lim := Limits{MaxDirectives: int(maxDir), MaxNesting: int(maxNest), MaxAttrLen: int(maxAttr)}
		tpl, err := Parse(body, lim)
		if tpl == nil {
			t.Fatalf("Parse(%q) returned no template", body)
		}
		if raw := rawRebuild(tpl); !bytes.Equal(raw, body) {
			t.Fatalf("raw pieces of %q rebuild %q", body, raw)
		}
		checkStructure(t, tpl, body, lim.withDefaults(), err)

		vars := &RequestVars{
			HostName: "h", Query: string(body), CookieHeader: "c=" + string(body), AllowCookies: []string{"c"},
			AcceptLang: string(body), UserAgentValue: string(body), RefererHeader: string(body),
		}
		var e Eval
		tpl.Evaluate(vars, &e)
		if len(e.Includes) > lim.withDefaults().MaxDirectives {
			t.Fatalf("%d active includes, limit %d", len(e.Includes), lim.withDefaults().MaxDirectives)
		}
		failing := map[string]bool{}
		for i, inc := range e.Includes {
			if inc.Index != i {
				t.Fatalf("Includes[%d].Index = %d", i, inc.Index)
			}
			if i%2 == 0 {
				failing[inc.Src] = true
			}
		}
		out := tpl.Render(nil, &e, &fakeResolver{bodies: map[string]string{}, failed: failing})
		if !tpl.HasESI() && !bytes.Equal(out, body) {
			t.Fatalf("template without ESI rendered %q, want the body %q", out, body)
		}
		// A second evaluation with the same Eval gives the same page.
		tpl.Evaluate(vars, &e)
		if out2 := tpl.Render(nil, &e, &fakeResolver{bodies: map[string]string{}, failed: failing}); !bytes.Equal(out, out2) {
			t.Fatalf("re-evaluation rendered %q, first %q", out2, out)
		}
	})
}

// checkStructure verifies the op list: contiguous pieces, well-formed
// blocks, nesting and directive limits, and bounded memory.
func checkStructure(t *testing.T, tpl *Template, body []byte, lim Limits, err error) {
	t.Helper()
	ops := tpl.ops
	at := int32(0)
	for i, o := range ops {
		if o.start != at || o.end < o.start {
			t.Fatalf("op %d (%v) spans [%d,%d), want start %d", i, o.kind, o.start, o.end, at)
		}
		at = o.end
		if o.kind >= opInclude {
			c := int(o.close)
			if c < i || c >= len(ops) || c > i && ops[c].kind != opEnd {
				t.Fatalf("op %d (%v) closes at %d", i, o.kind, c)
			}
		}
	}
	if int(at) != len(body) {
		t.Fatalf("ops end at %d, body has %d bytes", at, len(body))
	}
	if len(ops) > len(body)+1 {
		t.Fatalf("%d ops for %d bytes", len(ops), len(body))
	}
	if s := tpl.Size(); s > 64*len(body)+4096 {
		t.Fatalf("Size() = %d for %d bytes", s, len(body))
	}
	// Nesting depth of blocks.
	var depth func(from, to, d int)
	depth = func(from, to, d int) {
		if d > lim.MaxNesting {
			t.Fatalf("blocks nested %d deep, limit %d", d, lim.MaxNesting)
		}
		for i := from; i < to; {
			o := ops[i]
			if o.kind >= opInclude && int(o.close) > i {
				depth(i+1, int(o.close), d+1)
			}
			i = next(ops, i)
		}
	}
	depth(0, len(ops), 0)
	live, inert := 0, 0
	for _, o := range ops {
		if o.kind != opInclude {
			continue
		}
		n := tpl.incs[o.arg]
		if n.inert {
			inert++
			continue
		}
		live++
		if len(n.src.raw) > lim.MaxAttrLen || len(n.alt.raw) > lim.MaxAttrLen {
			t.Fatalf("live include with an attribute of %d bytes, limit %d", max(len(n.src.raw), len(n.alt.raw)), lim.MaxAttrLen)
		}
	}
	if live > lim.MaxDirectives {
		t.Fatalf("%d live includes, limit %d", live, lim.MaxDirectives)
	}
	if inert > 0 && !errors.Is(err, ErrTooManyDirectives) && !errors.Is(err, ErrAttrTooLong) {
		t.Fatalf("inert includes without a limit error: %v", err)
	}
}

// FuzzExpr checks the expression and variable parsers: no panic, variable
// references that stay inside their input, and URL substitution that keeps
// the template's structure and escapes like net/url.
func FuzzExpr(f *testing.F) {
	for _, s := range []string{
		"1==1", "!(1==1)", "$(HTTP_COOKIE{group})=='Advanced'", "(4!=5)&(4==5)|'a'<='c'",
		"$(QUERY_STRING{a}|'x y') >= -2.5", "$(HTTP_ACCEPT_LANGUAGE{en})", "((((", "!!!!1",
		"/a/$(QUERY_STRING{p})?x=$(HTTP_COOKIE{c}|'d')&$(QUERY_STRING)", "http://h/$(HTTP_HOST)", "$(HTTP_HOST)/x",
	} {
		f.Add(s, "p=..&a=1%0A&c=x/y z")
	}
	f.Fuzz(func(t *testing.T, s, query string) {
		vars := &RequestVars{
			HostName: "h", Query: query, CookieHeader: "c=" + query + "; d=" + s, AllowCookies: []string{"c", "d"},
			AcceptLang: query, UserAgentValue: s, RefererHeader: query,
		}
		tpl := &Template{}
		var x exprParser
		root, err := x.parse(tpl, []byte(s), 8)
		if err == nil {
			e := Eval{t: tpl, v: vars}
			_ = e.test(root)
		} else if root != -1 || len(tpl.exprs) != 0 || len(tpl.vars) != 0 {
			t.Fatalf("failed parse of %q left nodes behind", s)
		}

		// Variable references stay inside the input and end with ')'.
		var vs varScanner
		vs.reset([]byte(s))
		for i := 0; i+1 < len(s); i++ {
			if s[i] != '$' || s[i+1] != '(' {
				continue
			}
			if _, n, ok := vs.parse(i, len(s)); ok && (i+n > len(s) || s[i+n-1] != ')') {
				t.Fatalf("variable at %d of %q has length %d", i, s, n)
			}
		}

		// URL substitution.
		p := &parser{t: &Template{}}
		u := p.urlTmpl([]byte(s))
		e := Eval{t: p.t, v: vars}
		src, err := e.expandURL(&u)
		if err != nil {
			if src != u.raw {
				t.Fatalf("failed substitution of %q returned %q", s, src)
			}
		} else if u.parts != nil {
			// The literal text before the first variable is kept as is,
			// and it fixes the scheme, host and port.
			lit := u.parts[0].lit
			if !strings.HasPrefix(src, lit) {
				t.Fatalf("substituting %q gave %q, which lost the prefix %q", s, src, lit)
			}
			if !pathStarted([]byte(lit)) {
				t.Fatalf("substituting %q with a variable before the path succeeded", s)
			}
			if strings.ContainsAny(src[len(lit):], "\r\n\x00") && !strings.ContainsAny(s, "\r\n\x00") {
				t.Fatalf("substituting %q let a control byte in: %q", s, src)
			}
		}

		// Escaping agrees with net/url.
		if got, want := string(appendPathEscape(nil, []byte(query))), url.PathEscape(query); got != want {
			t.Fatalf("appendPathEscape(%q) = %q, want %q", query, got, want)
		}
		if got, want := string(appendQueryEscape(nil, []byte(query))), url.QueryEscape(query); got != want {
			t.Fatalf("appendQueryEscape(%q) = %q, want %q", query, got, want)
		}
		got, ok := appendQueryUnescape(nil, query)
		want, werr := url.QueryUnescape(query)
		if ok != (werr == nil) || ok && string(got) != want {
			t.Fatalf("appendQueryUnescape(%q) = %q, %v; want %q, %v", query, got, ok, want, werr)
		}
	})
}
