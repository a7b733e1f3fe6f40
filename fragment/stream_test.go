package fragment

import (
	"bytes"
	"strings"
	"testing"
)

// streamFlags parses body and lists, per active include in page order,
// whether it may stream ("y") or not ("n").
func streamFlags(t *testing.T, body string) string {
	t.Helper()
	tpl, _ := Parse([]byte(body), Limits{Stream: true})
	var e Eval
	tpl.Evaluate(&RequestVars{}, &e)
	var b strings.Builder
	for _, inc := range e.Includes {
		if inc.Streamable {
			b.WriteByte('y')
		} else {
			b.WriteByte('n')
		}
	}
	return b.String()
}

func TestStreamable(t *testing.T) {
	const inc = `<esi:include src="/f"/>`
	const txt = `<esi:include src="/t">wait</esi:include>` // a text placeholder
	cases := []struct {
		name, body, want string
	}{
		{"div in body", `<html><head></head><body><div>` + inc + `</div></body></html>`, "y"},
		{"table cell", `<body><table><tr><td>` + inc + `</td></tr></table></body>`, "y"},
		{"list", `<body><ul><li>` + inc + `</li></ul></body>`, "y"},
		// Text directly in a table, section or row is moved out in front
		// of the table by the browser, away from its anchors.
		{"table rows", `<body><table><tbody>` + txt + `<tr><th>` + inc + `</th></tr>` + txt + `</tbody></table>` + inc + `</body>`, "nyny"},
		{"table row", `<body><table><tr>` + txt + `<td>a<td>` + txt + `</table></body>`, "ny"},
		{"unclosed cell then a row", `<body><table><tr><td>a<tr>` + txt + `</table></body>`, "n"},
		{"caption", `<body><TABLE><caption>` + inc + `</caption></TABLE></body>`, "y"},
		{"table in a cell", `<body><table><tr><td><table>` + txt + `</table>` + txt + `</td></tr>` + txt + `</table></body>`, "nyn"},
		{"rows placeholder in a table", `<body><table><tbody><esi:include src="/a"> <tr><td>wait</td></tr> </esi:include>` + inc + txt +
			`<esi:include src="/c"><trx>no</trx></esi:include></tbody></table></body>`, "yynn"},
		{"table in a template", `<body><template><table></template>` + inc + `</body>`, "y"},
		{"head", `<html><head>` + inc + `</head><body>` + inc + `</body>`, "ny"},
		{"before body", `<!doctype html><html>` + inc + `<body>x</body>`, "n"},
		{"after body", `<body>x</body>` + inc + `</html>`, "n"},
		{"after html", `<body>x</html>` + inc, "n"},
		{"attribute value", `<body><a href="` + inc + `">x</a>` + inc + `</body>`, "ny"},
		{"attribute single quotes", `<body><img alt='a ` + inc + `'>` + inc + `</body>`, "ny"},
		{"unquoted attribute", `<body><div class=` + inc + `>x</div></body>`, "n"},
		{"tag name position", `<body><div ` + inc + `>x</div></body>`, "n"},
		{"gt in quoted attr", `<body><div title="a>b ` + inc + `">` + inc + `</div></body>`, "ny"},
		{"script", `<body><script>var x = "` + inc + `";</script>` + inc + `</body>`, "ny"},
		{"script right before end tag", `<body><script>` + inc + `</script></body>`, "n"},
		{"script end tag case", `<body><SCRIPT type=x>` + inc + `</ScRiPt>` + inc + `</body>`, "ny"},
		{"script holding </scripty", `<body><script>a</scripty>` + inc + `</script>` + inc + `</body>`, "ny"},
		{"style", `<body><style>` + inc + `</style></body>`, "n"},
		{"title", `<body><title>` + inc + `</title></body>`, "n"},
		{"textarea", `<body><textarea>` + inc + `</textarea>` + inc + `</body>`, "ny"},
		{"xmp iframe noembed noframes noscript", `<body><xmp>` + inc + `</xmp><iframe>` + inc + `</iframe><noembed>` + inc +
			`</noembed><noframes>` + inc + `</noframes><noscript>` + inc + `</noscript>` + inc + `</body>`, "nnnnny"},
		{"plaintext", `<body><plaintext>` + inc + `</plaintext>` + inc, "nn"},
		{"svg", `<body><svg><g>` + inc + `</g></svg>` + inc + `</body>`, "ny"},
		{"nested svg", `<body><svg><svg></svg>` + inc + `</svg>` + inc + `</body>`, "ny"},
		{"self-closing svg", `<body><svg/>` + inc + `</body>`, "y"},
		{"math", `<body><math><mi>` + inc + `</mi></math></body>`, "n"},
		{"title inside svg is not raw", `<body><svg><title>` + inc + `</title></svg>` + inc + `</body>`, "ny"},
		{"page template element", `<body><template>` + inc + `</template>` + inc + `</body>`, "ny"},
		{"try attempt and except", `<body><esi:try><esi:attempt>` + inc + `</esi:attempt><esi:except>` + inc +
			`</esi:except></esi:try>` + inc + `</body>`, "nny"},
		{"choose branch", `<body><esi:choose><esi:when test="1==1">` + inc + `</esi:when></esi:choose></body>`, "y"},
		{"esi comment wrapper", `<body><!--esi <p>` + inc + `</p> --></body>`, "y"},
		{"fragment without body", `<p>` + inc + `</p>`, "y"},
		{"fragment with head", `<head>` + inc + `</head><p>` + inc + `</p>`, "ny"},
		{"comment before body tag", `<!-- <body> -->` + inc + `<body>` + inc + `</body>`, "ny"},
		{"doctype", `<!DOCTYPE html><body>` + inc + `</body>`, "y"},
		{"less-than in text", `<body>1 < 2 ` + inc + `</body>`, "y"},
		{"body attr with include", `<body class="` + inc + `">` + inc + `</body>`, "ny"},
		{"include placeholder body", `<body><esi:include src="/a"><b>wait</b></esi:include>` + inc + `</body>`, "yy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := streamFlags(t, tc.body); got != tc.want {
				t.Errorf("streamable = %q, want %q\nbody: %s", got, tc.want, tc.body)
			}
		})
	}
}

