package fragment

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// maxSyntaxErrors bounds the *SyntaxError values Parse reports; the rest are
// summed up in one last error.
const maxSyntaxErrors = 100

// incNode is the parsed form of one esi:include element.
type incNode struct {
	src, alt   urlTmpl
	hasAlt     bool
	cont       bool
	timeout    time.Duration
	hasTimeout bool
	ttl        time.Duration
	hasTTL     bool
	inert      bool // past a limit: renders its placeholder, never active
	inAttempt  bool
	deferred   bool
	streamable bool // in flow content inside the body, outside esi:try (scanStream)
}

// frame is an open block element during parsing.
type frame struct {
	kind       opKind
	op         int   // index of its start op
	start      int   // offset of its start tag
	tooDeep    bool  // opened past MaxNesting: becomes literal text when it closes
	saved      saved // template sizes when it opened, restored if it becomes literal
	hasAttempt bool
	hasExcept  bool
}

type saved struct {
	incs, vars, exprs, chooses, directives int
}

type parser struct {
	src   []byte
	lim   Limits
	t     *Template
	stack []frame

	syntax      []*SyntaxError
	moreSyntax  int         // syntax errors past the cap
	firstMore   SyntaxError // the earliest of them
	tooMany     bool
	tooDeep     bool
	tooLong     bool
	directives  int
	deepFrames  int             // open frames with tooDeep set
	open        [opVars + 1]int // open frames by kind
	rescanned   int             // bytes read by tag parses that failed
	noEsiClose  bool            // no "-->" is left for an <!--esi
	esiEnd      int             // offset of the "-->" closing the current <!--esi, or -1
	rawEnd      int             // offset of the end tag of the current script or style element
	textStart   int
	bodyVars    varScanner
	attrs       []attr
	exprScratch exprParser
}

type attr struct {
	name    []byte
	val     []byte // raw: between the quotes, or the unquoted value
	tooLong bool
}

// Parse parses body into an immutable Template. It never fails to return a
// usable template: malformed markup becomes literal text and includes past a
// limit are inert (they render their placeholder and are never active). The
// error, when non-nil, joins the *SyntaxError values (at most 100, the last
// one summing up any more) and the limit sentinels met; errors.Is and
// errors.As find them. Parse copies body: the caller may reuse it. A zero
// Limits takes the defaults. Parse is safe for concurrent use.
func Parse(body []byte, lim Limits) (*Template, error) {
	p := &parser{
		src:    bytes.Clone(body),
		lim:    lim.withDefaults(),
		esiEnd: -1,
	}
	if p.src == nil {
		p.src = []byte{}
	}
	p.t = &Template{src: p.src}
	p.bodyVars.reset(p.src)
	p.run()
	if len(p.t.incs) > 0 {
		p.t.memos = make([]atomic.Value, len(p.t.incs))
	}
	return p.t, p.err()
}

func (p *parser) err() error {
	var errs []error
	if p.moreSyntax > 0 {
		e := p.firstMore
		e.Msg = strconv.Itoa(p.moreSyntax) + " more syntax errors, the first: " + e.Msg
		p.syntax = append(p.syntax, &e)
	}
	if len(p.syntax) > 0 {
		slices.SortStableFunc(p.syntax, func(a, b *SyntaxError) int { return a.Offset - b.Offset })
		p.fillLines()
		for _, e := range p.syntax {
			errs = append(errs, e)
		}
	}
	if p.tooMany {
		errs = append(errs, ErrTooManyDirectives)
	}
	if p.tooDeep {
		errs = append(errs, ErrTooDeep)
	}
	if p.tooLong {
		errs = append(errs, ErrAttrTooLong)
	}
	return errors.Join(errs...)
}

// fillLines sets the Line of every syntax error, sorted by offset, in one
// pass over the body.
func (p *parser) fillLines() {
	line, at := 1, 0
	for _, e := range p.syntax {
		line += bytes.Count(p.src[at:e.Offset], []byte{'\n'})
		at = e.Offset
		e.Line = line
	}
}

func (p *parser) syntaxErr(off int, msg string) {
	if len(p.syntax) < maxSyntaxErrors-1 {
		p.syntax = append(p.syntax, &SyntaxError{Offset: off, Msg: msg})
		return
	}
	if p.moreSyntax == 0 || off < p.firstMore.Offset {
		p.firstMore = SyntaxError{Offset: off, Msg: msg}
	}
	p.moreSyntax++
}

func (p *parser) limit() int {
	if p.esiEnd >= 0 {
		return p.esiEnd
	}
	return len(p.src)
}

