package fragment_test

import (
	"testing"

	"fragcache/fragment"
)

// TestMemo: an include with a literal src has one memo for its template,
// the same in every evaluation and apart from every other include's; an
// include whose src holds a variable has none.
func TestMemo(t *testing.T) {
	page := []byte(`<esi:include src="/a"/><esi:include src="/b?u=$(HTTP_COOKIE{u})"/>` +
		`<esi:choose><esi:when test="$(HTTP_COOKIE{u})=='x'"><esi:include src="/c"/></esi:when></esi:choose><esi:include src="/a"/>`)
	tpl, err := fragment.Parse(page, fragment.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := fragment.Parse(page, fragment.Limits{})
	eval := func(tp *fragment.Template, cookie string) *fragment.Eval {
		e := new(fragment.Eval)
		tp.Evaluate(&fragment.RequestVars{CookieHeader: cookie, AllowCookies: []string{"u"}}, e)
		return e
	}
	e1, e2 := eval(tpl, "u=x"), eval(tpl, "u=y")
	if len(e1.Includes) != 4 || len(e2.Includes) != 3 {
		t.Fatalf("includes: %d and %d, want 4 and 3", len(e1.Includes), len(e2.Includes))
	}
	a1 := e1.Memo(&e1.Includes[0])
	if a1 == nil {
		t.Fatal("a literal src has no memo")
	}
	if e2.Memo(&e2.Includes[0]) != a1 {
		t.Error("the same include has another memo in another evaluation")
	}
	if e1.Memo(&e1.Includes[1]) != nil || e2.Memo(&e2.Includes[1]) != nil {
		t.Error("a src with a variable has a memo")
	}
	c := e1.Memo(&e1.Includes[2])
	last := e1.Memo(&e1.Includes[3])
	if c == nil || c == a1 || last == nil || last == a1 || last == c {
		t.Error("distinct include elements share a memo (or have none)")
	}
	if e2.Memo(&e2.Includes[2]) != last {
		t.Error("the include after an untaken branch has another memo")
	}
	if o := eval(other, "u=x"); o.Memo(&o.Includes[0]) == a1 {
		t.Error("two templates share a memo")
	}
	a1.Store(42)
	if v := e2.Memo(&e2.Includes[0]).Load(); v != 42 {
		t.Errorf("memo holds %v, want what was stored", v)
	}
}
