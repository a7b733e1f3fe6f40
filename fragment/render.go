package fragment

// Render appends the page to dst and returns the extended slice. e must hold
// an evaluation of t (Render panics otherwise, as that is a programming
// error). Each active include reached is passed to r, which appends its
// content. An esi:attempt is rendered into dst and rolled back (dst
// truncated to where the attempt began) when one of its includes failed;
// then its esi:except renders. Deferred includes reach r only when their
// except renders. Includes past a limit render their placeholder without
// reaching r. Render is safe to call on one template from many goroutines,
// each with its own Eval.
func (t *Template) Render(dst []byte, e *Eval, r Resolver) []byte {
	if e.t != t {
		panic("fragment: Render with an Eval of another template")
	}
	dst, _ = e.render(dst, 0, len(t.ops), r, false)
	return dst
}

// AppendPlaceholder appends inc's placeholder to dst and returns the
// extended slice: the include element's body rendered as ESI, whose own
// includes render their own placeholders; nothing for an empty element. inc
// must belong to e.Includes.
func (e *Eval) AppendPlaceholder(dst []byte, inc *Include) []byte {
	return e.appendPlaceholder(dst, int(inc.node))
}

func (e *Eval) appendPlaceholder(dst []byte, i int) []byte {
	dst, _ = e.render(dst, i+1, int(e.t.ops[i].close), nil, true)
	return dst
}

// render appends ops[from:to] and reports whether an include failed. In a
// placeholder (ph) includes render their placeholders.
func (e *Eval) render(dst []byte, from, to int, r Resolver, ph bool) ([]byte, bool) {
	t := e.t
	ops := t.ops
	failed := false
	for i := from; i < to; {
		o := &ops[i]
		switch o.kind {
		case opText:
			dst = append(dst, t.src[o.start:o.end]...)
			i++
		case opVar:
			e.val, _ = e.appendValue(e.val[:0], &t.vars[o.arg])
			dst = appendHTMLEscape(dst, e.val)
			i++
		case opInclude:
			k := e.incOf[o.arg]
			if ph || k < 0 || r == nil {
				dst = e.appendPlaceholder(dst, i)
			} else {
				var f bool
				dst, f = r.AppendInclude(dst, e, &e.Includes[k])
				failed = failed || f
			}
			i = int(o.close) + 1
		case opTry:
			attempt, except := -1, -1
			for j := i + 1; j < int(o.close); j = next(ops, j) {
				switch ops[j].kind {
				case opAttempt:
					attempt = j
				case opExcept:
					except = j
				}
			}
			if attempt >= 0 {
				mark := len(dst)
				var f bool
				dst, f = e.render(dst, attempt+1, int(ops[attempt].close), r, ph)
				if f {
					dst = dst[:mark]
					if except >= 0 {
						dst, f = e.render(dst, except+1, int(ops[except].close), r, ph)
						failed = failed || f
					}
				}
			}
			i = int(o.close) + 1
		case opChoose:
			if c := int(e.choice[o.arg]); c >= 0 {
				var f bool
				dst, f = e.render(dst, c+1, int(ops[c].close), r, ph)
				failed = failed || f
			}
			i = int(o.close) + 1
		default:
			i++
		}
	}
	return dst, failed
}
