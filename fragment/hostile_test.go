package fragment

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestHostileInput parses 1 MB bodies built to make a naive parser
// quadratic, or deep, or large, and checks that each parses quickly into a
// template that renders, and that memory stays a small factor of the input.
func TestHostileInput(t *testing.T) {
	const size = 1 << 20
	rep := func(unit string) []byte { return bytes.Repeat([]byte(unit), size/len(unit)) }
	cases := []struct {
		name string
		body []byte
	}{
		{"unterminated attribute quotes", rep(`<esi:include src='`)},
		{"alternating quotes", rep(`<esi:a x="<esi:b y='`)},
		{"attribute chains", append(rep(`<esi:a x='<esi:b c=' d="`), `'/>`...)},
		{"unclosed esi comments", rep(`<!--esi `)},
		{"unterminated variables in vars", append([]byte("<esi:vars>"), rep(`$(HTTP_COOKIE{'$(QUERY_STRING|`)...)},
		{"open blocks then stray ends", append(rep(`<esi:vars>`)[:size/2], rep(`</esi:try>`)[:size/2]...)},
		{"deep nesting", append(rep(`<esi:try><esi:attempt>`)[:size/2], rep(`</esi:attempt></esi:try>`)[:size/2]...)},
		{"unknown elements", rep(`<esi:x>`)},
		{"many includes", rep(`<esi:include src="/a"/>`)},
		{"nul bytes", bytes.Repeat([]byte{0}, size)},
		{"long attribute", []byte(`<esi:include src="/` + strings.Repeat("a", size) + `"/>`)},
		{"long test expression", []byte(`<esi:choose><esi:when test="` + strings.Repeat("(", 1000) + strings.Repeat("!", 10000) + `">x</esi:when></esi:choose>`)},
		{"unclosed remove", rep(`<esi:remove>`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			tpl, _ := Parse(tc.body, Limits{})
			var e Eval
			tpl.Evaluate(&RequestVars{Query: "a=1"}, &e)
			out := tpl.Render(nil, &e, &fakeResolver{bodies: map[string]string{}})
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Parse+Evaluate+Render of %d bytes took %v", len(tc.body), d)
			}
			if len(out) > 2*len(tc.body) {
				t.Errorf("rendered %d bytes from %d", len(out), len(tc.body))
			}
			if s := tpl.Size(); s > 64*len(tc.body) {
				t.Errorf("Size() = %d for %d bytes", s, len(tc.body))
			}
		})
	}
}

// TestLongConditionChain evaluates a test that is one long chain of "&"
// and "|" without recursing once per operand.
func TestLongConditionChain(t *testing.T) {
	for _, op := range []string{"&", "|"} {
		test := "1==1" + strings.Repeat(" "+op+" 1==1", 200000)
		body := `<esi:choose><esi:when test="` + test + `">T</esi:when></esi:choose>`
		tpl, err := Parse([]byte(body), Limits{MaxAttrLen: len(test)})
		if err != nil {
			t.Fatal(err)
		}
		var e Eval
		tpl.Evaluate(nil, &e)
		if out := tpl.Render(nil, &e, nil); string(out) != "T" {
			t.Errorf("chain of %q rendered %q, want T", op, out)
		}
	}
}
