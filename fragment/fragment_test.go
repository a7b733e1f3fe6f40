package fragment

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

type renderCase struct {
	name   string
	body   string
	vars   RequestVars
	bodies map[string]string // fragment bodies by src
	failed []string          // srcs that failed
	want   string            // rendered page
	incs   []string          // describe() of Eval.Includes
	seen   []string          // srcs the resolver saw, in order; nil: same as incs' srcs
	errs   []string          // substrings of the syntax errors, in order
}

var frags = map[string]string{
	"/a": "A", "/b": "B", "/c": "C", "/alt": "ALT",
	"http://example.com/1.html": "ONE", "http://bak.example.com/2.html": "TWO",
}

func runCases(t *testing.T, cases []renderCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := Parse([]byte(tc.body), Limits{})
			var got []string
			var se *SyntaxError
			for _, e := range flatten(err) {
				if errors.As(e, &se) {
					got = append(got, se.Msg)
				}
			}
			if len(got) != len(tc.errs) {
				t.Fatalf("Parse(%q) syntax errors = %q, want %d matching %q", tc.body, got, len(tc.errs), tc.errs)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.errs[i]) {
					t.Errorf("Parse(%q) syntax error %d = %q, want it to contain %q", tc.body, i, got[i], tc.errs[i])
				}
			}
			if raw := rawRebuild(tpl); string(raw) != tc.body {
				t.Errorf("raw pieces of %q rebuild %q", tc.body, raw)
			}
			bodies := tc.bodies
			if bodies == nil {
				bodies = frags
			}
			r := &fakeResolver{bodies: bodies, failed: map[string]bool{}}
			for _, f := range tc.failed {
				r.failed[f] = true
			}
			vars := tc.vars
			var e Eval
			tpl.Evaluate(&vars, &e)
			if gotIncs := describeAll(e.Includes); !slices.Equal(gotIncs, tc.incs) && !(len(gotIncs) == 0 && len(tc.incs) == 0) {
				t.Errorf("Evaluate(%q) includes:\n got %q\nwant %q", tc.body, gotIncs, tc.incs)
			}
			out := tpl.Render(nil, &e, r)
			if string(out) != tc.want {
				t.Errorf("Render(%q):\n got %q\nwant %q", tc.body, out, tc.want)
			}
			if tc.seen != nil && !slices.Equal(r.seen, tc.seen) {
				t.Errorf("Render(%q) resolved %q, want %q", tc.body, r.seen, tc.seen)
			}
		})
	}
}

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestInclude(t *testing.T) {
	runCases(t, []renderCase{
		{name: "self-closing", body: `x<esi:include src="/a"/>y`, want: "xAy", incs: []string{"/a"}},
		{name: "space before slash", body: `<esi:include src="/a" />`, want: "A", incs: []string{"/a"}},
		{name: "single quotes", body: `<esi:include src='/a'/>`, want: "A", incs: []string{"/a"}},
		{name: "any whitespace", body: "<esi:include\n\tsrc\n=\r\n'/a'\t\n/>", want: "A", incs: []string{"/a"}},
		{name: "quote of the other kind inside", body: `<esi:include src="/a?x='1'"/>`, want: "",
			bodies: map[string]string{}, incs: []string{"/a?x='1'"}},
		{name: "entities decoded", body: `<esi:include src="/a?x=1&amp;y=2"/>`, want: "",
			bodies: map[string]string{}, incs: []string{"/a?x=1&y=2"}},
		{name: "placeholder while pending", body: `<esi:include src="/slow">Loading…</esi:include>`,
			want: "Loading…", incs: []string{"/slow"}},
		{name: "placeholder ESI renders its own placeholders", body: `<esi:include src="/slow">[<esi:include src="/a"/>]</esi:include>`,
			want: "[]", incs: []string{"/slow"}},
		{name: "include open tag ends a placeholder that is still open", body: `<esi:include src="/slow">[<esi:include src="/a">inner</esi:include>]</esi:include>`,
			want: "[A]", incs: []string{"/slow", "/a"}, errs: []string{"stray </esi:include>"}},
		{name: "fragment replaces placeholder", body: `<esi:include src="/a">Loading</esi:include>`, want: "A", incs: []string{"/a"}},
		{name: "attributes", body: `<esi:include src="/x" alt="/alt" onerror="continue" timeout="250ms" ttl="90"/>`,
			failed: []string{"/x"}, want: "ALT", incs: []string{"/x alt=/alt continue timeout=250ms ttl=1m30s"}},
		{name: "integer timeout is milliseconds", body: `<esi:include src="/a" timeout="1500" ttl="2m"/>`,
			want: "A", incs: []string{"/a timeout=1.5s ttl=2m0s"}},
		{name: "ttl clamped to a day", body: `<esi:include src="/a" ttl="1000h"/>`, want: "A", incs: []string{"/a ttl=24h0m0s"}},
		{name: "bad timeout reported", body: `<esi:include src="/a" timeout="soon"/>`, want: "A", incs: []string{"/a"},
			errs: []string{"invalid esi:include timeout"}},
		{name: "failed uses alt", body: `<esi:include src="/x" alt="/alt"/>`, failed: []string{"/x"}, want: "ALT",
			incs: []string{"/x alt=/alt"}},
		{name: "failed continue renders nothing", body: `a<esi:include src="/x" onerror="continue">ph</esi:include>b`,
			failed: []string{"/x"}, want: "ab", incs: []string{"/x continue"}},
		{name: "failed renders placeholder", body: `a<esi:include src="/x">ph</esi:include>b`,
			failed: []string{"/x"}, want: "aphb", incs: []string{"/x"}},
		{name: "in attribute value", body: `<a href="<esi:include src="/a"/>">`, want: `<a href="A">`, incs: []string{"/a"}},
		{name: "in script", body: `<script>if (a<b) { x = "<esi:include src="/a"/>"; }</script>`,
			want: `<script>if (a<b) { x = "A"; }</script>`, incs: []string{"/a"}},
		{name: "without src is literal", body: `<esi:include alt="/a"/>`, want: `<esi:include alt="/a"/>`,
			errs: []string{"esi:include without src"}},
		{name: "duplicate src listed twice", body: `<esi:include src="/a"/><esi:include src="/a"/>`, want: "AA",
			incs: []string{"/a", "/a"}},
	})
}

