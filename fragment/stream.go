package fragment

import (
	"bytes"
	"slices"
)

// What a page may stream (DESIGN.md, precise rule 29). The parser does not
// model HTML; after parsing, one pass over the template's literal text
// (the bytes a page renders around its directives, with every ESI element
// left out) finds, for each include, the HTML context it sits in, the
// page's tail and whether it declares a policy in a meta element.

// rawTextElements are the elements whose content the HTML tokenizer reads
// as text up to their end tag (raw text and RCDATA): an include inside one
// is never streamed, and "</body>" inside one is not the tail.
var rawTextElements = [...]string{
	"script", "style", "title", "textarea", "xmp", "iframe",
	"noembed", "noframes", "noscript", "plaintext",
}

// streamScan is the state of the pass over the flattened literal text.
type streamScan struct {
	flat []byte  // the literal text of the template, directives left out
	at   []int32 // per include node: its offset in flat, or -1
	segs []textSeg
}

// textSeg maps one top-level text op's bytes in flat back to src.
type textSeg struct {
	flat, src, n, op int
}

// htmlCtx is where the tokenizer stands at one offset of flat.
type htmlCtx uint8

const (
	ctxFlow    htmlCtx = iota // element content: streamable if in the body
	ctxTag                    // inside a tag: an attribute name or value
	ctxRaw                    // raw text or RCDATA, a comment, a doctype
	ctxHead                   // inside <head>
	ctxPreBody                // before <body> in a template that has one
	ctxAfter                  // after </body> or </html>
	ctxForeign                // inside svg or math
	ctxInert                  // inside a <template> of the page's own
	ctxTable                  // in a table, row or section, not in a cell: text there is moved out
)

// scanStream sets the streamable flag of every include, the tail and the
// meta policy flag. It runs once, at the end of Parse.
func (p *parser) scanStream() {
	t := p.t
	t.tailOp, t.tailAt = int32(len(t.ops)), int32(len(t.src))
	if len(t.incs) == 0 {
		return // nothing to stream: the tail and the policy do not matter
	}
	s := streamScan{at: make([]int32, len(t.incs)), flat: make([]byte, 0, len(t.src))}
	for i := range s.at {
		s.at[i] = -1
	}
	// Flatten: text and variables render, directives do not. A variable's
	// value is HTML-escaped, so it never opens markup: it is left out.
	var closes []int32 // the end ops of the open blocks
	opOf := make([]int, len(t.incs))
	for i := range t.ops {
		o := &t.ops[i]
		for len(closes) > 0 && closes[len(closes)-1] < int32(i) {
			closes = closes[:len(closes)-1]
		}
		switch {
		case o.kind == opText:
			if len(closes) == 0 {
				s.segs = append(s.segs, textSeg{flat: len(s.flat), src: int(o.start), n: int(o.end - o.start), op: i})
			}
			s.flat = append(s.flat, t.src[o.start:o.end]...)
		case o.kind == opInclude:
			s.at[o.arg] = int32(len(s.flat))
			opOf[o.arg] = i
		}
		if o.kind >= opInclude && o.close > int32(i) {
			closes = append(closes, o.close)
		}
	}
	ctx := make([]htmlCtx, len(t.incs))
	tail := s.tokenize(ctx, &t.metaCSP)
	for k := range t.incs {
		n := &t.incs[k]
		c := ctx[k]
		if c == ctxTable && rowsOnly(t, opOf[k]) {
			c = ctxFlow // anchors, comments and rows stay where a table has them
		}
		n.streamable = c == ctxFlow && !n.inAttempt && !n.deferred && s.at[k] >= 0
	}
	if tail < 0 {
		return
	}
	for _, g := range s.segs {
		if tail >= g.flat && tail < g.flat+g.n {
			t.tailAt = int32(g.src + tail - g.flat)
			t.tailOp = int32(g.op)
			return
		}
	}
}

