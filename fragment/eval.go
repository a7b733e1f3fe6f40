package fragment

import (
	"strings"
	"sync/atomic"
)

// Eval is one request's evaluation of a template: the chosen branches and the
// active includes with variables substituted. The zero value is ready to use;
// an Eval may be reused across requests and templates (Evaluate resets it),
// which avoids allocation once its buffers have grown. An Eval is not safe
// for concurrent use; the Template it evaluates is.
type Eval struct {
	// Includes lists every include this request may need, in document
	// order: active includes outside esi:try and in an esi:attempt, and,
	// with Deferred set, those in an esi:except. It leaves out includes in
	// esi:remove, in inactive esi:when/esi:otherwise branches, in
	// placeholders, and past a limit. The slice and its elements belong to
	// the Eval and are valid until its next Evaluate or Reset; the caller
	// may read them but must not append to or reslice Includes.
	Includes []Include

	t      *Template
	v      Vars
	choice []int32 // per choose: the op of the chosen branch, or -1
	incOf  []int32 // per include node: its index in Includes, or -1
	buf    []byte  // URL being built
	val    []byte  // one variable's value
	tmp    []byte  // unescaping scratch
	arena  []byte  // expression operand values
}

// Reset clears e, keeping its allocated memory for reuse, and drops its
// references to the template and variables.
func (e *Eval) Reset() {
	e.Includes = e.Includes[:0]
	e.t = nil
	e.v = nil
}

// Template returns the template e was last evaluated against, or nil.
func (e *Eval) Template() *Template { return e.t }

// Evaluate evaluates t for one request with variables v, filling e (which it
// resets first): it decides every reachable esi:choose and lists the
// includes the request may need in e.Includes. e keeps v until its next
// Evaluate or Reset and consults it again during Render. A nil v leaves
// every variable empty.
func (t *Template) Evaluate(v Vars, e *Eval) {
	e.Reset()
	e.t = t
	e.v = v
	e.choice = fill(e.choice, t.nChoose)
	e.incOf = fill(e.incOf, len(t.incs))
	e.walk(0, len(t.ops), false)
}

func fill(s []int32, n int) []int32 {
	if cap(s) < n {
		s = make([]int32, n)
	}
	s = s[:n]
	for i := range s {
		s[i] = -1
	}
	return s
}

// walk evaluates ops[from:to]. In a placeholder (ph), branches are decided
// but includes are not listed.
func (e *Eval) walk(from, to int, ph bool) {
	ops := e.t.ops
	for i := from; i < to; {
		o := &ops[i]
		switch o.kind {
		case opInclude:
			if !ph {
				e.addInclude(i)
			}
			e.walk(i+1, int(o.close), true)
			i = int(o.close) + 1
		case opTry:
			for j := i + 1; j < int(o.close); {
				c := &ops[j]
				if c.kind == opAttempt || c.kind == opExcept {
					e.walk(j+1, int(c.close), ph)
				}
				j = next(ops, j)
			}
			i = int(o.close) + 1
		case opChoose:
			chosen, otherwise := -1, -1
			for j := i + 1; j < int(o.close) && chosen < 0; j = next(ops, j) {
				c := &ops[j]
				switch c.kind {
				case opWhen:
					if c.arg >= 0 && e.test(c.arg) {
						chosen = j
					}
				case opOtherwise:
					if otherwise < 0 {
						otherwise = j
					}
				}
			}
			if chosen < 0 {
				chosen = otherwise
			}
			e.choice[o.arg] = int32(chosen)
			if chosen >= 0 {
				e.walk(chosen+1, int(ops[chosen].close), ph)
			}
			i = int(o.close) + 1
		default:
			i++
		}
	}
}

// next returns the index of the op after ops[j] and its content.
func next(ops []op, j int) int {
	if ops[j].kind >= opInclude {
		return int(ops[j].close) + 1
	}
	return j + 1
}

func (e *Eval) addInclude(i int) {
	o := &e.t.ops[i]
	n := &e.t.incs[o.arg]
	if n.inert {
		return
	}
	k := len(e.Includes)
	inc := Include{
		Index:      k,
		Continue:   n.cont,
		Timeout:    n.timeout,
		HasTimeout: n.hasTimeout,
		TTL:        n.ttl,
		HasTTL:     n.hasTTL,
		Deferred:   n.deferred,
		InAttempt:  n.inAttempt,
		Streamable: n.streamable,
		RawSrc:     n.src.raw,
		node:       int32(i),
	}
	inc.Src, inc.Err = e.expandURL(&n.src)
	if n.hasAlt {
		inc.RawAlt = n.alt.raw
		inc.Alt, inc.AltErr = e.expandURL(&n.alt)
	}
	e.incOf[o.arg] = int32(k)
	e.Includes = append(e.Includes, inc)
}