func TestRemoveCommentWrapper(t *testing.T) {
	runCases(t, []renderCase{
		{name: "remove", body: `a<esi:remove><esi:include src="/a"/>gone</esi:remove>b`, want: "ab"},
		{name: "comment empty", body: `a<esi:comment text="the &quot;ad&quot;"/>b`, want: "ab"},
		{name: "comment block", body: `a<esi:comment>x</esi:comment>b`, want: "ab"},
		{name: "esi wrapper", body: `a<!--esi <esi:include src="/a"/> -->b`, want: "a A b", incs: []string{"/a"}},
		{name: "esi wrapper plain text", body: `<!--esi<p>hi</p>-->`, want: `<p>hi</p>`},
		{name: "plain comment is not live", body: `<!-- <esi:include src="/a"/> -->`, want: `<!-- <esi:include src="/a"/> -->`},
		{name: "empty comments", body: `<!--><esi:include src="/a"/><!--->`, want: `<!-->A<!--->`, incs: []string{"/a"}},
		{name: "unclosed plain comment hides the rest", body: `<!-- <esi:include src="/a"/>`, want: `<!-- <esi:include src="/a"/>`},
		{name: "cdata is not live", body: `<![CDATA[<esi:include src="/a"/>]]><esi:include src="/b"/>`,
			want: `<![CDATA[<esi:include src="/a"/>]]>B`, incs: []string{"/b"}},
		{name: "unclosed esi wrapper", body: `<!--esi <esi:include src="/a"/>`, want: `<!--esi A`, incs: []string{"/a"},
			errs: []string{"unclosed <!--esi"}},
		{name: "unclosed remove is literal", body: `a<esi:remove>b<esi:include src="/a"/>`,
			want: `a<esi:remove>b<esi:include src="/a"/>`, errs: []string{"unclosed esi:remove"}},
		{name: "tag cut by wrapper end is literal", body: `<!--esi <esi:include src="x-->"/>`,
			want: ` <esi:include src="x"/>`, errs: []string{"malformed esi tag"}},
	})
}

func TestTry(t *testing.T) {
	try := `<esi:try><esi:attempt>a<esi:include src="/x"/>b</esi:attempt><esi:except>e<esi:include src="/c"/></esi:except></esi:try>`
	runCases(t, []renderCase{
		{name: "attempt succeeds", body: try, bodies: map[string]string{"/x": "X", "/c": "C"},
			want: "aXb", incs: []string{"/x attempt", "/c deferred"}, seen: []string{"/x"}},
		{name: "attempt fails, except renders", body: try, failed: []string{"/x"},
			want: "eC", incs: []string{"/x attempt", "/c deferred"}, seen: []string{"/x", "/c"}},
		{name: "pending does not fail the attempt", body: try, bodies: map[string]string{},
			want: "ab", incs: []string{"/x attempt", "/c deferred"}, seen: []string{"/x"}},
		{name: "alt saves the attempt", body: `<esi:try><esi:attempt><esi:include src="/x" alt="/alt"/></esi:attempt><esi:except>E</esi:except></esi:try>`,
			failed: []string{"/x"}, want: "ALT", incs: []string{"/x alt=/alt attempt"}},
		{name: "continue saves the attempt", body: `<esi:try><esi:attempt>a<esi:include src="/x" onerror="continue"/></esi:attempt><esi:except>E</esi:except></esi:try>`,
			failed: []string{"/x"}, want: "a", incs: []string{"/x continue attempt"}},
		{name: "text between branches is dropped", body: "<esi:try>\n  <esi:attempt>A</esi:attempt>\n  <esi:except>E</esi:except>\n</esi:try>", want: "A"},
		{name: "nested try failure stays inside", body: `<esi:try><esi:attempt>1<esi:try><esi:attempt><esi:include src="/x"/></esi:attempt><esi:except>2</esi:except></esi:try>3</esi:attempt><esi:except>4</esi:except></esi:try>`,
			failed: []string{"/x"}, want: "123", incs: []string{"/x attempt"}},
		{name: "failed except fails the outer attempt", body: `<esi:try><esi:attempt>1<esi:try><esi:attempt><esi:include src="/x"/></esi:attempt><esi:except><esi:include src="/y"/></esi:except></esi:try></esi:attempt><esi:except>4</esi:except></esi:try>`,
			failed: []string{"/x", "/y"}, want: "4", incs: []string{"/x attempt", "/y attempt deferred"}},
		{name: "no except", body: `a<esi:try><esi:attempt><esi:include src="/x"/></esi:attempt></esi:try>b`,
			failed: []string{"/x"}, want: "ab", incs: []string{"/x attempt"}},
		{name: "include directly in try is literal and inactive", body: `<esi:try><esi:include src="/a"/><esi:attempt>A</esi:attempt></esi:try>`,
			want: "A", errs: []string{"esi:include directly inside esi:try"}},
		{name: "second attempt ignored", body: `<esi:try><esi:attempt>A</esi:attempt><esi:attempt>B</esi:attempt></esi:try>`,
			want: "A", errs: []string{"misplaced esi:attempt", "stray </esi:attempt>"}},
	})
}