// tokenize walks flat the way an HTML tokenizer would, closely enough to
// tell element content from everything else, and records the context of
// each include in ctx. It returns the offset in flat of the last "</body"
// outside comments and raw text (-1 when none). In a template without a
// <body> start tag (a fragment's), everything outside <head> is flow.
func (s *streamScan) tokenize(ctx []htmlCtx, metaCSP *bool) (lastBody int) {
	b := s.flat
	lastBody = -1
	// Includes sorted by offset: they are, since ops are in order, except
	// for those never reached (at < 0).
	order := make([]int, 0, len(s.at))
	for k, a := range s.at {
		if a >= 0 {
			order = append(order, k)
		}
	}
	next := 0
	// inside is how far a construct ending at end covers includes: one at
	// end itself is after it, unless the construct is cut off by the end.
	inside := func(end int) int {
		if end == len(b) && (end == 0 || b[end-1] != '>') {
			return end + 1
		}
		return end
	}
	mark := func(upTo int, c htmlCtx) {
		for next < len(order) && int(s.at[order[next]]) < upTo {
			ctx[order[next]] = c
			next++
		}
	}
	// A first look for a <body> start tag decides what comes before it.
	hasBody := findStartTag(b, "body")
	var (
		inHead, inBody, after bool
		foreign, inert        int
		// tables is the nesting of tables ('t') and their cells and
		// captions ('c'): an include whose innermost one is a table sits
		// where a browser moves text out in front of the table (foster
		// parenting), away from its anchors.
		tables []byte
	)
	popTo := func(k byte) {
		for len(tables) > 0 && tables[len(tables)-1] != k {
			tables = tables[:len(tables)-1]
		}
	}
	flow := func() htmlCtx {
		switch {
		case inert > 0:
			return ctxInert
		case foreign > 0:
			return ctxForeign
		case len(tables) > 0 && tables[len(tables)-1] == 't':
			return ctxTable
		case after:
			return ctxAfter
		case inHead:
			return ctxHead
		case hasBody && !inBody:
			return ctxPreBody
		}
		return ctxFlow
	}
	i := 0
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '<')
		if j < 0 {
			break
		}
		j += i
		// Offsets [i, j] are text: an include there (before the '<') is in
		// the current context; one exactly at j too.
		mark(j+1, flow())
		rest := b[j:]
		switch {
		case hasPrefix(rest, "<!--"):
			end := len(b)
			switch {
			case hasPrefix(rest, "<!-->"):
				end = j + 5
			case hasPrefix(rest, "<!--->"):
				end = j + 6
			default:
				if k := bytes.Index(b[j+4:], []byte("-->")); k >= 0 {
					end = j + 4 + k + 3
				}
			}
			mark(inside(end), ctxRaw)
			i = end
		case len(rest) > 1 && (rest[1] == '!' || rest[1] == '?'):
			end := len(b)
			if k := bytes.IndexByte(rest, '>'); k >= 0 {
				end = j + k + 1
			}
			mark(inside(end), ctxRaw)
			i = end
		case len(rest) > 2 && rest[1] == '/' && isLetter(rest[2]):
			name, end, _ := readHTMLTag(b, j+2)
			mark(inside(end), ctxTag)
			switch name {
			case "head":
				inHead = false
			case "body", "html":
				if name == "body" && inert == 0 && foreign == 0 {
					lastBody = j
				}
				if inert == 0 && foreign == 0 {
					after = true
				}
			case "svg", "math":
				if foreign > 0 {
					foreign--
				}
			case "template":
				if inert > 0 {
					inert--
				}
			case "table":
				if inert == 0 {
					popTo('t')
					if len(tables) > 0 {
						tables = tables[:len(tables)-1]
					}
				}
			case "td", "th", "caption":
				if inert == 0 && slices.Contains(tables, 'c') {
					popTo('c')
					tables = tables[:len(tables)-1]
				}
			case "tr", "tbody", "thead", "tfoot":
				if inert == 0 {
					popTo('t')
				}
			}
			i = end
		case len(rest) > 1 && isLetter(rest[1]):
			name, end, selfClosing := readHTMLTag(b, j+1)
			mark(inside(end), ctxTag)
			i = end
			if foreign > 0 {
				if (name == "svg" || name == "math") && !selfClosing {
					foreign++
				}
				continue
			}
			switch name {
			case "head":
				inHead = !inBody
			case "body":
				inHead, inBody = false, true
			case "svg", "math":
				if !selfClosing {
					foreign++
				}
			case "template":
				inert++
			case "table":
				if inert == 0 {
					tables = append(tables, 't')
				}
			case "td", "th", "caption":
				if inert == 0 && len(tables) > 0 {
					popTo('t')
					tables = append(tables, 'c')
				}
			case "tr", "tbody", "thead", "tfoot":
				if inert == 0 {
					popTo('t')
				}
			case "meta":
				if isMetaCSP(b[j:end]) {
					*metaCSP = true
				}
			}
			if isRawText(name) {
				stop := len(b)
				if name != "plaintext" {
					stop = indexEndTag(b, end, name)
				}
				mark(stop+1, ctxRaw) // one right before the end tag is still inside
				i = stop
			}
		default:
			i = j + 1
		}
	}
	mark(len(b)+1, flow())
	return lastBody
}

