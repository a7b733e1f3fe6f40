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
// Variables are data, never structure. In src and alt they may appear only
// after the first '/' of the path (never in the scheme, host or port); they
// are escaped as url.PathEscape does in the path and as url.QueryEscape does
// in the query, and a value holding CR, LF or NUL, a value of "." or ".." in
// the path, or $(QUERY_STRING) outside the query fails that include. In
// esi:vars bodies they are HTML-escaped. A default ($(NAME|dflt) or
// $(NAME{key}|'dflt')) replaces an empty or unset value.
// $(HTTP_COOKIE{name}) expands only the cookies the Vars implementation
// allows; $(HTTP_COOKIE) without a key is always empty. $(QUERY_STRING) is
// rebuilt from the parsed pairs; $(QUERY_STRING{name}) is the first value of
// name, unescaped. $(HTTP_ACCEPT_LANGUAGE{lang}) is "true" when the header
// lists lang (or a subtag of it, "en" matching "en-GB") with a non-zero
// quality, else "false". $(HTTP_USER_AGENT{browser}) is MSIE, MOZILLA or
// OTHER, {os} is WIN, MAC, UNIX or OTHER, {version} the browser's version.
// Only these names are variables: text such as $(document) stays as it is.
//
// In esi:when tests, comparisons are numeric when both operands are decimal
// numbers and byte-wise otherwise; an operand used as a condition is true
// unless it is empty, "false" or numerically zero. The comparisons bind
// tightest ("!$(a)=='b'" negates the comparison), then "!", then "&", then
// "|"; parentheses group. A test that does not parse is never true and is
// reported.
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