func TestChoose(t *testing.T) {
	choose := `<esi:choose><esi:when test="$(QUERY_STRING{tab})=='a'"><esi:include src="/a"/></esi:when>` +
		`<esi:when test="$(QUERY_STRING{tab})=='b'">b<esi:include src="/b"/></esi:when>` +
		`<esi:otherwise><esi:include src="/c"/></esi:otherwise></esi:choose>`
	runCases(t, []renderCase{
		{name: "first when", body: choose, vars: RequestVars{Query: "tab=a"}, want: "A", incs: []string{"/a"}},
		{name: "second when", body: choose, vars: RequestVars{Query: "tab=b&tab=a"}, want: "bB", incs: []string{"/b"}},
		{name: "otherwise", body: choose, vars: RequestVars{Query: "x=1"}, want: "C", incs: []string{"/c"}},
		{name: "no otherwise, no match", body: `<esi:choose><esi:when test="1==2">x</esi:when></esi:choose>`, want: ""},
		{name: "first true wins", body: `<esi:choose><esi:when test="1==1">1</esi:when><esi:when test="2==2">2</esi:when></esi:choose>`, want: "1"},
		{name: "invalid test is false", body: `<esi:choose><esi:when test="1==">1</esi:when><esi:otherwise>o</esi:otherwise></esi:choose>`,
			want: "o", errs: []string{"esi:when test"}},
		{name: "when outside choose is literal", body: `<esi:when test="1==1">x</esi:when>`,
			want: `<esi:when test="1==1">x</esi:when>`, errs: []string{"misplaced esi:when", "stray </esi:when>"}},
		{name: "test ending in a lone dollar", body: `<esi:choose><esi:when test="1==$">1</esi:when><esi:otherwise>o</esi:otherwise></esi:choose>`,
			want: "o", errs: []string{"esi:when test: invalid variable"}},
		{name: "test with entities", body: `<esi:choose><esi:when test="1 &lt; 2 &amp; 'a'=='a'">y</esi:when></esi:choose>`, want: "y"},
		{name: "test with raw operators", body: `<esi:choose><esi:when test='2 > 1 & "x" != 1'>y</esi:when></esi:choose>`,
			want: "", errs: []string{"esi:when test"}},
	})
}

func TestExpressions(t *testing.T) {
	vars := RequestVars{
		HostName: "www.example.com", Query: "n=10&s=abc&e=", CookieHeader: "group=Advanced; visits=3",
		AllowCookies: []string{"group", "visits"}, AcceptLang: "da, en-gb;q=0.8, fr;q=0",
		UserAgentValue: "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)",
	}
	cases := []struct {
		test string
		want bool
	}{
		{"1==1", true}, {"!(1==1)", false}, {"!('a'<='c')", false}, {"(1==1)|('abc'=='def')", true},
		{"(4!=5)&(4==5)", false}, {"$(HTTP_COOKIE{group})=='Advanced'", true},
		{"$(HTTP_COOKIE{group})=='Basic User'", false}, {"$(HTTP_HOST)=='www.example.com'", true},
		{"$(QUERY_STRING{n}) > 9", true}, {"$(QUERY_STRING{n}) > '9'", true}, {"'10' > '9'", true},
		{"'abc' > 'abd'", false}, {"$(QUERY_STRING{s}) >= 'abc'", true}, {"2.5 < 10", true}, {"-1 < 0", true},
		{"$(HTTP_ACCEPT_LANGUAGE{en})", true}, {"$(HTTP_ACCEPT_LANGUAGE{fr})", false}, {"$(HTTP_ACCEPT_LANGUAGE{de})", false},
		{"$(HTTP_ACCEPT_LANGUAGE{da})=='true'", true}, {"$(HTTP_USER_AGENT{browser})=='MSIE'", true},
		{"$(HTTP_USER_AGENT{os})=='WIN'", true}, {"$(HTTP_USER_AGENT{version})=='6.0'", true},
		{"$(QUERY_STRING{e})", false}, {"$(QUERY_STRING{e}|'x')=='x'", true}, {"$(QUERY_STRING{missing}|7)==7", true},
		{"$(HTTP_COOKIE{visits}) == 3", true}, {"1==1 | 1==2 & 1==2", true}, {"(1==1 | 1==2) & 1==2", false},
		{"!$(QUERY_STRING{e})", true}, {"$(HTTP_REFERER)==''", true}, {"1 && 1", true}, {"0 || 0", false},
	}
	for _, tc := range cases {
		t.Run(tc.test, func(t *testing.T) {
			body := `<esi:choose><esi:when test="` + tc.test + `">T</esi:when><esi:otherwise>F</esi:otherwise></esi:choose>`
			tpl, err := Parse([]byte(body), Limits{})
			if err != nil {
				t.Fatalf("Parse(%q): %v", body, err)
			}
			var e Eval
			tpl.Evaluate(&vars, &e)
			got := string(tpl.Render(nil, &e, nil)) == "T"
			if got != tc.want {
				t.Errorf("test %q = %v, want %v", tc.test, got, tc.want)
			}
		})
	}
}