func (p *parser) emit(k opKind, start, end int, arg int32) int {
	p.t.ops = append(p.t.ops, op{kind: k, start: int32(start), end: int32(end), arg: arg, close: int32(len(p.t.ops))})
	return len(p.t.ops) - 1
}

// flush emits the pending literal text up to end. Inside esi:vars, the
// variables it holds become var ops.
func (p *parser) flush(end int) {
	a := p.textStart
	p.textStart = end
	if a >= end {
		return
	}
	if !p.inVars() {
		p.emit(opText, a, end, 0)
		return
	}
	for a < end {
		i := bytes.Index(p.src[a:end], []byte("$("))
		if i < 0 {
			break
		}
		i += a
		ref, n, ok := p.bodyVars.parse(i, end)
		if !ok {
			if i+2 > a {
				p.emit(opText, a, i+2, 0)
			}
			a = i + 2
			continue
		}
		if i > a {
			p.emit(opText, a, i, 0)
		}
		p.t.vars = append(p.t.vars, ref)
		p.emit(opVar, i, i+n, int32(len(p.t.vars)-1))
		a = i + n
	}
	if a < end {
		p.emit(opText, a, end, 0)
	}
}

// flushRaw emits src[textStart:end] as literal text without looking for
// variables (comments and CDATA inside esi:vars).
func (p *parser) flushRaw(end int) {
	if p.textStart < end {
		p.emit(opText, p.textStart, end, 0)
	}
	p.textStart = end
}

func (p *parser) inVars() bool { return p.open[opVars] > 0 }

func (p *parser) push(f frame) {
	p.open[f.kind]++
	p.stack = append(p.stack, f)
}

func (p *parser) run() {
	src := p.src
	pos := 0
	for {
		lim := p.limit()
		i := bytes.IndexByte(src[pos:lim], '<')
		if i < 0 {
			if p.esiEnd < 0 {
				break
			}
			// The end of an <!--esi region: its "-->" renders nothing.
			p.flush(p.esiEnd)
			p.emit(opNop, p.esiEnd, p.esiEnd+3, 0)
			pos = p.esiEnd + 3
			p.textStart = pos
			p.esiEnd = -1
			continue
		}
		i += pos
		rest := src[i:lim]
		if len(rest) < 2 {
			pos = i + 1
			continue
		}
		// Switch on the byte after '<' first: most tags are plain HTML.
		switch rest[1] {
		case 'e':
			if hasPrefix(rest, "<esi:") {
				pos = p.startTag(i, lim)
				continue
			}
		case '/':
			if hasPrefix(rest, "</esi:") {
				pos = p.endTag(i, lim)
				continue
			}
		case '!':
			if hasPrefix(rest, "<!--") {
				pos = p.comment(i, lim)
				continue
			}
			if hasPrefix(rest, "<![CDATA[") {
				end := len(rest)
				if j := bytes.Index(rest[9:], []byte("]]>")); j >= 0 {
					end = 9 + j + 3
				}
				if p.inVars() {
					p.flush(i)
					p.flushRaw(i + end)
				}
				pos = i + end
				continue
			}
		case 's', 'S':
			if i >= p.rawEnd {
				p.rawText(i)
			}
		}
		pos = i + 1
	}
	p.flush(len(src))
	p.endOpenInclude()
	if len(p.stack) > 0 {
		for _, f := range p.stack {
			p.syntaxErr(f.start, "unclosed esi:"+tagName(f.kind))
		}
		p.literalize(p.stack[0], len(src))
		p.popTo(0)
	}
	for i := range p.t.ops {
		if p.t.ops[i].kind != opText {
			p.t.hasESI = true
			break
		}
	}
	if p.lim.Stream {
		p.scanStream()
	} else {
		p.t.tailOp, p.t.tailAt = int32(len(p.t.ops)), int32(len(p.t.src))
	}
}

