//go:build !race

package fragment

import "testing"

// TestRenderAllocs pins the allocations of a warm Evaluate and Render of a
// page whose includes have static src: none at all, so none per include.
func TestRenderAllocs(t *testing.T) {
	tpl, e, r, dst := resolvedPage(t)
	if len(e.Includes) != 20 {
		t.Fatalf("bench page has %d includes, want 20", len(e.Includes))
	}
	allocs := testing.AllocsPerRun(100, func() {
		tpl.Evaluate(&goldenVars, e)
		dst = tpl.Render(dst[:0], e, r)
	})
	if allocs != 0 {
		t.Errorf("Evaluate+Render allocated %v times per page, want 0", allocs)
	}
}

// TestRenderAllocsWithVars pins the same for a page that substitutes
// variables in esi:vars, decides an esi:choose and renders a try.
func TestRenderAllocsWithVars(t *testing.T) {
	body := `<esi:vars>$(HTTP_HOST) $(QUERY_STRING{tab}) $(HTTP_COOKIE{user}|'guest') $(QUERY_STRING)</esi:vars>` +
		`<esi:choose><esi:when test="$(QUERY_STRING{tab})=='orders' &amp; $(HTTP_ACCEPT_LANGUAGE{en})"><esi:include src="/a"/></esi:when>` +
		`<esi:otherwise><esi:include src="/b"/></esi:otherwise></esi:choose>` +
		`<esi:try><esi:attempt><esi:include src="/c">wait</esi:include></esi:attempt><esi:except>x</esi:except></esi:try>`
	tpl, err := Parse([]byte(body), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var e Eval
	r := &fakeResolver{bodies: map[string]string{"/a": "A"}, failed: map[string]bool{}}
	tpl.Evaluate(&goldenVars, &e)
	dst := tpl.Render(nil, &e, r)
	if want := "desk.example orders Ann tab=orders&amp;id=42Await"; string(dst) != want {
		t.Fatalf("Render = %q, want %q", dst, want)
	}
	r.seen = make([]string, 0, 1000)
	allocs := testing.AllocsPerRun(100, func() {
		tpl.Evaluate(&goldenVars, &e)
		dst = tpl.Render(dst[:0], &e, r)
	})
	if allocs != 0 {
		t.Errorf("Evaluate+Render allocated %v times per page, want 0", allocs)
	}
}