func TestVars(t *testing.T) {
	vars := RequestVars{
		HostName: "shop.example", RefererHeader: `http://x/?a="<b>"`, Query: "q=a+b%26c&x=1",
		CookieHeader: `type=basic; name="Ann <3"; secret=s`, AllowCookies: []string{"type", "name"},
		AcceptLang: "en-US,en;q=0.9", UserAgentValue: "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
	}
	runCases(t, []renderCase{
		{name: "host and referer escaped", vars: vars, body: `<esi:vars>$(HTTP_HOST) $(HTTP_REFERER)</esi:vars>`,
			want: `shop.example http://x/?a=&#34;&lt;b&gt;&#34;`},
		{name: "cookies only when allowed", vars: vars, body: `<esi:vars>[$(HTTP_COOKIE{name})][$(HTTP_COOKIE{secret})][$(HTTP_COOKIE{secret}|'none')]</esi:vars>`,
			want: `[Ann &lt;3][][none]`},
		{name: "query", vars: vars, body: `<esi:vars>$(QUERY_STRING{q}) | $(QUERY_STRING)</esi:vars>`,
			want: `a b&amp;c | q=a+b%26c&amp;x=1`},
		{name: "defaults", vars: vars, body: `<esi:vars>$(QUERY_STRING{none}|dflt) $(QUERY_STRING{none}|'a b') $(HTTP_COOKIE{none}|'')</esi:vars>`,
			want: `dflt a b `},
		{name: "lists and user agent", vars: vars, body: `<esi:vars>$(HTTP_ACCEPT_LANGUAGE{en}) $(HTTP_ACCEPT_LANGUAGE{de}) $(HTTP_USER_AGENT{browser}) $(HTTP_USER_AGENT{os}) $(HTTP_USER_AGENT{version})</esi:vars>`,
			want: `true false MOZILLA UNIX 5.0`},
		{name: "outside vars no substitution", vars: vars, body: `$(HTTP_HOST)`, want: `$(HTTP_HOST)`},
		{name: "unknown names and jquery stay", vars: vars, body: `<esi:vars><script>$(document).ready($(HTTP_HOST))</script></esi:vars>`,
			want: `<script>$(document).ready(shop.example)</script>`},
		{name: "spec image example", vars: vars, body: `<esi:vars><img src="http://www.example.com/$(HTTP_COOKIE{type})/hello.gif"/ ></esi:vars>`,
			want: `<img src="http://www.example.com/basic/hello.gif"/ >`},
		{name: "spec esi comment example", vars: vars, body: `<!--esi <p><esi:vars>Hello, $(HTTP_COOKIE{name})!</esi:vars></p> -->`,
			want: ` <p>Hello, Ann &lt;3!</p> `},
		{name: "includes inside vars are live", vars: vars, body: `<esi:vars>$(HTTP_HOST)<esi:include src="/a"/></esi:vars>`,
			want: `shop.exampleA`, incs: []string{"/a"}},
		{name: "comments inside vars keep variables", vars: vars, body: `<esi:vars><!-- $(HTTP_HOST) --></esi:vars>`,
			want: `<!-- $(HTTP_HOST) -->`},
		{name: "unterminated variable is text", vars: vars, body: `<esi:vars>$(HTTP_HOST $(HTTP_COOKIE{type}</esi:vars>`,
			want: `$(HTTP_HOST $(HTTP_COOKIE{type}`},
	})
}

