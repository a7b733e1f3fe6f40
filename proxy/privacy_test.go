package proxy

import (
	"strings"
	"testing"
)

// TestPlaceAnswer lists every case of DESIGN rules 2, 9 and 15: where a
// fetched answer is stored and who may be served it.
func TestPlaceAnswer(t *testing.T) {
	const alice, bob = "ualice", "ubob"
	shared := answerFacts{sharedHint: true}
	for _, tc := range []struct {
		name      string
		a         answerFacts
		shareRule bool
		fetched   string
		store     string // "" = not stored
		serve     string
	}{
		{"anonymous, nothing said", answerFacts{}, false, scopeAnon, scopeAnon, scopeAnon},
		{"credentialed, nothing said", answerFacts{}, false, alice, alice, alice},
		{"anonymous, public", shared, false, scopeAnon, scopeShared, scopeShared},
		{"credentialed, public / s-maxage / Surrogate max-age", shared, false, alice, scopeShared, scopeShared},
		{"credentialed, private", answerFacts{private: true}, false, alice, alice, alice},
		{"credentialed, private beside s-maxage", answerFacts{private: true, sharedHint: true}, false, alice, alice, alice},
		{"anonymous, private: nobody's", answerFacts{private: true}, false, scopeAnon, "", scopeAnon},
		{"anonymous, private beside public", answerFacts{private: true, sharedHint: true}, false, scopeAnon, "", scopeAnon},
		{"credentialed, Vary: Cookie beside public", answerFacts{varyUser: true, sharedHint: true}, false, alice, alice, alice},
		{"anonymous, Vary: Cookie beside public", answerFacts{varyUser: true, sharedHint: true}, false, scopeAnon, scopeAnon, scopeAnon},
		{"no credentials by rule (other host), Vary: Cookie", answerFacts{varyUser: true}, false, scopeShared, scopeShared, scopeShared},
		{"no credentials by rule (other host), private", answerFacts{private: true}, false, scopeShared, "", scopeShared},
		{"share rule, private", answerFacts{private: true}, true, scopeShared, scopeShared, scopeShared},
		{"share rule, nothing said", answerFacts{}, true, scopeShared, scopeShared, scopeShared},
		{"credentialed, Set-Cookie / no-store / Vary: * / max-age=0", answerFacts{unstorable: true, sharedHint: true}, false, alice, "", alice},
		{"anonymous, unstorable", answerFacts{unstorable: true}, false, scopeAnon, "", scopeAnon},
		{"share rule, unstorable", answerFacts{unstorable: true}, true, scopeShared, "", scopeShared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := placeAnswer(tc.a, tc.shareRule, tc.fetched)
			if got.storeScope != tc.store || got.serveScope != tc.serve {
				t.Errorf("placeAnswer = store %q serve %q, want store %q serve %q", got.storeScope, got.serveScope, tc.store, tc.serve)
			}
			// Whoever may be served it: never another user.
			if answerServable(got.serveScope, bob) && isUserScope(tc.fetched) && got.serveScope != scopeShared {
				t.Errorf("bob may be served an answer fetched for alice and placed in %q", got.serveScope)
			}
		})
	}
}

// TestPlanLookup: the order of lookups (rule 2), and who may be served a
// joined flight's answer.
func TestPlanLookup(t *testing.T) {
	const alice = "ualice"
	for _, tc := range []struct {
		name                string
		scope               string
		bare, hint          bool
		peekShared          bool
		flight, fetchedWith string
	}{
		{"anonymous: shared, then anon", scopeAnon, false, false, true, scopeAnon, scopeAnon},
		{"credentialed: shared, then own, never anon", alice, false, false, true, alice, alice},
		{"shared hint: one flight for everybody, with the first user's credentials", alice, false, true, false, scopeShared, alice},
		{"share rule or other host: shared only, no credentials", alice, true, false, false, scopeShared, scopeShared},
		{"share rule with a hint", scopeAnon, true, true, false, scopeShared, scopeShared},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planLookup(tc.scope, tc.bare, tc.hint)
			if p.peekShared != tc.peekShared || p.flightScope != tc.flight {
				t.Errorf("planLookup = %+v, want peek %v flight %q", p, tc.peekShared, tc.flight)
			}
			if got := fetchScope(tc.scope, tc.bare); got != tc.fetchedWith {
				t.Errorf("fetchScope = %q, want %q", got, tc.fetchedWith)
			}
		})
	}
	// A joined flight of another scope: alice's private answer is not
	// bob's, nor anonymous visitors'; a shared one is everybody's.
	for _, tc := range []struct {
		serve, req string
		want       bool
	}{
		{"ualice", "ualice", true},
		{"ualice", "ubob", false},
		{"ualice", scopeAnon, false},
		{scopeAnon, "ubob", false},
		{scopeShared, "ubob", true},
		{scopeShared, scopeAnon, true},
	} {
		if got := answerServable(tc.serve, tc.req); got != tc.want {
			t.Errorf("answerServable(%q, %q) = %v, want %v", tc.serve, tc.req, got, tc.want)
		}
	}
}

// TestNormalizeLang: DESIGN rule 16.
func TestNormalizeLang(t *testing.T) {
	for in, want := range map[string]string{
		"":                              "",
		"en":                            "en",
		"EN-gb":                         "en-gb",
		"fr, en-GB;q=0.8, de;q=0.9":     "fr,de,en-gb",
		"de;q=0, en":                    "en",
		"*":                             "*",
		"a, b, c, d":                    "a,b,c",
		"<script>alert(1)</script>, fr": "fr",
		"en\r\nX-Injected: 1":           "",
		"toolongtag-x":                  "",
		"en-":                           "",
		"1en":                           "",
		"en-123456789":                  "",
		"zh-hant-tw;q=0.5, zh;q=0.5":    "zh-hant-tw,zh",
		"en;q=abc":                      "",
		"en;q=NaN, de;q=0.5":            "de",
		"ja, ,;q=0.5,, de":              "ja,de",
		",,,":                           "",
		"b;q=0.5, a, c;q=0.5, d;q=0.9":  "a,d,b",
		"aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee-ffffffff-gggggggg-h": "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd-eeeeeeee-ffffffff-gggggggg-h", // 64 bytes
	} {
		if got := normalizeLang([]byte(in)); got != want {
			t.Errorf("normalizeLang(%q) = %q, want %q", in, got, want)
		}
	}
	if got := normalizeLang([]byte(strings.Repeat("xx;q=0.1, ", 500) + "fr;q=0.9")); got != "fr,xx,xx" {
		t.Errorf("normalizeLang of 501 ranges = %q, want the preferred last one first: fr,xx,xx", got)
	}
	if got := normalizeLangLines([][]byte{[]byte("ja"), []byte("de;q=0.5, fr")}); got != "ja,fr,de" {
		t.Errorf("normalizeLangLines of two lines = %q, want one list: ja,fr,de", got)
	}
	long := "aaaaaaaa-bbbbbbbb-cccccccc-dddddddd, eeeeeeee-ffffffff-gggggggg-hhhhhhhh"
	if got := normalizeLang([]byte(long)); len(got) > 64 {
		t.Errorf("normalizeLang kept %d bytes, want at most 64", len(got))
	}
}