// comment handles "<!--" at i: an <!--esi wrapper, or a plain comment in
// which ESI is not live.
func (p *parser) comment(i, lim int) int {
	src := p.src
	if p.esiEnd >= 0 {
		// Inside <!--esi, the region ends at the first "-->": no nesting.
		return i + 4
	}
	if bytes.HasPrefix(src[i:], []byte("<!--esi")) {
		j := -1
		if !p.noEsiClose {
			j = indexOutsideCDATA(src[i+7:], "-->")
			p.noEsiClose = j < 0
		}
		if j < 0 {
			p.syntaxErr(i, "unclosed <!--esi")
			return i + 7
		}
		p.flush(i)
		p.emit(opNop, i, i+7, 0)
		p.textStart = i + 7
		p.esiEnd = i + 7 + j
		return i + 7
	}
	if i < p.rawEnd {
		// In a script or style element "<!--" is not a comment: ESI
		// stays live.
		return i + 4
	}
	end := lim
	switch {
	case bytes.HasPrefix(src[i:], []byte("<!-->")):
		end = i + 5
	case bytes.HasPrefix(src[i:], []byte("<!--->")):
		end = i + 6
	default:
		if j := bytes.Index(src[i+4:lim], []byte("-->")); j >= 0 {
			end = i + 4 + j + 3
		}
	}
	if p.inVars() {
		p.flush(i)
		p.flushRaw(end)
	}
	return end
}

// rawText notes the extent of the script or style element whose start tag
// begins at i, if there is one: in it, "<!--" does not start a comment.
func (p *parser) rawText(i int) {
	src := p.src
	var name string
	switch {
	case hasPrefixFold(src[i+1:], "script"):
		name = "script"
	case hasPrefixFold(src[i+1:], "style"):
		name = "style"
	default:
		return
	}
	j := i + 1 + len(name)
	if j < len(src) && !isSpace(src[j]) && src[j] != '>' && src[j] != '/' {
		return
	}
	p.rawEnd = len(src)
	for {
		k := bytes.Index(src[j:], []byte("</"))
		if k < 0 {
			return
		}
		j += k + 2
		if hasPrefixFold(src[j:], name) {
			p.rawEnd = j - 2
			return
		}
	}
}

// hasPrefix is bytes.HasPrefix for a constant prefix, without the call.
func hasPrefix(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if b[i] != prefix[i] {
			return false
		}
	}
	return true
}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix,
// ignoring case.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if b[i]|0x20 != prefix[i] {
			return false
		}
	}
	return true
}

var tagNames = map[string]opKind{
	"include":   opInclude,
	"try":       opTry,
	"attempt":   opAttempt,
	"except":    opExcept,
	"choose":    opChoose,
	"when":      opWhen,
	"otherwise": opOtherwise,
	"vars":      opVars,
}

func tagName(k opKind) string { return k.String() }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// readTag parses the tag whose name starts at nameAt: name, attributes
// (name=value, the value double-quoted, single-quoted or unquoted), then ">"
// or "/>", all before lim. It fills p.attrs. When the tag is malformed, end
// is where reading stopped.
func (p *parser) readTag(nameAt, lim int) (name []byte, end int, selfClosing, ok bool) {
	src := p.src
	j := nameAt
	for j < lim && isNameByte(src[j]) {
		j++
	}
	if j == nameAt {
		return nil, j, false, false
	}
	name = src[nameAt:j]
	p.attrs = p.attrs[:0]
	for {
		k := j
		for k < lim && isSpace(src[k]) {
			k++
		}
		if k >= lim {
			return nil, k, false, false
		}
		switch src[k] {
		case '>':
			return name, k + 1, false, true
		case '/':
			if k+1 < lim && src[k+1] == '>' {
				return name, k + 2, true, true
			}
			return nil, k, false, false
		}
		if k == j {
			return nil, k, false, false // attributes must be separated by space
		}
		a := k
		for k < lim && isNameByte(src[k]) || k < lim && src[k] == ':' {
			k++
		}
		if k == a {
			return nil, k, false, false
		}
		an := src[a:k]
		for k < lim && isSpace(src[k]) {
			k++
		}
		if k >= lim || src[k] != '=' {
			return nil, k, false, false
		}
		k++
		for k < lim && isSpace(src[k]) {
			k++
		}
		if k >= lim {
			return nil, k, false, false
		}
		var v []byte
		switch src[k] {
		case '"', '\'':
			q := src[k]
			e := bytes.IndexByte(src[k+1:lim], q)
			if e < 0 {
				return nil, lim, false, false
			}
			v = src[k+1 : k+1+e]
			j = k + 1 + e + 1
		default:
			// Unquoted, as HTML reads it: the value ends at whitespace or
			// '>', so a '/' right before the '>' belongs to the value
			// (src=/x/> is src="/x/", not a self-closing tag). An '='
			// right before the '>' gives an empty value. A quote, '<' or
			// '`' in it is an HTML parse error; here the tag is
			// malformed, which keeps a tag written inside a script
			// string with escaped quotes (src=\"/x\") literal.
			e := k
			for e < lim && !isSpace(src[e]) && src[e] != '>' {
				switch src[e] {
				case '"', '\'', '<', '`':
					return nil, e, false, false
				}
				e++
			}
			v = src[k:e]
			j = e
		}
		p.attrs = append(p.attrs, attr{name: an, val: v, tooLong: len(v) > p.lim.MaxAttrLen})
	}
}