func TestURLSubstitution(t *testing.T) {
	vars := RequestVars{
		HostName: "shop.example", Query: "id=a/b&sp=x y&dot=..&one=.&crlf=a%0D%0Ab&q=%zz&k=1",
		CookieHeader: "lang=de; nul=a\x00b", AllowCookies: []string{"lang", "nul"},
	}
	none := map[string]string{}
	runCases(t, []renderCase{
		{name: "path escaping", vars: vars, bodies: none, body: `<esi:include src="/p/$(QUERY_STRING{id})/$(QUERY_STRING{sp})"/>`,
			incs: []string{"/p/a%2Fb/x%20y"}},
		{name: "query escaping", vars: vars, bodies: none, body: `<esi:include src="/p?id=$(QUERY_STRING{id})&sp=$(QUERY_STRING{sp})"/>`,
			incs: []string{"/p?id=a%2Fb&sp=x+y"}},
		{name: "absolute url path", vars: vars, bodies: none, body: `<esi:include src="http://example.com/$(HTTP_COOKIE{lang})/hello.html"/>`,
			incs: []string{"http://example.com/de/hello.html"}},
		{name: "host never filled", vars: vars, bodies: none, body: `<esi:include src="http://$(HTTP_HOST)/x"/>`,
			incs: []string{`http://$(HTTP_HOST)/x err="fragment: variable before the first '/' of the path"`}},
		{name: "port never filled", vars: vars, bodies: none, body: `<esi:include src="//example.com:$(QUERY_STRING{k})/x"/>`,
			incs: []string{`//example.com:$(QUERY_STRING{k})/x err="fragment: variable before the first '/' of the path"`}},
		{name: "relative before slash", vars: vars, bodies: none, body: `<esi:include src="$(QUERY_STRING{k})/x"/>`,
			incs: []string{`$(QUERY_STRING{k})/x err="fragment: variable before the first '/' of the path"`}},
		{name: "dot segment", vars: vars, bodies: none, body: `<esi:include src="/a/$(QUERY_STRING{dot})/b"/><esi:include src="/a/$(QUERY_STRING{one})"/>`,
			incs: []string{`/a/$(QUERY_STRING{dot})/b err="fragment: variable value '.' or '..' in the path"`,
				`/a/$(QUERY_STRING{one}) err="fragment: variable value '.' or '..' in the path"`}},
		{name: "dots allowed in the query", vars: vars, bodies: none, body: `<esi:include src="/a?d=$(QUERY_STRING{dot})"/>`,
			incs: []string{`/a?d=..`}},
		{name: "crlf fails", vars: vars, bodies: none, body: `<esi:include src="/a?x=$(QUERY_STRING{crlf})"/>`,
			incs: []string{`/a?x=$(QUERY_STRING{crlf}) err="fragment: variable value holds CR, LF or NUL"`}},
		{name: "nul fails", vars: vars, bodies: none, body: `<esi:include src="/a/$(HTTP_COOKIE{nul})"/>`,
			incs: []string{`/a/$(HTTP_COOKIE{nul}) err="fragment: variable value holds CR, LF or NUL"`}},
		{name: "query string rebuilt", vars: vars, bodies: none, body: `<esi:include src="/a?$(QUERY_STRING)"/>`,
			incs: []string{`/a?id=a%2Fb&sp=x+y&dot=..&one=.&crlf=a%0D%0Ab&k=1`}},
		{name: "query string in path fails", vars: vars, bodies: none, body: `<esi:include src="/a/$(QUERY_STRING)"/>`,
			incs: []string{`/a/$(QUERY_STRING) err="fragment: $(QUERY_STRING) outside the query"`}},
		{name: "alt substituted", vars: vars, bodies: none, body: `<esi:include src="/a" alt="/b/$(HTTP_COOKIE{lang})"/>`,
			incs: []string{`/a alt=/b/de`}},
		{name: "default escaped", vars: vars, bodies: none, body: `<esi:include src="/a/$(QUERY_STRING{none}|'x/y')"/>`,
			incs: []string{`/a/x%2Fy`}},
		{name: "failed substitution renders as failed", vars: vars, bodies: map[string]string{"/alt": "ALT"},
			body: `<esi:include src="/a/$(QUERY_STRING{dot})" alt="/alt"/>`, want: "ALT",
			incs: []string{`/a/$(QUERY_STRING{dot}) alt=/alt err="fragment: variable value '.' or '..' in the path"`}},
	})
}

func TestMalformed(t *testing.T) {
	runCases(t, []renderCase{
		{name: "unknown element keeps content", body: `<esi:foo a="1">kept<esi:include src="/a"/></esi:foo>`, want: `keptA`,
			incs: []string{"/a"}, errs: []string{"unknown element esi:foo", "unknown element esi:foo"}},
		{name: "unclosed block literal from start", body: `x<esi:vars>$(HTTP_HOST)<esi:include src="/a"/>`,
			want: `x<esi:vars>$(HTTP_HOST)<esi:include src="/a"/>`, errs: []string{"unclosed esi:vars"}},
		{name: "unclosed inner block literal up to the outer end", body: `<esi:vars>a<esi:try>b</esi:vars><esi:include src="/a"/>`,
			want: `a<esi:try>bA`, incs: []string{"/a"}, errs: []string{"unclosed esi:try"}},
		{name: "stray end tag literal", body: `a</esi:try>b`, want: `a</esi:try>b`, errs: []string{"stray </esi:try>"}},
		{name: "malformed tag literal", body: `<esi:include src=/a"/><esi:include src="/b"/>`, want: `<esi:include src=/a"/>B`,
			incs: []string{"/b"}, errs: []string{"malformed esi tag"}},
		{name: "unterminated quote", body: `<esi:include src="/a/>`, want: `<esi:include src="/a/>`, errs: []string{"malformed esi tag"}},
		{name: "lone esi prefix", body: `<esi:`, want: `<esi:`, errs: []string{"malformed esi tag"}},
		{name: "uppercase is not esi", body: `<ESI:include src="/a"/>`, want: `<ESI:include src="/a"/>`},
		{name: "nul bytes", body: "a\x00<esi:include src=\"/a\x00\"/>\x00", want: "a\x00\x00", bodies: map[string]string{},
			incs: []string{"/a\x00"}},
		{name: "try inside choose inside vars", vars: RequestVars{HostName: "h"},
			body: `<esi:vars>$(HTTP_HOST)<esi:choose><esi:when test="$(HTTP_HOST)=='h'"><esi:try><esi:attempt><esi:include src="/a"/></esi:attempt></esi:try></esi:when></esi:choose></esi:vars>`,
			want: "hA", incs: []string{"/a attempt"}},
	})
}

