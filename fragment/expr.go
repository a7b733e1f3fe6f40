package fragment

import (
	"bytes"
	"errors"
	"strconv"
)

type exprKind uint8

const (
	eLit exprKind = iota // a quoted string or a number
	eVar                 // a variable; v indexes Template.vars
	eNot
	eAnd
	eOr
	eCmp
)

type cmpOp uint8

const (
	cmpEq cmpOp = iota
	cmpNe
	cmpLt
	cmpGt
	cmpLe
	cmpGe
)

var cmpNames = [...]string{"==", "!=", "<", ">", "<=", ">="}

// exprNode is one node of a parsed esi:when test.
type exprNode struct {
	kind exprKind
	op   cmpOp
	a, b int32 // operands (indexes in Template.exprs)
	v    int32 // eVar: index in Template.vars
	lit  string
}

// exprParser parses the expression language of esi:when tests:
//
//	or      = and { "|" and }
//	and     = unary { "&" unary }
//	unary   = "!" unary | compare
//	compare = operand [ ("==" | "!=" | "<" | ">" | "<=" | ">=") operand ]
//	operand = "(" or ")" | variable | 'string' | number
//
// "||" and "&&" are accepted as "|" and "&". Nodes are appended to the
// template's exprs and vars.
type exprParser struct {
	t        *Template
	b        []byte
	pos      int
	depth    int
	maxDepth int
	vs       varScanner
	err      error
}

var errExprTooDeep = ErrTooDeep

func (x *exprParser) parse(t *Template, b []byte, maxDepth int) (int32, error) {
	nExprs, nVars := len(t.exprs), len(t.vars)
	*x = exprParser{t: t, b: b, maxDepth: maxDepth, vs: x.vs}
	x.vs.reset(b)
	root := x.or()
	x.space()
	if x.err == nil && x.pos < len(x.b) {
		x.fail("unexpected " + strconv.QuoteToASCII(string(x.b[x.pos:x.pos+1])))
	}
	if x.err != nil {
		t.exprs = t.exprs[:nExprs]
		t.vars = t.vars[:nVars]
		return -1, x.err
	}
	return root, nil
}

func (x *exprParser) fail(msg string) {
	if x.err == nil {
		x.err = errors.New(msg)
	}
}

func (x *exprParser) space() {
	for x.pos < len(x.b) && isSpace(x.b[x.pos]) {
		x.pos++
	}
}

func (x *exprParser) node(n exprNode) int32 {
	x.t.exprs = append(x.t.exprs, n)
	return int32(len(x.t.exprs) - 1)
}

func (x *exprParser) peek(s string) bool {
	return bytes.HasPrefix(x.b[x.pos:], []byte(s))
}

func (x *exprParser) enter() bool {
	x.depth++
	if x.depth > x.maxDepth {
		if x.err == nil {
			x.err = errExprTooDeep
		}
		return false
	}
	return true
}

func (x *exprParser) or() int32 {
	l := x.and()
	for x.err == nil {
		x.space()
		if !x.peek("|") {
			break
		}
		x.pos++
		if x.peek("|") {
			x.pos++
		}
		r := x.and()
		l = x.node(exprNode{kind: eOr, a: l, b: r})
	}
	return l
}

func (x *exprParser) and() int32 {
	l := x.unary()
	for x.err == nil {
		x.space()
		if !x.peek("&") {
			break
		}
		x.pos++
		if x.peek("&") {
			x.pos++
		}
		r := x.unary()
		l = x.node(exprNode{kind: eAnd, a: l, b: r})
	}
	return l
}

func (x *exprParser) unary() int32 {
	x.space()
	if x.peek("!") && !x.peek("!=") {
		x.pos++
		if !x.enter() {
			return -1
		}
		a := x.unary()
		x.depth--
		return x.node(exprNode{kind: eNot, a: a})
	}
	return x.compare()
}

func (x *exprParser) compare() int32 {
	l := x.operand()
	if x.err != nil {
		return -1
	}
	x.space()
	var op cmpOp
	switch {
	case x.peek("=="):
		op = cmpEq
	case x.peek("!="):
		op = cmpNe
	case x.peek("<="):
		op = cmpLe
	case x.peek(">="):
		op = cmpGe
	case x.peek("<"):
		op = cmpLt
	case x.peek(">"):
		op = cmpGt
	default:
		return l
	}
	x.pos += len(cmpNames[op])
	r := x.operand()
	return x.node(exprNode{kind: eCmp, op: op, a: l, b: r})
}

func (x *exprParser) operand() int32 {
	x.space()
	if x.err != nil {
		return -1
	}
	if x.pos >= len(x.b) {
		x.fail("unexpected end of expression")
		return -1
	}
	switch c := x.b[x.pos]; {
	case c == '(':
		x.pos++
		if !x.enter() {
			return -1
		}
		n := x.or()
		x.depth--
		x.space()
		if x.err == nil && !x.peek(")") {
			x.fail("missing )")
			return -1
		}
		x.pos++
		return n
	case c == '$':
		r, n, ok := x.vs.parse(x.pos, len(x.b))
		if !ok {
			x.fail("invalid variable")
			return -1
		}
		x.pos += n
		x.t.vars = append(x.t.vars, r)
		return x.node(exprNode{kind: eVar, v: int32(len(x.t.vars) - 1)})
	case c == '\'':
		q := bytes.IndexByte(x.b[x.pos+1:], '\'')
		if q < 0 {
			x.fail("unterminated string")
			return -1
		}
		s := string(x.b[x.pos+1 : x.pos+1+q])
		x.pos += q + 2
		return x.node(exprNode{kind: eLit, lit: s})
	case c >= '0' && c <= '9' || c == '-' || c == '.':
		j := x.pos
		if x.b[j] == '-' {
			j++
		}
		for j < len(x.b) && (x.b[j] >= '0' && x.b[j] <= '9' || x.b[j] == '.') {
			j++
		}
		s := x.b[x.pos:j]
		if !isNumber(s) {
			x.fail("invalid number")
			return -1
		}
		x.pos = j
		return x.node(exprNode{kind: eLit, lit: string(s)})
	}
	x.fail("unexpected " + strconv.QuoteToASCII(string(x.b[x.pos:x.pos+1])))
	return -1
}

// isNumber reports whether s is a decimal number: an optional '-', digits,
// and an optional fraction.
func isNumber(s []byte) bool {
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	digits, dot := 0, false
	for i, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && i > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return digits > 0
}

// truthy is the boolean value of an operand: true unless empty, "false"
// or numerically zero.
func truthy(s []byte) bool {
	if len(s) == 0 || string(s) == "false" {
		return false
	}
	if isNumber(s) {
		f, _ := strconv.ParseFloat(string(s), 64)
		return f != 0
	}
	return true
}

// compare applies op to two operand values: numerically when both are
// numbers, else by bytes.
func compare(op cmpOp, a, b []byte) bool {
	var c int
	if isNumber(a) && isNumber(b) {
		fa, _ := strconv.ParseFloat(string(a), 64)
		fb, _ := strconv.ParseFloat(string(b), 64)
		switch {
		case fa < fb:
			c = -1
		case fa > fb:
			c = 1
		}
	} else {
		c = bytes.Compare(a, b)
	}
	switch op {
	case cmpEq:
		return c == 0
	case cmpNe:
		return c != 0
	case cmpLt:
		return c < 0
	case cmpGt:
		return c > 0
	case cmpLe:
		return c <= 0
	default:
		return c >= 0
	}
}