func TestTail(t *testing.T) {
	const inc = `<esi:include src="/f"/>`
	cases := []struct {
		name, body, tail string // tail: the body from Tail on
	}{
		{"none", `<p>` + inc + `</p>`, ``},
		{"one", `<body>` + inc + `</body></html>`, `</body></html>`},
		{"last of two", `<body>` + inc + `</body>x</body>y`, `</body>y`},
		{"case", `<BODY>` + inc + `</BODY >`, `</BODY >`},
		{"in a comment", `<body>` + inc + `</body><!-- </body> -->`, `</body><!-- </body> -->`},
		{"in a script", `<body>` + inc + `</body><script>"</body>"</script>`, `</body><script>"</body>"</script>`},
		{"in an esi block", `<body>` + inc + `</body><esi:choose><esi:when test="1==1"></body></esi:when></esi:choose>`, ``},
		{"in an esi comment region", `<body>` + inc + `<!--esi </body> -->`, `</body> -->`}, // rendered: the region's text is the page's
		{"after the last include", `<body>` + inc + `<p>x</p></body>`, `</body>`},
		{"not bodyx", `<body>` + inc + `</bodyx>`, ``},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tpl, _ := Parse([]byte(tc.body), Limits{Stream: true})
			if got := tc.body[tpl.Tail():]; got != tc.tail {
				t.Errorf("tail = %q, want %q", got, tc.tail)
			}
			checkSplit(t, tpl)
		})
	}
}

func TestHasMetaCSP(t *testing.T) {
	cases := []struct {
		body string
		want bool
	}{ // a template without includes never streams: each case has one
		{`<head><meta http-equiv="Content-Security-Policy" content="script-src 'none'"></head>`, true},
		{`<META HTTP-EQUIV=content-security-policy CONTENT="x">`, true},
		{`<meta http-equiv = 'Content-Security-Policy'>`, true},
		{`<meta http-equiv="Content-Security-Policy-Report-Only" content="x">`, true},
		{`<meta charset="utf-8"><meta http-equiv="refresh" content="5">`, false},
		{`<!-- <meta http-equiv="Content-Security-Policy"> -->`, false},
		{`<script>"<meta http-equiv='Content-Security-Policy'>"</script>`, false},
		{`<p>Content-Security-Policy</p>`, false},
		{`<esi:include src="/a"/><meta http-equiv="Content-Security-Policy">`, true},
		{`<esi:include src="/a"/><meta content="a'b" http-equiv="Content-Security-Policy">`, true},
		// Conservative: a value that names it counts too (the page then
		// just is not streamed).
		{`<esi:include src="/a"/><meta content='x http-equiv=Content-Security-Policy'>`, true},
	}
	for _, tc := range cases {
		tpl, _ := Parse([]byte(`<esi:include src="/x"/>`+tc.body), Limits{Stream: true})
		if got := tpl.HasMetaCSP(); got != tc.want {
			t.Errorf("HasMetaCSP(%q) = %v, want %v", tc.body, got, tc.want)
		}
	}
}

