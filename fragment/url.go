package fragment

import (
	"bytes"
	"errors"
	"unsafe"
)

// Reasons an include's src or alt cannot be substituted; they appear in
// Include.Err and Include.AltErr.
var (
	errVarBeforePath   = errors.New("fragment: variable before the first '/' of the path")
	errQueryStringPath = errors.New("fragment: $(QUERY_STRING) outside the query")
	errValueControl    = errors.New("fragment: variable value holds CR, LF or NUL")
	errValueDotSegment = errors.New("fragment: variable value '.' or '..' in the path")
)

type urlZone uint8

const (
	zonePath  urlZone = iota
	zoneQuery         // query and fragment
)

// urlTmpl is a parsed src or alt attribute.
type urlTmpl struct {
	raw   string    // the value as written, entities decoded
	parts []urlPart // nil when the value holds no variable
	err   error     // a substitution that can never succeed
}

type urlPart struct {
	lit  string
	v    int32 // index in Template.vars, or -1 for literal text
	zone urlZone
}

func (u *urlTmpl) size() int {
	n := len(u.raw) + cap(u.parts)*int(unsafe.Sizeof(urlPart{}))
	for _, p := range u.parts {
		n += len(p.lit)
	}
	return n
}

// urlTmpl parses an attribute value holding a URL with variables.
func (p *parser) urlTmpl(val []byte) urlTmpl {
	d := decodeEntities(val)
	u := urlTmpl{raw: string(d)}
	var vs varScanner
	vs.reset(d)
	lit := 0
	zone := zonePath
	var prefix []byte // literal text before the first variable
	first := true
	addLit := func(s []byte) {
		if len(s) == 0 {
			return
		}
		if bytes.ContainsAny(s, "?#") {
			// Zone of what follows; a '?' or '#' inside this literal
			// does not change the zone of its own bytes, which are not
			// escaped anyway.
			defer func() { zone = zoneQuery }()
		}
		u.parts = append(u.parts, urlPart{lit: string(s), v: -1, zone: zone})
	}
	for i := 0; i < len(d); {
		j := bytes.Index(d[i:], []byte("$("))
		if j < 0 {
			break
		}
		j += i
		ref, n, ok := vs.parse(j, len(d))
		if !ok {
			i = j + 2
			continue
		}
		addLit(d[lit:j])
		if first {
			prefix = d[:j]
			first = false
			if !pathStarted(prefix) {
				u.err = errVarBeforePath
			}
		}
		if ref.name == vQuery && !ref.hasKey && zone != zoneQuery && u.err == nil {
			u.err = errQueryStringPath
		}
		p.t.vars = append(p.t.vars, ref)
		u.parts = append(u.parts, urlPart{v: int32(len(p.t.vars) - 1), zone: zone})
		i = j + n
		lit = i
	}
	if first {
		u.parts = nil // static
		return u
	}
	addLit(d[lit:])
	return u
}

// pathStarted reports whether the literal prefix of a URL reaches past the
// first '/' of its path (or into its query): variables may appear only
// there, so they never fill the scheme, host or port.
func pathStarted(prefix []byte) bool {
	s := prefix
	if len(s) > 0 && isAlpha(s[0]) {
		k := 1
		for k < len(s) && (isAlpha(s[k]) || s[k] >= '0' && s[k] <= '9' || s[k] == '+' || s[k] == '-' || s[k] == '.') {
			k++
		}
		if k < len(s) && s[k] == ':' {
			s = s[k+1:]
		}
	}
	if bytes.HasPrefix(s, []byte("//")) {
		s = s[2:]
	}
	return bytes.ContainsAny(s, "/?#")
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// shouldEscape mirrors net/url's rules for path segments and query
// components.
func shouldEscape(c byte, query bool) bool {
	if isAlpha(c) || c >= '0' && c <= '9' {
		return false
	}
	switch c {
	case '-', '_', '.', '~':
		return false
	case '$', '&', '+', ',', '/', ':', ';', '=', '?', '@':
		if query {
			return true
		}
		return c == '/' || c == ';' || c == ',' || c == '?'
	}
	return true
}

const upperhex = "0123456789ABCDEF"

// appendPathEscape appends s escaped as url.PathEscape does.
func appendPathEscape(dst, s []byte) []byte {
	for _, c := range s {
		if shouldEscape(c, false) {
			dst = append(dst, '%', upperhex[c>>4], upperhex[c&15])
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

// appendQueryEscape appends s escaped as url.QueryEscape does.
func appendQueryEscape(dst, s []byte) []byte {
	for _, c := range s {
		switch {
		case c == ' ':
			dst = append(dst, '+')
		case shouldEscape(c, true):
			dst = append(dst, '%', upperhex[c>>4], upperhex[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// appendQueryUnescape appends s decoded as url.QueryUnescape does. It
// reports false for a malformed escape.
func appendQueryUnescape(dst []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			dst = append(dst, ' ')
		case '%':
			if i+2 >= len(s) {
				return dst, false
			}
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return dst, false
			}
			dst = append(dst, h<<4|l)
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst, true
}

func hasControl(b []byte) bool {
	return bytes.IndexByte(b, '\r') >= 0 || bytes.IndexByte(b, '\n') >= 0 || bytes.IndexByte(b, 0) >= 0
}

// appendHTMLEscape appends s escaped as html.EscapeString does, dropping NUL
// bytes.
func appendHTMLEscape(dst, s []byte) []byte {
	for _, c := range s {
		switch c {
		case '&':
			dst = append(dst, "&amp;"...)
		case '<':
			dst = append(dst, "&lt;"...)
		case '>':
			dst = append(dst, "&gt;"...)
		case '"':
			dst = append(dst, "&#34;"...)
		case '\'':
			dst = append(dst, "&#39;"...)
		case 0:
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
