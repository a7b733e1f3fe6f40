package proxy

// The privacy rule in one place: which key a request looks an include up
// under, and where a fetched answer may be stored and who may be served
// it (DESIGN.md, precise rules 2, 9 and 15). Everything here is a pure
// function of its arguments; the composer and the fetcher call it and
// decide nothing of this themselves.

// Scope prefixes of fragment keys. A key is prefix, NUL, absolute URL,
// and for fragments fetched with a language, NUL and the normalised
// language.
const (
	scopeShared = "s"
	scopeAnon   = "a"
	scopeUser   = "u" // followed by the hex HMAC of the credentials
)

// lookupPlan is the order in which a request looks an include up.
type lookupPlan struct {
	// peekShared: look at the shared key first without starting a load;
	// a usable shared entry is served.
	peekShared bool
	// flightScope is the scope whose key the lookup that may start (or
	// join) a load uses: scopeShared, or the request's own scope.
	flightScope string
}

// planLookup decides where a request in scope reqScope (scopeAnon or a
// user scope) looks up an include. fetchedBare is true when the fragment
// is always fetched without the client's credentials (a share rule, or a
// host other than the upstream): then it lives under the shared key only.
// hintShared is the per-URL hint that the last answer was stored shared;
// it only lets concurrent first requests of different users join one
// flight, whose answer each of them is then served only if answerServable
// says so.
//
// A credentialed request looks up shared, then its own scope, never anon;
// an anonymous one looks up shared, then anon.
func planLookup(reqScope string, fetchedBare, hintShared bool) lookupPlan {
	if fetchedBare || hintShared {
		return lookupPlan{flightScope: scopeShared}
	}
	return lookupPlan{peekShared: true, flightScope: reqScope}
}

// fetchScope is the scope a fetch is made in: scopeShared when it carries
// no credentials by rule (fetchedBare), else the request's own scope.
func fetchScope(reqScope string, fetchedBare bool) string {
	if fetchedBare {
		return scopeShared
	}
	return reqScope
}

// answerFacts is what a fragment answer says about where it may be kept.
type answerFacts struct {
	private bool // Cache-Control: private
	// sharedHint: public, s-maxage or Surrogate-Control max-age.
	sharedHint bool
	varyUser   bool // Vary: Cookie or Vary: Authorization
	// unstorable: Set-Cookie, no-store, no-cache, no freshness
	// (max-age=0), Surrogate-Control no-store or Vary: *.
	unstorable bool
}

// placement is where an answer goes.
type placement struct {
	// storeScope is the scope it is stored under; "" when it is not
	// stored at all.
	storeScope string
	// serveScope is who may be served it: everybody for scopeShared, else
	// only requests of exactly this scope (the flight's own waiters for
	// an answer that is not stored).
	serveScope string
}

// placeAnswer applies the scope order of precise rule 15 to an answer
// fetched in scope fetched (see fetchScope); shareRule is true when an
// operator share rule names the fragment. First match wins:
//
//  1. a share rule: shared;
//  2. private: the fetch's own user scope, or not stored when the fetch
//     carried no credentials (nobody's private answer);
//  3. Vary: Cookie or Authorization: the fetch's own scope (anon for an
//     anonymous fetch; shared for one that carries no credentials by rule,
//     where the header says nothing);
//  4. public, s-maxage or Surrogate-Control max-age: shared;
//  5. otherwise the fetch's own scope.
//
// An unstorable answer is stored nowhere and is served only in the scope
// it was fetched in.
func placeAnswer(a answerFacts, shareRule bool, fetched string) placement {
	if shareRule {
		fetched = scopeShared
	}
	var scope string
	switch {
	case shareRule:
		scope = scopeShared
	case a.private:
		if !isUserScope(fetched) {
			return placement{serveScope: fetched}
		}
		scope = fetched
	case a.varyUser:
		scope = fetched
	case a.sharedHint:
		scope = scopeShared
	default:
		scope = fetched
	}
	if a.unstorable {
		return placement{serveScope: fetched}
	}
	return placement{storeScope: scope, serveScope: scope}
}

// answerServable reports whether an answer placed in serveScope may be
// rendered for a request in reqScope. A request that may not be served it
// (it joined a flight made with someone else's credentials) looks the
// include up again under its own scope.
func answerServable(serveScope, reqScope string) bool {
	return serveScope == scopeShared || serveScope == reqScope
}

func isUserScope(s string) bool { return len(s) > len(scopeUser) && s[:len(scopeUser)] == scopeUser }
