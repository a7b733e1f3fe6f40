package fragment

import (
	"errors"
	"strconv"
	"time"
)

// Default limits, used for zero fields of Limits.
const (
	DefaultMaxDirectives = 10000
	DefaultMaxNesting    = 64
	DefaultMaxAttrLen    = 16 << 10
)

// MaxTTL caps an include's ttl attribute.
const MaxTTL = 24 * time.Hour

// Limits bound what one body may hold. Zero (or negative) fields take the
// defaults. The zero value is ready to use.
type Limits struct {
	// MaxDirectives bounds the ESI elements (of any kind) counted in one
	// template: an include past the bound is inert (it renders its placeholder and is never
	// active). Other elements past it still take effect; their cost is
	// bounded by the body's size. Default DefaultMaxDirectives (10000).
	MaxDirectives int
	// MaxNesting bounds block nesting (try, attempt, except, choose, when,
	// otherwise, vars and include bodies; esi:remove and esi:comment content
	// is not parsed) and the nesting of parentheses and "!" in a test. A
	// block deeper than that is literal text, with all it holds; a test
	// deeper than that is never true. Default DefaultMaxNesting (64).
	MaxNesting int
	// MaxAttrLen bounds the bytes of one attribute value. An include with a
	// longer value is inert, a when with a longer test is never true, other
	// long values are ignored. Default DefaultMaxAttrLen (16 KiB).
	MaxAttrLen int
	// Stream analyses the template for streaming late fill: which includes
	// may stream (Include.Streamable), where the tail starts and whether it
	// holds a meta Content-Security-Policy. It is a second pass over the
	// text (about 4x the parse), so it is off unless asked for; without it
	// no include is streamable and the tail is the end.
	Stream bool
}

func (l Limits) withDefaults() Limits {
	if l.MaxDirectives <= 0 {
		l.MaxDirectives = DefaultMaxDirectives
	}
	if l.MaxNesting <= 0 {
		l.MaxNesting = DefaultMaxNesting
	}
	if l.MaxAttrLen <= 0 {
		l.MaxAttrLen = DefaultMaxAttrLen
	}
	return l
}

// Sentinel errors reported by Parse when a body exceeds its Limits. Match
// them with errors.Is.
var (
	ErrTooManyDirectives = errors.New("fragment: too many esi directives")
	ErrTooDeep           = errors.New("fragment: esi blocks nested too deep")
	ErrAttrTooLong       = errors.New("fragment: esi attribute value too long")
)

// SyntaxError reports malformed ESI markup. Offset is the byte offset of the
// problem in the parsed body and Line its 1-based line.
type SyntaxError struct {
	Offset int
	Line   int
	Msg    string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return "fragment: esi syntax error at line " + strconv.Itoa(e.Line) +
		" (offset " + strconv.Itoa(e.Offset) + "): " + e.Msg
}

// Vars supplies one request's raw values to Evaluate and Render. The caller
// implements it; fragment applies the ESI semantics on top (dictionary keys,
// list membership, user-agent classification, query parsing). The methods
// are called during Evaluate, Render and AppendPlaceholder only, from the
// goroutine running them.
type Vars interface {
	// Host returns the value of $(HTTP_HOST): the host fragcache serves,
	// already chosen by the caller, never a raw client header.
	Host() string
	// Referer returns the request's Referer header ("" when none).
	Referer() string
	// Cookie returns the named cookie's value. It returns false for cookies
	// that are absent or not allowed to expand.
	Cookie(name string) (string, bool)
	// RawQuery returns the request's query string without the '?'.
	RawQuery() string
	// AcceptLanguage returns the request's Accept-Language header.
	AcceptLanguage() string
	// UserAgent returns the request's User-Agent header.
	UserAgent() string
}

// Include is one active include of an evaluated request. The caller resolves
// it and hands it back to its Resolver during Render. Includes are owned by
// their Eval and valid until its next Evaluate or Reset.
type Include struct {
	// Index is the include's position in Eval.Includes.
	Index int
	// Src is the src attribute after variable substitution, as written
	// (relative or absolute, not resolved against the page). When Err is
	// non-nil it is the attribute without substitution, for diagnostics
	// only: it must not be fetched.
	Src string
	// Alt is the alt attribute after substitution; "" when none. When
	// AltErr is non-nil it is the attribute without substitution.
	Alt string
	// RawSrc and RawAlt are the src and alt attributes as written, entities
	// decoded and variables not substituted ($(HTTP_COOKIE{uid}) stays as
	// it is): a name for the include that holds no request's values.
	RawSrc, RawAlt string
	// AltErr is non-nil when substituting variables in alt failed; the alt
	// must then be treated as not working.
	AltErr error
	// Continue is true for onerror="continue".
	Continue bool
	// Timeout is the timeout attribute (a Go duration, or an integer number
	// of milliseconds), negative values taken as 0; valid when HasTimeout.
	// The caller applies its own cap.
	Timeout    time.Duration
	HasTimeout bool
	// TTL is the ttl attribute (a Go duration, or an integer number of
	// seconds), clamped to [0, MaxTTL]; valid when HasTTL.
	TTL    time.Duration
	HasTTL bool
	// Deferred is true inside an esi:except: the include must never be
	// prefetched; it reaches the Resolver only if its attempt fails.
	Deferred bool
	// Streamable is true for an include a page may fill in later in the
	// same response (DESIGN.md, precise rule 29): in element content
	// inside the body (or anywhere outside <head> in a template without a
	// <body>), not in a tag, raw-text or RCDATA element, comment, svg, math
	// or <template>, and not inside esi:try.
	Streamable bool
	// InAttempt is true inside an esi:attempt (at any depth, also inside
	// an esi:except nested in it): its failure fails the attempt.
	InAttempt bool
	// Err is non-nil when substituting variables in src failed (CR, LF or
	// NUL in a value, a variable before the first '/' of the path, a value
	// of "." or ".." in the path, QUERY_STRING outside the query). The
	// include then counts as failed and must not be fetched.
	Err error

	node int32 // index of the include's op in the template
}

// Resolver supplies include content during Render.
type Resolver interface {
	// AppendInclude appends inc's content (the fragment body, its alt's
	// body, or its placeholder via e.AppendPlaceholder) to dst and returns
	// the extended slice. It reports true when the include failed in the
	// sense of fragcache's pending-versus-failed rule: the load failed with
	// no working alt and without onerror="continue". A pending include
	// renders its placeholder and is not failed. Render calls it on its own
	// goroutine; the Resolver must not keep dst.
	AppendInclude(dst []byte, e *Eval, inc *Include) ([]byte, bool)
}
