package fragment

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/net/html"
)

func benchPage(tb testing.TB) []byte {
	tb.Helper()
	page, err := os.ReadFile("testdata/bench.html")
	if err != nil {
		tb.Fatal(err)
	}
	return page
}

// BenchmarkParse parses a 100 KB legacy page with 20 includes.
func BenchmarkParse(b *testing.B) {
	page := benchPage(b)
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(page, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkXNetHTMLTokenizer runs x/net/html's tokenizer over the same page,
// as the yardstick for BenchmarkParse.
func BenchmarkXNetHTMLTokenizer(b *testing.B) {
	page := benchPage(b)
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	for b.Loop() {
		z := html.NewTokenizer(bytes.NewReader(page))
		for z.Next() != html.ErrorToken {
			_ = z.Token()
		}
	}
}

// sliceResolver resolves every include from bodies, indexed like
// Eval.Includes.
type sliceResolver struct{ bodies [][]byte }

func (r *sliceResolver) AppendInclude(dst []byte, _ *Eval, inc *Include) ([]byte, bool) {
	return append(dst, r.bodies[inc.Index]...), false
}

func resolvedPage(tb testing.TB) (*Template, *Eval, *sliceResolver, []byte) {
	tb.Helper()
	tpl, err := Parse(benchPage(tb), Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	e := new(Eval)
	tpl.Evaluate(&goldenVars, e)
	r := &sliceResolver{}
	for _, inc := range e.Includes {
		r.bodies = append(r.bodies, []byte("<div class=\"widget\">"+inc.Src+" rendered by the fragment</div>"))
	}
	dst := tpl.Render(nil, e, r)
	return tpl, e, r, dst
}

// BenchmarkEvaluateRender evaluates and renders the page with all 20
// fragments resolved, reusing the Eval and the output buffer.
func BenchmarkEvaluateRender(b *testing.B) {
	tpl, e, r, dst := resolvedPage(b)
	b.SetBytes(int64(len(dst)))
	b.ReportAllocs()
	for b.Loop() {
		tpl.Evaluate(&goldenVars, e)
		dst = tpl.Render(dst[:0], e, r)
	}
	b.ReportMetric(float64(len(e.Includes)), "includes/op")
}