func (p *parser) attr(name string) (attr, bool) {
	for _, a := range p.attrs {
		if string(a.name) == name {
			return a, true
		}
	}
	return attr{}, false
}

func (p *parser) save() saved {
	return saved{len(p.t.incs), len(p.t.vars), len(p.t.exprs), p.t.nChoose, p.directives}
}

func (p *parser) top() *frame {
	if len(p.stack) == 0 {
		return nil
	}
	return &p.stack[len(p.stack)-1]
}

// countDirective counts one ESI element and reports whether it is within
// MaxDirectives.
func (p *parser) countDirective() bool {
	p.directives++
	if p.directives > p.lim.MaxDirectives {
		p.tooMany = true
		return false
	}
	return true
}

// startTag handles "<esi:" at i and returns where scanning resumes.
func (p *parser) startTag(i, lim int) int {
	name, end, selfClosing, ok := p.readTag(i+5, lim)
	if !ok {
		p.syntaxErr(i, "malformed esi tag")
		// Resume right after the '<', so that a tag inside what looked
		// like an attribute value is still found. Bytes read by failed
		// parses are budgeted: past twice the body, resume where the
		// parse failed, which keeps hostile input linear.
		p.rescanned += end - i
		if p.rescanned > 2*len(p.src)+4096 {
			return max(end, i+1)
		}
		return i + 1
	}
	for _, a := range p.attrs {
		if a.tooLong {
			p.tooLong = true
		}
	}
	if !selfClosing && string(name) == "include" {
		// An include still waiting for its </esi:include> is empty: two
		// include bodies never nest (precise rule 6).
		p.endOpenInclude()
	}
	switch string(name) {
	case "remove", "comment":
		return p.rawElement(i, end, lim, string(name), selfClosing)
	}
	kind, known := tagNames[string(name)]
	p.flush(i)
	if !known {
		p.syntaxErr(i, "unknown element esi:"+string(name))
		p.countDirective()
		p.emit(opNop, i, end, 0)
		p.textStart = end
		return end
	}
	// Placement: try holds only attempt and except, choose only when and
	// otherwise; those appear nowhere else. A misplaced tag is literal text.
	parent := opText
	if f := p.top(); f != nil {
		parent = f.kind
	}
	switch kind {
	case opAttempt, opExcept:
		f := p.top()
		if parent != opTry || kind == opAttempt && f.hasAttempt || kind == opExcept && f.hasExcept {
			p.syntaxErr(i, "misplaced esi:"+string(name))
			return end
		}
		if kind == opAttempt {
			f.hasAttempt = true
		} else {
			f.hasExcept = true
		}
	case opWhen, opOtherwise:
		if parent != opChoose {
			p.syntaxErr(i, "misplaced esi:"+string(name))
			return end
		}
	default:
		if parent == opTry || parent == opChoose {
			p.syntaxErr(i, "esi:"+string(name)+" directly inside esi:"+tagName(parent))
			return end
		}
	}
	sv := p.save()
	var arg int32
	switch kind {
	case opInclude:
		a, ok := p.include(i)
		if !ok {
			return end
		}
		arg = a
	case opChoose:
		arg = int32(p.t.nChoose)
		p.t.nChoose++
	case opWhen:
		arg = p.when(i)
	}
	if !p.countDirective() && kind == opInclude {
		p.t.incs[arg].inert = true
	}
	idx := p.emit(kind, i, end, arg)
	p.textStart = end
	if selfClosing {
		return end
	}
	f := frame{kind: kind, op: idx, start: i, saved: sv}
	if len(p.stack) >= p.lim.MaxNesting {
		p.tooDeep = true
		f.tooDeep = true
		p.deepFrames++
		if p.deepFrames == 1 {
			p.syntaxErr(i, "esi blocks nested deeper than the limit")
		}
	}
	p.push(f)
	return end
}