// Memo returns a value the caller may keep with inc's include element
// across every evaluation of the template, for what it derives from the
// src alone (its resolution against a configuration, say); nil when the
// src holds variables, whose value differs between requests. inc must be
// one of e.Includes. The template never reads the value; it is safe for
// concurrent use, and lives as long as the template.
func (e *Eval) Memo(inc *Include) *atomic.Value {
	o := &e.t.ops[inc.node]
	if n := &e.t.incs[o.arg]; n.src.parts != nil || n.src.err != nil {
		return nil
	}
	return &e.t.memos[o.arg]
}

// expandURL substitutes the variables of a src or alt attribute.
func (e *Eval) expandURL(u *urlTmpl) (string, error) {
	if u.parts == nil || u.err != nil {
		return u.raw, u.err
	}
	buf := e.buf[:0]
	for i := range u.parts {
		p := &u.parts[i]
		if p.v < 0 {
			buf = append(buf, p.lit...)
			continue
		}
		r := &e.t.vars[p.v]
		var encoded bool
		e.val, encoded = e.appendValue(e.val[:0], r)
		if hasControl(e.val) {
			e.buf = buf
			return u.raw, errValueControl
		}
		switch {
		case encoded:
			buf = append(buf, e.val...)
		case p.zone == zonePath:
			if s := string(e.val); s == "." || s == ".." {
				e.buf = buf
				return u.raw, errValueDotSegment
			}
			buf = appendPathEscape(buf, e.val)
		default:
			buf = appendQueryEscape(buf, e.val)
		}
	}
	e.buf = buf
	return string(buf), nil
}

// appendValue appends the value of variable r, or its default when the
// value is empty. encoded reports a value that is already URL-encoded (the
// rebuilt $(QUERY_STRING)).
func (e *Eval) appendValue(dst []byte, r *varRef) (_ []byte, encoded bool) {
	mark := len(dst)
	if e.v != nil {
		switch r.name {
		case vHost:
			if !r.hasKey {
				dst = append(dst, e.v.Host()...)
			}
		case vReferer:
			if !r.hasKey {
				dst = append(dst, e.v.Referer()...)
			}
		case vCookie:
			if r.hasKey {
				if c, ok := e.v.Cookie(r.key); ok {
					dst = append(dst, c...)
				}
			}
		case vQuery:
			if r.hasKey {
				dst = e.queryValue(dst, e.v.RawQuery(), r.key)
			} else {
				dst = e.rebuildQuery(dst, e.v.RawQuery())
				encoded = true
			}
		case vLang:
			if r.hasKey {
				if acceptsLanguage(e.v.AcceptLanguage(), r.key) {
					dst = append(dst, "true"...)
				} else {
					dst = append(dst, "false"...)
				}
			} else {
				dst = append(dst, e.v.AcceptLanguage()...)
			}
		case vUA:
			dst = appendUserAgent(dst, e.v.UserAgent(), r)
		}
	}
	if len(dst) == mark && r.hasDef {
		return append(dst, r.def...), false
	}
	return dst, encoded
}

// queryValue appends the first value of the query parameter name.
func (e *Eval) queryValue(dst []byte, raw, name string) []byte {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		var ok bool
		e.tmp, ok = appendQueryUnescape(e.tmp[:0], k)
		if !ok || string(e.tmp) != name {
			continue
		}
		mark := len(dst)
		if dst, ok = appendQueryUnescape(dst, v); !ok {
			dst = dst[:mark]
			continue
		}
		return dst
	}
	return dst
}

// rebuildQuery appends the query rebuilt from its parsed pairs: malformed
// and empty pairs dropped, keys and values re-escaped.
func (e *Eval) rebuildQuery(dst []byte, raw string) []byte {
	first := true
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(pair, "=")
		var ok bool
		e.tmp, ok = appendQueryUnescape(e.tmp[:0], k)
		if !ok || len(e.tmp) == 0 {
			continue
		}
		nk := len(e.tmp)
		if e.tmp, ok = appendQueryUnescape(e.tmp, v); !ok {
			continue
		}
		if !first {
			dst = append(dst, '&')
		}
		first = false
		dst = appendQueryEscape(dst, e.tmp[:nk])
		dst = append(dst, '=')
		dst = appendQueryEscape(dst, e.tmp[nk:])
	}
	return dst
}

