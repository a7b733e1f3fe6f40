package fragment

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.golden files")

// goldenVars, goldenBodies and goldenFailed are the request and fragment
// state every golden page is rendered with.
var (
	goldenVars = RequestVars{
		HostName: "desk.example", Query: "tab=orders&id=42", CookieHeader: "user=Ann; session=s3cr3t",
		AllowCookies: []string{"user"}, AcceptLang: "en-GB,en;q=0.8,de;q=0.5",
		UserAgentValue: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/120.0",
	}
	goldenBodies = map[string]string{
		"/widgets/header": "<div>HEADER</div>", "/widgets/orders?user=Ann": "<ul><li>order 1</li></ul>",
		"/widgets/report-cached": "<p>cached report</p>", "/widgets/weather": "Sunny", "/tabs/orders": "ORDERS TAB",
		"/widgets/pixel-url": "/img/p.gif", "/ads/house": "HOUSE AD", "/widgets/after": "AFTER",
		"/x": "X", "/y": "Y", "/body": "Included file", "/body2": "Included file 2", "/foo": "<INCL>",
		"/&": "1", "/<": "22", "/>": "333", "/'": "4444", `/"`: "55555",
	}
	goldenFailed = []string{"/widgets/report", "/ads/banner", "/widgets/notice"}
)

// TestGolden parses and renders each testdata/*.html page and compares a
// readable dump of the result with testdata/*.golden. Run with -update to
// rewrite the golden files after an intended change.
func TestGolden(t *testing.T) {
	pages, err := filepath.Glob(filepath.Join("testdata", "*.html"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no testdata pages: %v", err)
	}
	for _, page := range pages {
		name := strings.TrimSuffix(filepath.Base(page), ".html")
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(page)
			if err != nil {
				t.Fatal(err)
			}
			got := goldenDump(body)
			golden := strings.TrimSuffix(page, ".html") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("dump of %s differs from %s (run go test -update after an intended change)\n%s",
					page, golden, firstDiff(got, want))
			}
		})
	}
}

func goldenDump(body []byte) []byte {
	var b bytes.Buffer
	tpl, err := Parse(body, Limits{})
	if raw := rawRebuild(tpl); !bytes.Equal(raw, body) {
		fmt.Fprintf(&b, "!! raw pieces do not rebuild the body\n")
	}
	fmt.Fprintf(&b, "== template (HasESI %v)\n", tpl.HasESI())
	dumpOps(&b, tpl, 0, len(tpl.ops), 0)
	b.WriteString("== errors\n")
	for _, e := range flatten(err) {
		var se *SyntaxError
		if errors.As(e, &se) {
			fmt.Fprintf(&b, "line %d offset %d: %s\n", se.Line, se.Offset, se.Msg)
		} else {
			fmt.Fprintf(&b, "%v\n", e)
		}
	}
	var e Eval
	tpl.Evaluate(&goldenVars, &e)
	b.WriteString("== includes\n")
	for _, inc := range e.Includes {
		fmt.Fprintf(&b, "%d %s\n", inc.Index, describe(inc))
	}
	r := &fakeResolver{bodies: goldenBodies, failed: map[string]bool{}}
	for _, f := range goldenFailed {
		r.failed[f] = true
	}
	out := tpl.Render(nil, &e, r)
	b.WriteString("== resolved\n")
	for _, s := range r.seen {
		fmt.Fprintf(&b, "%s\n", s)
	}
	b.WriteString("== render\n")
	if len(out) > 16<<10 {
		// Large pages: the op dump above is the readable part.
		fmt.Fprintf(&b, "(%d bytes, sha256 %x)\n", len(out), sha256.Sum256(out))
	} else {
		b.Write(out)
	}
	return b.Bytes()
}

func dumpOps(b *bytes.Buffer, t *Template, from, to, depth int) {
	ops := t.ops
	for i := from; i < to; {
		o := ops[i]
		ind := strings.Repeat("  ", depth)
		raw := t.src[o.start:o.end]
		switch o.kind {
		case opText:
			fmt.Fprintf(b, "%stext %s\n", ind, shorten(raw))
		case opVar:
			fmt.Fprintf(b, "%svar %q\n", ind, raw)
		case opInclude:
			n := t.incs[o.arg]
			extra := ""
			if n.inert {
				extra = " inert"
			}
			fmt.Fprintf(b, "%sinclude src=%q%s %s\n", ind, n.src.raw, extra, shorten(raw))
		case opWhen:
			fmt.Fprintf(b, "%swhen %s\n", ind, shorten(raw))
		default:
			fmt.Fprintf(b, "%s%v %s\n", ind, o.kind, shorten(raw))
		}
		if o.kind >= opInclude && int(o.close) > i {
			dumpOps(b, t, i+1, int(o.close), depth+1)
			fmt.Fprintf(b, "%send %s\n", ind, shorten(t.src[ops[o.close].start:ops[o.close].end]))
		}
		i = next(ops, i)
	}
}

// shorten quotes raw, eliding the middle of long pieces.
func shorten(raw []byte) string {
	if len(raw) <= 120 {
		return fmt.Sprintf("%q", raw)
	}
	return fmt.Sprintf("%q…(%d bytes)…%q", raw[:60], len(raw)-90, raw[len(raw)-30:])
}

func firstDiff(got, want []byte) string {
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(gl) || i < len(wl); i++ {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			return fmt.Sprintf("line %d:\n got %q\nwant %q", i+1, g, w)
		}
	}
	return ""
}