// indexOutsideCDATA returns the index in b of the first sep that is not
// inside a CDATA section, or -1 (also when a CDATA section before it is never
// closed). Every byte is searched a bounded number of times.
func indexOutsideCDATA(b []byte, sep string) int {
	j := bytes.Index(b, []byte(sep))
	at := 0
	for j >= 0 {
		c := bytes.Index(b[at:j], []byte("<![CDATA["))
		if c < 0 {
			return j
		}
		c += at + 9
		e := bytes.Index(b[c:], []byte("]]>"))
		if e < 0 {
			return -1
		}
		at = c + e + 3
		if at > j {
			k := bytes.Index(b[at:], []byte(sep))
			if k < 0 {
				return -1
			}
			j = at + k
		}
	}
	return -1
}

// rawElement handles esi:remove and esi:comment, whose content is not
// parsed (CDATA in it is opaque, so it may hold their end tag): both render
// nothing.
func (p *parser) rawElement(i, end, lim int, name string, selfClosing bool) int {
	p.countDirective()
	if selfClosing {
		p.flush(i)
		p.emit(opNop, i, end, 0)
		p.textStart = end
		return end
	}
	closeTag := "</esi:" + name + ">"
	j := indexOutsideCDATA(p.src[end:lim], closeTag)
	if j < 0 {
		// Unclosed: literal text from its start tag on.
		p.syntaxErr(i, "unclosed esi:"+name)
		return lim
	}
	stop := end + j + len(closeTag)
	p.flush(i)
	p.emit(opNop, i, stop, 0)
	p.textStart = stop
	return stop
}

// include parses the attributes of the esi:include at i into a new incNode.
// It reports false for a tag without src, which is then literal text.
func (p *parser) include(i int) (int32, bool) {
	srcAttr, ok := p.attr("src")
	if !ok {
		p.syntaxErr(i, "esi:include without src")
		return 0, false
	}
	n := incNode{}
	for _, a := range p.attrs {
		if a.tooLong {
			n.inert = true
		}
	}
	n.src = p.urlTmpl(srcAttr.val)
	if a, ok := p.attr("alt"); ok {
		n.alt = p.urlTmpl(a.val)
		n.hasAlt = true
	}
	if a, ok := p.attr("onerror"); ok && string(decodeEntities(a.val)) == "continue" {
		n.cont = true
	}
	if a, ok := p.attr("timeout"); ok {
		if d, ok := parseDuration(decodeEntities(a.val), time.Millisecond); ok {
			n.timeout, n.hasTimeout = max(d, 0), true
		} else {
			p.syntaxErr(i, "invalid esi:include timeout")
		}
	}
	if a, ok := p.attr("ttl"); ok {
		if d, ok := parseDuration(decodeEntities(a.val), time.Second); ok {
			n.ttl, n.hasTTL = min(max(d, 0), MaxTTL), true
		} else {
			p.syntaxErr(i, "invalid esi:include ttl")
		}
	}
	n.inAttempt = p.open[opAttempt] > 0
	n.deferred = p.open[opExcept] > 0
	p.t.incs = append(p.t.incs, n)
	return int32(len(p.t.incs) - 1), true
}

// parseDuration reads a Go duration, or an integer count of unit.
func parseDuration(b []byte, unit time.Duration) (time.Duration, bool) {
	s := string(bytes.TrimSpace(b))
	if s == "" {
		return 0, false
	}
	allDigits := true
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			allDigits = false
			break
		}
	}
	if allDigits {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > int64(1<<63-1)/int64(unit) {
			return 0, false
		}
		return time.Duration(n) * unit, true
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false
	}
	return d, true
}

// when parses the test of the esi:when at i and returns its expression
// root, or -1 when it can never be true.
func (p *parser) when(i int) int32 {
	a, ok := p.attr("test")
	if !ok {
		p.syntaxErr(i, "esi:when without test")
		return -1
	}
	if a.tooLong {
		return -1
	}
	root, err := p.exprScratch.parse(p.t, decodeEntities(a.val), p.lim.MaxNesting)
	if err != nil {
		if errors.Is(err, ErrTooDeep) {
			p.tooDeep = true
		}
		p.syntaxErr(i, "esi:when test: "+err.Error())
		return -1
	}
	return root
}