// checkSplit checks that RenderHead and RenderTail together render what
// Render does, with every include resolved and with every one pending.
func checkSplit(t *testing.T, tpl *Template) {
	t.Helper()
	var e Eval
	tpl.Evaluate(&RequestVars{HostName: "h", Query: "a=1"}, &e)
	for _, r := range []*fakeResolver{
		{bodies: map[string]string{}, failed: map[string]bool{}},
		{bodies: allBodies(&e), failed: map[string]bool{}},
	} {
		whole := tpl.Render(nil, &e, r)
		split := tpl.RenderTail(tpl.RenderHead(nil, &e, r), &e, r)
		if !bytes.Equal(whole, split) {
			t.Fatalf("head+tail = %q, Render = %q", split, whole)
		}
	}
	if n := tpl.Tail(); n < 0 || n > len(tpl.src) {
		t.Fatalf("Tail = %d outside [0, %d]", n, len(tpl.src))
	}
}

func allBodies(e *Eval) map[string]string {
	m := map[string]string{}
	for _, inc := range e.Includes {
		m[inc.Src] = "<i>" + inc.Src + "</i>"
	}
	return m
}

// FuzzStream checks that the stream scan never panics, that head and tail
// rebuild the page, that the tail starts at a "</body" when it is not the
// end, and that no include inside a tag or a script is streamable.
func FuzzStream(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Add(`<html><head><title><esi:include src="/t"/></title></head><body><div><esi:include src="/a"/></div></body></html>`)
	f.Add(`<body><a href="<esi:include src="/a"/>">x</a><svg><esi:include src="/s"/></svg></body><!-- </body> -->`)
	f.Add(`<body><script><esi:include src="/a"/></script><esi:try><esi:attempt><esi:include src="/b"/></esi:attempt></esi:try></body>`)
	f.Fuzz(func(t *testing.T, body string) {
		tpl, _ := Parse([]byte(body), Limits{Stream: true})
		checkSplit(t, tpl)
		if n := tpl.Tail(); n < len(body) && !hasPrefixFold([]byte(body[n:]), "</body") {
			t.Fatalf("tail of %q starts at %q", body, body[n:])
		}
		var e Eval
		tpl.Evaluate(&RequestVars{}, &e)
		for _, inc := range e.Includes {
			if !inc.Streamable {
				continue
			}
			if inc.InAttempt || inc.Deferred {
				t.Fatalf("include %q in esi:try is streamable in %q", inc.Src, body)
			}
			// The literal text before a streamable include never leaves a
			// tag or a script open.
			o := tpl.ops[inc.node]
			before := flatBefore(tpl, int(o.start))
			if lt, gt := bytes.LastIndexByte(before, '<'), bytes.LastIndexByte(before, '>'); lt > gt && !strings.ContainsAny(string(before[lt:]), "\"' =") && lt+1 < len(before) && isLetter(before[lt+1]) {
				t.Fatalf("include %q inside a tag is streamable in %q", inc.Src, body)
			}
			low := strings.ToLower(string(before))
			if s := strings.LastIndex(low, "<script>"); s >= 0 && (s == 0 || low[s-1] == '>') &&
				!strings.Contains(low[s:], "</script") && !strings.Contains(low[:s], "<!") && !strings.ContainsAny(low[:s], "\"'") {
				t.Fatalf("include %q inside a script is streamable in %q", inc.Src, body)
			}
		}
	})
}

// flatBefore is the literal text of tpl's ops before src offset at.
func flatBefore(tpl *Template, at int) []byte {
	var b []byte
	for _, o := range tpl.ops {
		if int(o.start) >= at {
			break
		}
		if o.kind == opText {
			b = append(b, tpl.src[o.start:o.end]...)
		}
	}
	return b
}
