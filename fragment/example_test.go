package fragment_test

import (
	"fmt"

	"fragcache/fragment"
)

// resolver answers includes from a map; a missing fragment is pending and
// renders its placeholder.
type resolver map[string]string

func (r resolver) AppendInclude(dst []byte, e *fragment.Eval, inc *fragment.Include) ([]byte, bool) {
	if body, ok := r[inc.Src]; ok && inc.Err == nil {
		return append(dst, body...), false
	}
	return e.AppendPlaceholder(dst, inc), false
}

func Example() {
	page := []byte(`<h1>Orders</h1>
<esi:include src="/widgets/orders?user=$(HTTP_COOKIE{user})"/>
<esi:include src="/widgets/report">Loading the report…</esi:include>
<esi:vars><p>Served by $(HTTP_HOST)</p></esi:vars>`)

	// Parse once; the template can be cached and shared.
	tpl, err := fragment.Parse(page, fragment.Limits{})
	if err != nil {
		fmt.Println("parse:", err)
	}

	// Per request: evaluate, fetch what Includes lists, render.
	vars := &fragment.RequestVars{
		HostName:     "shop.example",
		CookieHeader: "user=ann; session=secret",
		AllowCookies: []string{"user"},
	}
	var e fragment.Eval
	tpl.Evaluate(vars, &e)
	for _, inc := range e.Includes {
		fmt.Println("include:", inc.Src)
	}
	out := tpl.Render(nil, &e, resolver{"/widgets/orders?user=ann": "<ul><li>#1</li></ul>"})
	fmt.Printf("%s\n", out)
	// Output:
	// include: /widgets/orders?user=ann
	// include: /widgets/report
	// <h1>Orders</h1>
	// <ul><li>#1</li></ul>
	// Loading the report…
	// <p>Served by shop.example</p>
}