// endTag handles "</esi:" at i and returns where scanning resumes.
func (p *parser) endTag(i, lim int) int {
	src := p.src
	j := i + 6
	for j < lim && isNameByte(src[j]) {
		j++
	}
	name := src[i+6 : j]
	for j < lim && isSpace(src[j]) {
		j++
	}
	if len(name) == 0 || j >= lim || src[j] != '>' {
		p.syntaxErr(i, "malformed esi end tag")
		return i + 1
	}
	end := j + 1
	kind, known := tagNames[string(name)]
	if !known {
		if string(name) == "remove" || string(name) == "comment" {
			p.syntaxErr(i, "stray </esi:"+string(name)+">")
			return end
		}
		p.syntaxErr(i, "unknown element esi:"+string(name))
		p.flush(i)
		p.emit(opNop, i, end, 0)
		p.textStart = end
		return end
	}
	k := -1
	if p.open[kind] > 0 {
		// The nearest open frame of this kind; the frames above it are
		// popped below, so the search costs no more than they did.
		k = len(p.stack) - 1
		for p.stack[k].kind != kind {
			k--
		}
	}
	if k < 0 {
		p.syntaxErr(i, "stray </esi:"+string(name)+">")
		if kind == opInclude {
			// Left over from an include that ended empty: it renders
			// nothing, like the include it once belonged to.
			p.flush(i)
			p.emit(opNop, i, end, 0)
			p.textStart = end
		}
		return end
	}
	p.flush(i)
	if kind != opInclude {
		// An include opened inside this block and never closed ends
		// empty here; what followed it stays in the block.
		if j := p.openInclude(); j > k {
			p.dropInclude(j)
		}
	}
	if k < len(p.stack)-1 {
		for _, f := range p.stack[k+1:] {
			p.syntaxErr(f.start, "unclosed esi:"+tagName(f.kind))
		}
		p.literalize(p.stack[k+1], i)
		p.popTo(k + 1)
	}
	f := p.stack[k]
	p.popTo(k)
	if f.tooDeep {
		if p.deepFrames == 0 {
			// The outermost block past the limit: all of it is literal.
			p.literalize(f, end)
			p.textStart = end
			return end
		}
	}
	idx := p.emit(opEnd, i, end, 0)
	p.t.ops[f.op].close = int32(idx)
	p.textStart = end
	return end
}

// openInclude returns the stack index of the include element that waits for
// its </esi:include>, or -1. At most one does: the next include open tag
// ends it.
func (p *parser) openInclude() int {
	if p.open[opInclude] == 0 {
		return -1
	}
	k := len(p.stack) - 1
	for p.stack[k].kind != opInclude {
		k--
	}
	return k
}

// endOpenInclude makes the include that waits for its </esi:include>, if
// any, an empty element.
func (p *parser) endOpenInclude() {
	if k := p.openInclude(); k >= 0 {
		p.dropInclude(k)
	}
}

// dropInclude turns the open include frame at stack index k into an empty
// element (its op closes at itself, so it has no placeholder): what was
// parsed after its start tag becomes the content of the enclosing block.
// Varnish and Akamai read <esi:include> without "/>" the same way.
func (p *parser) dropInclude(k int) {
	if p.stack[k].tooDeep {
		p.deepFrames--
	}
	p.open[opInclude]--
	p.stack = slices.Delete(p.stack, k, k+1)
}

func (p *parser) popTo(n int) {
	for _, f := range p.stack[n:] {
		if f.tooDeep {
			p.deepFrames--
		}
		p.open[f.kind]--
	}
	p.stack = p.stack[:n]
}

// literalize turns everything from f's start tag up to end into one literal
// text op, dropping what was parsed inside.
func (p *parser) literalize(f frame, end int) {
	t := p.t
	t.ops = t.ops[:f.op]
	t.incs = t.incs[:f.saved.incs]
	t.vars = t.vars[:f.saved.vars]
	t.exprs = t.exprs[:f.saved.exprs]
	t.nChoose = f.saved.chooses
	p.directives = f.saved.directives
	p.emit(opText, f.start, end, 0)
	p.textStart = end
}

// decodeEntities decodes the XML entities &amp; &lt; &gt; &quot; &apos; in
// an attribute value. It returns b itself when there is none.
func decodeEntities(b []byte) []byte {
	if bytes.IndexByte(b, '&') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '&' {
			rest := b[i:]
			switch {
			case bytes.HasPrefix(rest, []byte("&amp;")):
				out = append(out, '&')
				i += 4
				continue
			case bytes.HasPrefix(rest, []byte("&lt;")):
				out = append(out, '<')
				i += 3
				continue
			case bytes.HasPrefix(rest, []byte("&gt;")):
				out = append(out, '>')
				i += 3
				continue
			case bytes.HasPrefix(rest, []byte("&quot;")):
				out = append(out, '"')
				i += 5
				continue
			case bytes.HasPrefix(rest, []byte("&apos;")):
				out = append(out, '\'')
				i += 5
				continue
			}
		}
		out = append(out, b[i])
	}
	return out
}