func TestLimits(t *testing.T) {
	t.Run("directives", func(t *testing.T) {
		body := strings.Repeat(`<esi:include src="/a">p</esi:include>`, 5)
		tpl, err := Parse([]byte(body), Limits{MaxDirectives: 3})
		if !errors.Is(err, ErrTooManyDirectives) {
			t.Fatalf("Parse: err = %v, want ErrTooManyDirectives", err)
		}
		var e Eval
		tpl.Evaluate(nil, &e)
		if len(e.Includes) != 3 {
			t.Errorf("active includes = %d, want 3", len(e.Includes))
		}
		out := tpl.Render(nil, &e, &fakeResolver{bodies: frags})
		if string(out) != "AAApp" {
			t.Errorf("Render = %q, want %q", out, "AAApp")
		}
	})
	t.Run("default 10000 includes", func(t *testing.T) {
		body := bytes.Repeat([]byte(`<esi:include src="/a"/>`), 10001)
		tpl, err := Parse(body, Limits{})
		if !errors.Is(err, ErrTooManyDirectives) {
			t.Fatalf("Parse: err = %v, want ErrTooManyDirectives", err)
		}
		var e Eval
		tpl.Evaluate(nil, &e)
		if len(e.Includes) != 10000 {
			t.Errorf("active includes = %d, want 10000", len(e.Includes))
		}
	})
	t.Run("nesting", func(t *testing.T) {
		body := strings.Repeat("<esi:vars>", 5) + `<esi:include src="/a"/>` + strings.Repeat("</esi:vars>", 5) + `<esi:include src="/b"/>`
		tpl, err := Parse([]byte(body), Limits{MaxNesting: 3})
		if !errors.Is(err, ErrTooDeep) {
			t.Fatalf("Parse: err = %v, want ErrTooDeep", err)
		}
		var e Eval
		tpl.Evaluate(nil, &e)
		if got := describeAll(e.Includes); !slices.Equal(got, []string{"/b"}) {
			t.Errorf("includes = %q, want [/b]", got)
		}
		want := "<esi:vars><esi:vars>" + `<esi:include src="/a"/>` + "</esi:vars></esi:vars>B"
		if out := tpl.Render(nil, &e, &fakeResolver{bodies: frags}); string(out) != want {
			t.Errorf("Render = %q, want %q", out, want)
		}
	})
	t.Run("deep nesting default", func(t *testing.T) {
		body := strings.Repeat("<esi:try><esi:attempt>", 5000) + "x" + strings.Repeat("</esi:attempt></esi:try>", 5000)
		tpl, err := Parse([]byte(body), Limits{})
		if !errors.Is(err, ErrTooDeep) {
			t.Fatalf("Parse: err = %v, want ErrTooDeep", err)
		}
		var e Eval
		tpl.Evaluate(nil, &e)
		_ = tpl.Render(nil, &e, nil)
	})
	t.Run("attribute length", func(t *testing.T) {
		long := strings.Repeat("x", 1<<20)
		body := `<esi:include src="/` + long + `">ph</esi:include><esi:include src="/a"/>`
		tpl, err := Parse([]byte(body), Limits{})
		if !errors.Is(err, ErrAttrTooLong) {
			t.Fatalf("Parse: err = %v, want ErrAttrTooLong", err)
		}
		var e Eval
		tpl.Evaluate(nil, &e)
		if got := describeAll(e.Includes); !slices.Equal(got, []string{"/a"}) {
			t.Errorf("includes = %q, want [/a]", got)
		}
		if out := tpl.Render(nil, &e, &fakeResolver{bodies: frags}); string(out) != "phA" {
			t.Errorf("Render = %q, want %q", out, "phA")
		}
	})
	t.Run("syntax errors are typed", func(t *testing.T) {
		_, err := Parse([]byte("a\nb\n<esi:bogus/>"), Limits{})
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("Parse: err = %v, want a *SyntaxError", err)
		}
		if se.Line != 3 || se.Offset != 4 {
			t.Errorf("SyntaxError at line %d offset %d, want line 3 offset 4", se.Line, se.Offset)
		}
		if msg := se.Error(); msg != strings.ToLower(msg[:1])+msg[1:] {
			t.Errorf("Error() = %q, want lower case", msg)
		}
	})
	t.Run("syntax errors capped", func(t *testing.T) {
		_, err := Parse(bytes.Repeat([]byte("<esi:x>"), 1000), Limits{})
		if n := len(flatten(err)); n != maxSyntaxErrors {
			t.Errorf("%d errors, want %d", n, maxSyntaxErrors)
		}
	})
}

func TestHasESI(t *testing.T) {
	for _, tc := range []struct {
		body string
		want bool
	}{
		{"<html><p>plain</p></html>", false},
		{`<!-- <esi:include src="/a"/> -->`, false},
		{`<esi:include src="/a"/>`, true},
		{`<esi:remove>x</esi:remove>`, true},
		{`<esi:try>unclosed`, false},
	} {
		tpl, _ := Parse([]byte(tc.body), Limits{})
		if got := tpl.HasESI(); got != tc.want {
			t.Errorf("Parse(%q).HasESI() = %v, want %v", tc.body, got, tc.want)
		}
		if tpl.Size() < len(tc.body) {
			t.Errorf("Parse(%q).Size() = %d, want at least the body's length", tc.body, tpl.Size())
		}
	}
}

func TestParseCopiesBody(t *testing.T) {
	body := []byte(`<esi:include src="/a"/>text`)
	tpl, _ := Parse(body, Limits{})
	for i := range body {
		body[i] = 'z'
	}
	var e Eval
	tpl.Evaluate(nil, &e)
	if out := tpl.Render(nil, &e, &fakeResolver{bodies: frags}); string(out) != "Atext" {
		t.Errorf("Render after the caller reused the body = %q, want %q", out, "Atext")
	}
}

