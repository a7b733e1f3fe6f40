package fragment

import (
	"sync/atomic"
	"unsafe"
)

// Template is a parsed body: literal byte spans plus ESI directives. A
// Template is immutable and safe for concurrent use by many goroutines
// (HasESI, Size, Evaluate, Render). The zero value is an empty template that
// renders nothing; templates are normally obtained from Parse.
type Template struct {
	src     []byte // the parsed body (an owned copy)
	ops     []op
	incs    []incNode
	vars    []varRef
	exprs   []exprNode
	nChoose int
	hasESI  bool
	metaCSP bool  // the markup declares a Content-Security-Policy in a meta element
	tailOp  int32 // the text op holding the tail's start, or len(ops)
	tailAt  int32 // the tail's offset in src (see Tail)
	// memos holds, per incs entry, what a caller keeps for an include whose
	// src is literal (Eval.Memo); the template never reads it.
	memos []atomic.Value
}

type opKind uint8

// Op kinds. Block kinds (from opInclude on) have a close index pointing at
// their end op (or at themselves when the element was self-closing).
const (
	opText    opKind = iota // literal bytes, rendered as they are
	opNop                   // directive bytes that render nothing
	opVar                   // a variable in an esi:vars body; arg indexes vars
	opEnd                   // the end tag of a block; renders nothing
	opInclude               // arg indexes incs; a block when it has a placeholder body
	opTry
	opAttempt
	opExcept
	opChoose // arg is the choose's number
	opWhen   // arg indexes exprs (the test's root), or -1 for a test that is never true
	opOtherwise
	opVars
)

var opNames = [...]string{
	opText: "text", opNop: "nop", opVar: "var", opEnd: "end",
	opInclude: "include", opTry: "try", opAttempt: "attempt", opExcept: "except",
	opChoose: "choose", opWhen: "when", opOtherwise: "otherwise", opVars: "vars",
}

func (k opKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return "?"
}

// op is one piece of the template. start and end delimit its raw bytes in
// src; the ops of a template tile src exactly, in order.
type op struct {
	kind       opKind
	start, end int32
	close      int32 // block kinds: index of the end op (or the op itself when empty)
	arg        int32
}

// HasESI reports whether the body held any ESI at all. When false, the body
// renders unchanged and the caller may send it as it is.
func (t *Template) HasESI() bool { return t.hasESI }

// Size returns the approximate number of bytes the template holds, for cache
// cost accounting.
func (t *Template) Size() int {
	n := int(unsafe.Sizeof(*t)) + cap(t.src) +
		cap(t.ops)*int(unsafe.Sizeof(op{})) +
		cap(t.incs)*int(unsafe.Sizeof(incNode{})) +
		cap(t.vars)*int(unsafe.Sizeof(varRef{})) +
		cap(t.exprs)*int(unsafe.Sizeof(exprNode{})) +
		cap(t.memos)*int(unsafe.Sizeof(atomic.Value{}))
	for i := range t.incs {
		n += t.incs[i].src.size() + t.incs[i].alt.size()
	}
	for i := range t.vars {
		n += len(t.vars[i].key) + len(t.vars[i].def)
	}
	for i := range t.exprs {
		n += len(t.exprs[i].lit)
	}
	return n
}

// IncludeSrcs returns how many include elements the template holds and
// the length of their src attributes together: what sizes the values a
// caller keeps with Eval.Memo.
func (t *Template) IncludeSrcs() (n, srcBytes int) {
	for i := range t.incs {
		srcBytes += len(t.incs[i].src.raw)
	}
	return len(t.incs), srcBytes
}

// walkRaw calls fn for every piece of the template in order with its raw
// bytes; laid end to end they rebuild the parsed body exactly.
func (t *Template) walkRaw(fn func(k opKind, raw []byte)) {
	for i := range t.ops {
		o := &t.ops[i]
		fn(o.kind, t.src[o.start:o.end])
	}
}
