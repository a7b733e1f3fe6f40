// Package fragment owns the ESI language of fragcache: it parses an HTML body
// into an immutable Template (literal byte spans plus ESI directives),
// evaluates a template against one request's variables to find the includes
// that request needs, and renders the page once the caller has resolved them.
//
// The package implements the ESI Language Specification 1.0 (W3C Note, 2001)
// as refined by fragcache's design: esi:include (with src, alt, onerror,
// timeout and ttl, and an optional placeholder body), esi:remove,
// esi:comment, <!--esi ... -->, esi:try/attempt/except,
// esi:choose/when/otherwise with the expression language, esi:vars, and the
// ESI variables HTTP_HOST, HTTP_REFERER, HTTP_COOKIE{name},
// QUERY_STRING and QUERY_STRING{name}, HTTP_ACCEPT_LANGUAGE{lang} and
// HTTP_USER_AGENT{browser|os|version}.
//
// ESI is live everywhere in a body (including scripts and attribute values)
// except inside plain HTML comments and CDATA sections. Malformed markup never
// fails a parse: it becomes literal text and is reported as a *SyntaxError.
// Limits bound what one body may hold; past a limit, Parse still returns a
// usable template and reports a sentinel error.
//
// Flow per page: Parse once (templates are immutable and may be cached and
// shared), then per request Template.Evaluate fills an Eval with the active
// includes, the caller resolves them, and Template.Render appends the page to
// a buffer, asking a Resolver for each include's content.
//
// The package knows nothing of HTTP, caching or the network: it never fetches
// anything. It imports only the standard library and must not import net/http,
// fasthttp, any other fragcache package, or any third-party module.
package fragment
