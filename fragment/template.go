package fragment

// Template is a parsed body: literal byte spans plus ESI directives. A
// Template is immutable and safe for concurrent use by many goroutines
// (Evaluate, Render, HasESI, Size). The zero value is not usable; obtain one
// from Parse.
type Template struct {
	src  []byte // the parsed body (an owned copy)
	ops  []op
	incs []incNode
	// exprs etc. are added by the parser
	hasESI bool
}

type opKind uint8

type op struct {
	kind       opKind
	start, end int32
}

type incNode struct{}

// Parse parses body into an immutable Template. It never fails to return a
// usable template: malformed markup becomes literal text and includes past a
// limit are inert (they render their placeholder and are never active). The
// error, when non-nil, joins the *SyntaxError values and limit sentinels met
// (errors.Is and errors.As find them). Parse copies body; the caller may
// reuse it. A zero Limits takes the defaults.
func Parse(body []byte, lim Limits) (*Template, error) {
	t := &Template{src: append([]byte(nil), body...)}
	return t, nil
}

// HasESI reports whether the body held any ESI at all. When false, the body
// renders as it is and the caller may send it unchanged.
func (t *Template) HasESI() bool { return t.hasESI }

// Size returns the approximate number of bytes the template holds, for cache
// cost accounting.
func (t *Template) Size() int { return len(t.src) }

// Eval is one request's evaluation of a template: the chosen branches and the
// active includes with variables substituted. The zero value is ready to use;
// an Eval may be reused across requests and templates (Evaluate resets it) to
// avoid allocation. An Eval is not safe for concurrent use.
type Eval struct {
	// Includes lists every include this request may need, in document
	// order: active includes outside esi:try, in an esi:attempt, and (with
	// Deferred set) in an esi:except. It excludes includes in esi:remove, in
	// inactive esi:when/esi:otherwise branches, in placeholders, and past a
	// limit. The slice and its elements are owned by the Eval and valid
	// until its next Evaluate or Reset; the caller may read them but must
	// not append to the slice.
	Includes []Include

	t *Template
	v Vars
}

// Reset clears e, keeping its allocated memory for reuse.
func (e *Eval) Reset() {
	e.Includes = e.Includes[:0]
	e.t = nil
	e.v = nil
}

// Evaluate evaluates t for one request with variables v, filling e (which
// it resets first). e keeps a reference to v until its next Evaluate or
// Reset; v is consulted again during Render.
func (t *Template) Evaluate(v Vars, e *Eval) {
	e.Reset()
	e.t = t
	e.v = v
}

// Render appends the page to dst and returns the extended slice. e must hold
// an evaluation of t. Each include of e.Includes reached by the rendering is
// passed to r. An esi:attempt is rendered into dst and rolled back (dst
// truncated) when one of its includes failed; then its esi:except renders.
// Deferred includes reach r only when their except renders.
func (t *Template) Render(dst []byte, e *Eval, r Resolver) []byte {
	return append(dst, t.src...)
}

// AppendPlaceholder appends inc's placeholder to dst and returns the
// extended slice: the include element's body rendered as ESI, whose own
// includes render their own placeholders; nothing for an empty element.
func (e *Eval) AppendPlaceholder(dst []byte, inc *Include) []byte {
	return dst
}