// TestConcurrentRender renders one template from many goroutines, each with
// its own Eval; run with -race.
func TestConcurrentRender(t *testing.T) {
	tpl, err := Parse(benchPage(t), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var e0 Eval
	tpl.Evaluate(&goldenVars, &e0)
	want := tpl.Render(nil, &e0, &fakeResolver{bodies: goldenBodies})
	done := make(chan []byte)
	for range 8 {
		go func() {
			var e Eval
			var out []byte
			for range 20 {
				tpl.Evaluate(&goldenVars, &e)
				out = tpl.Render(out[:0], &e, &fakeResolver{bodies: goldenBodies})
			}
			done <- out
		}()
	}
	for range 8 {
		if got := <-done; !bytes.Equal(got, want) {
			t.Errorf("concurrent render differs from a single one")
		}
	}
}

// TestSpecExamples renders the examples of the ESI Language Specification
// 1.0 (W3C Note, 2001).
func TestSpecExamples(t *testing.T) {
	advanced := RequestVars{CookieHeader: "group=Advanced", AllowCookies: []string{"group"}}
	basic := RequestVars{CookieHeader: "group=Basic User", AllowCookies: []string{"group"}}
	choose := `<esi:choose>
  <esi:when test="$(HTTP_COOKIE{group})=='Advanced'">
    <esi:include src="http://www.example.com/advanced.html"/>
  </esi:when>
  <esi:when test="$(HTTP_COOKIE{group})=='Basic User'">
    <esi:include src="http://www.example.com/basic.html"/>
  </esi:when>
  <esi:otherwise>
    <esi:include src="http://www.example.com/new_user.html"/>
  </esi:otherwise>
</esi:choose>`
	try := `<esi:try>
  <esi:attempt>
    <esi:comment text="Include an ad"/>
    <esi:include src="http://www.example.com/ad1.html"/>
  </esi:attempt>
  <esi:except>
    <esi:comment text="Just write some HTML instead"/>
    <a href=www.akamai.com>www.example.com</a>
  </esi:except>
</esi:try>`
	runCases(t, []renderCase{
		{name: "include with alt and onerror, src works", body: `<esi:include src="http://example.com/1.html" alt="http://bak.example.com/2.html" onerror="continue"/>`,
			want: "ONE", incs: []string{"http://example.com/1.html alt=http://bak.example.com/2.html continue"}},
		{name: "include with alt and onerror, src fails", body: `<esi:include src="http://example.com/1.html" alt="http://bak.example.com/2.html" onerror="continue"/>`,
			failed: []string{"http://example.com/1.html"}, want: "TWO",
			incs: []string{"http://example.com/1.html alt=http://bak.example.com/2.html continue"}},
		{name: "include with onerror, all fail", body: `a<esi:include src="http://example.com/1.html" alt="http://bak.example.com/9.html" onerror="continue"/>b`,
			failed: []string{"http://example.com/1.html"}, want: "ab",
			incs: []string{"http://example.com/1.html alt=http://bak.example.com/9.html continue"}},
		{name: "try, ad served", body: try, bodies: map[string]string{"http://www.example.com/ad1.html": "AD"},
			want: "\n    \n    AD\n  ", incs: []string{"http://www.example.com/ad1.html attempt"}},
		{name: "try, ad server down", body: try, failed: []string{"http://www.example.com/ad1.html"},
			want: "\n    \n    <a href=www.akamai.com>www.example.com</a>\n  ", incs: []string{"http://www.example.com/ad1.html attempt"}},
		{name: "choose, advanced", body: choose, vars: advanced, bodies: map[string]string{"http://www.example.com/advanced.html": "ADV"},
			want: "\n    ADV\n  ", incs: []string{"http://www.example.com/advanced.html"}},
		{name: "choose, basic user", body: choose, vars: basic, bodies: map[string]string{"http://www.example.com/basic.html": "BASIC"},
			want: "\n    BASIC\n  ", incs: []string{"http://www.example.com/basic.html"}},
		{name: "choose, new user", body: choose, bodies: map[string]string{"http://www.example.com/new_user.html": "NEW"},
			want: "\n    NEW\n  ", incs: []string{"http://www.example.com/new_user.html"}},
		{name: "remove", body: `<esi:include src="http://www.example.com/1.html"/>
<esi:remove>
  <a href="http://www.example.com">www.example.com</a>
</esi:remove>`, bodies: map[string]string{"http://www.example.com/1.html": "ONE"}, want: "ONE\n",
			incs: []string{"http://www.example.com/1.html"}},
		{name: "comment wrapper", body: `<!--esi
<p><esi:vars>Hello, $(HTTP_COOKIE{name})!</esi:vars></p>
-->`, vars: RequestVars{CookieHeader: "name=Jane", AllowCookies: []string{"name"}}, want: "\n<p>Hello, Jane!</p>\n"},
		{name: "vars in an image src", body: `<esi:vars><img src="http://www.example.com/$(HTTP_COOKIE{type})/hello.gif"/ ></esi:vars>`,
			vars: RequestVars{CookieHeader: "type=gold", AllowCookies: []string{"type"}}, want: `<img src="http://www.example.com/gold/hello.gif"/ >`},
		{name: "variable in include src", body: `<esi:include src="http://www.example.com/$(HTTP_COOKIE{type})/hello.html"/>`,
			vars: RequestVars{CookieHeader: "type=gold", AllowCookies: []string{"type"}}, bodies: map[string]string{},
			incs: []string{"http://www.example.com/gold/hello.html"}},
		{name: "default value", body: `<esi:vars>$(HTTP_COOKIE{visits}|'0')</esi:vars>`, want: "0"},
	})
}

// TestOtherProcessorsPages checks precise rule 6 on pages written for other
// ESI processors (Varnish, Akamai): an include open tag without its end tag
// is an empty element, attribute values may be unquoted, and CDATA is opaque
// inside esi:remove and esi:comment as everywhere else.
func TestOtherProcessorsPages(t *testing.T) {
	xy := map[string]string{"/x": "X", "/y": "Y", "/x/": "XS", "http://h/alt": "HALT"}
	runCases(t, []renderCase{
		// An open tag without </esi:include>.
		{name: "issue page", body: `A<esi:include src="/x">B<esi:remove>s</esi:remove>C<esi:include src="/y"/>D`,
			bodies: xy, want: "AXBCYD", incs: []string{"/x", "/y"}},
		{name: "ended by the next include open tag", body: `<esi:include src="/x">B<esi:include src="/y">P</esi:include>C`,
			bodies: xy, want: "XBYC", incs: []string{"/x", "/y"}},
		{name: "the next include keeps its placeholder", body: `<esi:include src="/x">B<esi:include src="/y">P</esi:include>C`,
			bodies: map[string]string{}, want: "BPC", incs: []string{"/x", "/y"}},
		{name: "a self-closed include does not end it", body: `<esi:include src="/x">B<esi:include src="/y"/>C</esi:include>D`,
			bodies: map[string]string{}, want: "BCD", incs: []string{"/x"}},
		{name: "ended by the end tag of its block", body: `<esi:vars>$(HTTP_HOST)<esi:include src="/x">B</esi:vars>C`,
			vars: RequestVars{HostName: "h"}, bodies: xy, want: "hXBC", incs: []string{"/x"}},
		{name: "ended by the end of a when", body: `<esi:choose><esi:when test="1==1"><esi:include src="/x">B</esi:when></esi:choose>C`,
			bodies: xy, want: "XBC", incs: []string{"/x"}},
		{name: "ended by the end of the body", body: `A<esi:include src="/x">B<esi:include src="/y"/>`,
			bodies: xy, want: "AXBY", incs: []string{"/x", "/y"}},
		{name: "blocks after it stay live", body: `<esi:include src="/x"><esi:try><esi:attempt><esi:include src="/y"/></esi:attempt><esi:except>E</esi:except></esi:try>`,
			bodies: xy, failed: []string{"/y"}, want: "XE", incs: []string{"/x", "/y attempt"}},
		{name: "an unclosed block after it is still literal", body: `<esi:include src="/x">B<esi:vars>V`,
			bodies: xy, want: "XB<esi:vars>V", incs: []string{"/x"}, errs: []string{"unclosed esi:vars"}},
		{name: "a stray end tag renders nothing", body: `<esi:include src="/x"/></esi:include>!`,
			bodies: xy, want: "X!", incs: []string{"/x"}, errs: []string{"stray </esi:include>"}},
		// Unquoted attribute values.
		{name: "unquoted src", body: `<esi:include src=/y />`, bodies: xy, want: "Y", incs: []string{"/y"}},
		{name: "unquoted alt and onerror", body: `<esi:include src=/x alt=http://h/alt onerror=continue />`,
			bodies: xy, failed: []string{"/x"}, want: "HALT", incs: []string{"/x alt=http://h/alt continue"}},
		{name: "slash before > belongs to the value", body: `<esi:include src=/x/>B`,
			bodies: xy, want: "XSB", incs: []string{"/x/"}},
		{name: "quotes mixed", body: `<esi:include src='/x' alt="/y" timeout=50 />`,
			bodies: xy, want: "X", incs: []string{"/x alt=/y timeout=50ms"}},
		{name: "unquoted entities decoded", body: `<esi:include src=/a?b=1&amp;c=2 />`,
			bodies: map[string]string{}, incs: []string{"/a?b=1&c=2"}},
		{name: "unquoted value cut by the wrapper end", body: `<!--esi <esi:include src=/x-->`,
			want: ` <esi:include src=/x`, errs: []string{"malformed esi tag"}},
		// CDATA is opaque in esi:remove and esi:comment.
		{name: "cdata in remove", body: `<esi:remove>a<![CDATA[</esi:remove>]]>b</esi:remove>c`, want: "c"},
		{name: "cdata in comment", body: `<esi:comment>a<![CDATA[</esi:comment>]]>b</esi:comment>c`, want: "c"},
		{name: "unclosed cdata in remove", body: `<esi:remove>a<![CDATA[</esi:remove>c`,
			want: `<esi:remove>a<![CDATA[</esi:remove>c`, errs: []string{"unclosed esi:remove"}},
		{name: "cdata in the esi wrapper", body: `<!--esi a<![CDATA[-->]]>b -->c`, want: ` a<![CDATA[-->]]>b c`},
	})
}

// RawSrc and RawAlt name an include as its page wrote it: no value of
// the request is substituted in them, whatever Src and Alt became.
func TestRawAttributesHoldNoValues(t *testing.T) {
	tpl, err := Parse([]byte(`<esi:include src="/u/$(HTTP_COOKIE{uid})/cart?t=$(QUERY_STRING{t})" alt="/alt/$(HTTP_COOKIE{uid})"/><esi:include src="/plain"/>`), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var e Eval
	tpl.Evaluate(&RequestVars{Query: "t=tok", CookieHeader: "uid=alice", AllowCookies: []string{"uid"}}, &e)
	if len(e.Includes) != 2 {
		t.Fatalf("got %d includes, want 2", len(e.Includes))
	}
	for _, c := range []struct{ got, want string }{
		{e.Includes[0].Src, "/u/alice/cart?t=tok"},
		{e.Includes[0].RawSrc, "/u/$(HTTP_COOKIE{uid})/cart?t=$(QUERY_STRING{t})"},
		{e.Includes[0].Alt, "/alt/alice"},
		{e.Includes[0].RawAlt, "/alt/$(HTTP_COOKIE{uid})"},
		{e.Includes[1].RawSrc, "/plain"},
		{e.Includes[1].RawAlt, ""},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