// rowsOnly reports whether the placeholder of the include at op i is
// nothing, or table rows: what a browser keeps in place in a table.
func rowsOnly(t *Template, i int) bool {
	var ph []byte
	for j := i + 1; j < int(t.ops[i].close); j++ {
		if o := &t.ops[j]; o.kind == opText {
			ph = append(ph, t.src[o.start:o.end]...)
		} else {
			return false // a variable or a directive: text of unknown form
		}
	}
	ph = bytes.TrimSpace(ph)
	return len(ph) == 0 || hasPrefixFold(ph, "<tr") && len(ph) > 3 && (ph[3] == '>' || isSpace(ph[3])) && ph[len(ph)-1] == '>'
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isRawText(name string) bool {
	for _, r := range rawTextElements {
		if name == r {
			return true
		}
	}
	return false
}

// readHTMLTag reads the tag whose name starts at i (after "<" or "</"):
// its lower-cased name (for the names this file knows; others as "") and
// the offset after its ">" (or the end), honouring quoted values.
func readHTMLTag(b []byte, i int) (name string, end int, selfClosing bool) {
	j := i
	for j < len(b) && !isSpace(b[j]) && b[j] != '/' && b[j] != '>' {
		j++
	}
	name = knownName(b[i:j])
	for j < len(b) {
		k := bytes.IndexByte(b[j:], '>')
		if k < 0 {
			k = len(b) - j
		}
		q := bytes.IndexAny(b[j:j+k], `"'`)
		if q < 0 {
			if j+k == len(b) {
				return name, len(b), false
			}
			return name, j + k + 1, j+k > 0 && b[j+k-1] == '/'
		}
		q += j
		if !quotedValueAhead(b, q) {
			j = q + 1 // a quote in an attribute name or unquoted value
			continue
		}
		c := bytes.IndexByte(b[q+1:], b[q])
		if c < 0 {
			return name, len(b), false
		}
		j = q + 1 + c + 1
	}
	return name, len(b), false
}

// quotedValueAhead reports whether the quote at j follows "=" and spaces.
func quotedValueAhead(b []byte, j int) bool {
	k := j - 1
	for k >= 0 && isSpace(b[k]) {
		k--
	}
	return k >= 0 && b[k] == '='
}

var knownNames = [...]string{
	"body", "head", "html", "svg", "math", "template", "meta",
	"table", "td", "th", "tr", "tbody", "thead", "tfoot", "caption",
	"script", "style", "title", "textarea", "xmp", "iframe",
	"noembed", "noframes", "noscript", "plaintext",
}

func knownName(b []byte) string {
	if len(b) < 2 || len(b) > 9 {
		return ""
	}
	for _, n := range knownNames {
		if len(b) == len(n) && hasPrefixFold(b, n) {
			return n
		}
	}
	return ""
}

// indexEndTag returns the offset of the "</name" that ends a raw-text
// element whose content starts at i, or len(b).
func indexEndTag(b []byte, i int, name string) int {
	for {
		k := bytes.Index(b[i:], []byte("</"))
		if k < 0 {
			return len(b)
		}
		k += i
		e := k + 2 + len(name)
		if hasPrefixFold(b[k+2:], name) && (e == len(b) || isSpace(b[e]) || b[e] == '/' || b[e] == '>') {
			return k
		}
		i = k + 2
	}
}

// findStartTag reports whether b holds a start tag named name.
func findStartTag(b []byte, name string) bool {
	for i := 0; ; {
		k := bytes.IndexByte(b[i:], '<')
		if k < 0 {
			return false
		}
		i += k + 1
		e := i + len(name)
		if hasPrefixFold(b[i:], name) && (e == len(b) || isSpace(b[e]) || b[e] == '/' || b[e] == '>') {
			return true
		}
	}
}

// isMetaCSP reports whether tag (a whole <meta …> tag) has http-equiv
// Content-Security-Policy, in any case, quoted or not.
func isMetaCSP(tag []byte) bool {
	lower := bytes.ToLower(tag)
	k := bytes.Index(lower, []byte("http-equiv"))
	if k < 0 {
		return false
	}
	v := bytes.TrimLeft(lower[k+len("http-equiv"):], " \t\n\r\f")
	if len(v) == 0 || v[0] != '=' {
		return false
	}
	v = bytes.TrimLeft(v[1:], " \t\n\r\f")
	if len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
		v = v[1:]
	}
	return bytes.HasPrefix(bytes.TrimLeft(v, " \t\n\r\f"), []byte("content-security-policy"))
}

// HasMetaCSP reports whether the template's own markup holds a
// <meta http-equiv="Content-Security-Policy"> (outside comments and raw
// text): a page that declares its policy there is never streamed
// (precise rule 31).
// It reports false for a template without includes.
func (t *Template) HasMetaCSP() bool { return t.metaCSP }

// Tail returns the offset in the parsed body where the page's tail starts:
// the last "</body" of the template's own top-level text (not inside an
// ESI block, a comment or a script), or the body's length when there is
// none or the last one is inside a block (or the template holds no
// include). A streamed page sends what is
// before it, then its fills, then the tail.
func (t *Template) Tail() int { return int(t.tailAt) }

// RenderHead renders the page up to its Tail, as Render would.
func (t *Template) RenderHead(dst []byte, e *Eval, r Resolver) []byte {
	if e.t != t {
		panic("fragment: RenderHead with an Eval of another template")
	}
	k := int(t.tailOp)
	dst, _ = e.render(dst, 0, k, r, false)
	if k < len(t.ops) {
		dst = append(dst, t.src[t.ops[k].start:t.tailAt]...)
	}
	return dst
}

// RenderTail renders the page from its Tail on; RenderHead followed by
// RenderTail renders what Render does.
func (t *Template) RenderTail(dst []byte, e *Eval, r Resolver) []byte {
	if e.t != t {
		panic("fragment: RenderTail with an Eval of another template")
	}
	k := int(t.tailOp)
	if k >= len(t.ops) {
		return dst
	}
	dst = append(dst, t.src[t.tailAt:t.ops[k].end]...)
	dst, _ = e.render(dst, k+1, len(t.ops), r, false)
	return dst
}