// acceptsLanguage reports whether the Accept-Language header lists lang
// (case-insensitively, "en" also matching "en-GB") with a non-zero quality.
func acceptsLanguage(header, lang string) bool {
	for header != "" {
		var entry string
		entry, header, _ = strings.Cut(header, ",")
		tag, params, _ := strings.Cut(entry, ";")
		tag = strings.TrimSpace(tag)
		if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok && isZeroQ(strings.TrimSpace(q)) {
			continue
		}
		if len(tag) >= len(lang) && strings.EqualFold(tag[:len(lang)], lang) &&
			(len(tag) == len(lang) || tag[len(lang)] == '-') {
			return true
		}
	}
	return false
}

func isZeroQ(q string) bool {
	if q == "" || q[0] != '0' {
		return false
	}
	for i := 1; i < len(q); i++ {
		if q[i] != '0' && q[i] != '.' {
			return false
		}
	}
	return true
}

// appendUserAgent appends the $(HTTP_USER_AGENT) value selected by r: the
// header itself without a key; browser (MSIE, MOZILLA or OTHER), os (WIN,
// MAC, UNIX or OTHER) or version with one.
func appendUserAgent(dst []byte, ua string, r *varRef) []byte {
	if !r.hasKey {
		return append(dst, ua...)
	}
	switch r.key {
	case "browser":
		b, _ := browser(ua)
		return append(dst, b...)
	case "version":
		_, v := browser(ua)
		return append(dst, v...)
	case "os":
		switch {
		case strings.Contains(ua, "Windows") || strings.Contains(ua, "Win32") || strings.Contains(ua, "Win64"):
			return append(dst, "WIN"...)
		case strings.Contains(ua, "Mac") || strings.Contains(ua, "iPhone") || strings.Contains(ua, "iPad"):
			return append(dst, "MAC"...)
		case strings.Contains(ua, "Linux") || strings.Contains(ua, "X11") || strings.Contains(ua, "BSD") ||
			strings.Contains(ua, "SunOS") || strings.Contains(ua, "Unix") || strings.Contains(ua, "UNIX"):
			return append(dst, "UNIX"...)
		}
		return append(dst, "OTHER"...)
	}
	return dst
}

// browser classifies a User-Agent as the ESI 1.0 specification does.
func browser(ua string) (name, version string) {
	if _, rest, ok := strings.Cut(ua, "MSIE "); ok {
		return "MSIE", versionPrefix(rest)
	}
	if strings.Contains(ua, "Trident/") {
		if _, rest, ok := strings.Cut(ua, "rv:"); ok {
			return "MSIE", versionPrefix(rest)
		}
		return "MSIE", ""
	}
	if rest, ok := strings.CutPrefix(ua, "Mozilla/"); ok {
		return "MOZILLA", versionPrefix(rest)
	}
	if _, rest, ok := strings.Cut(ua, "/"); ok {
		return "OTHER", versionPrefix(rest)
	}
	return "OTHER", ""
}

// versionPrefix returns the leading digits and dots of s.
func versionPrefix(s string) string {
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	return s[:i]
}

// test evaluates the esi:when test rooted at n.
func (e *Eval) test(n int32) bool {
	e.arena = e.arena[:0]
	return e.truth(n)
}

func (e *Eval) truth(n int32) bool {
	x := &e.t.exprs[n]
	switch x.kind {
	case eNot:
		return !e.truth(x.a)
	case eAnd, eOr:
		// Chains of one operator are left-leaning trees as deep as they
		// are long: walk their spine instead of recursing. Operands have
		// no side effects, so the order does not matter.
		k := x.kind
		for e.t.exprs[n].kind == k {
			c := &e.t.exprs[n]
			if e.truth(c.b) == (k == eOr) {
				return k == eOr
			}
			n = c.a
		}
		return e.truth(n)
	case eCmp:
		mark := len(e.arena)
		a0, a1 := e.operand(x.a)
		b0, b1 := e.operand(x.b)
		ok := compare(x.op, e.arena[a0:a1], e.arena[b0:b1])
		e.arena = e.arena[:mark]
		return ok
	}
	mark := len(e.arena)
	a0, a1 := e.operand(n)
	ok := truthy(e.arena[a0:a1])
	e.arena = e.arena[:mark]
	return ok
}

// operand appends the value of expression n to the arena and returns its
// bounds there.
func (e *Eval) operand(n int32) (int, int) {
	x := &e.t.exprs[n]
	switch x.kind {
	case eLit:
		mark := len(e.arena)
		e.arena = append(e.arena, x.lit...)
		return mark, len(e.arena)
	case eVar:
		mark := len(e.arena)
		e.arena, _ = e.appendValue(e.arena, &e.t.vars[x.v])
		return mark, len(e.arena)
	}
	v := e.truth(n)
	mark := len(e.arena)
	if v {
		e.arena = append(e.arena, "true"...)
	} else {
		e.arena = append(e.arena, "false"...)
	}
	return mark, len(e.arena)
}
