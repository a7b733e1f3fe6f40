package fragment

import "bytes"

// varName identifies an ESI variable.
type varName uint8

const (
	vHost varName = iota + 1
	vReferer
	vCookie
	vQuery
	vLang
	vUA
)

var varNames = map[string]varName{
	"HTTP_HOST":            vHost,
	"HTTP_REFERER":         vReferer,
	"HTTP_COOKIE":          vCookie,
	"QUERY_STRING":         vQuery,
	"HTTP_ACCEPT_LANGUAGE": vLang,
	"HTTP_USER_AGENT":      vUA,
}

// maxVarPart bounds the key and the default of one variable reference.
const maxVarPart = 1024

// varRef is one parsed variable reference: $(NAME{key}|default).
type varRef struct {
	name   varName
	hasKey bool
	hasDef bool
	key    string
	def    string
}

// varScanner parses variable references in one byte slice. A key or default
// is at most maxVarPart bytes, so a search for its delimiter is bounded; the
// scanner remembers the last delimiters found, so that most searches cost
// nothing.
type varScanner struct {
	b    []byte
	next [3]int // cached index of the next delimiter, -1 for none
	from [3]int // the cache holds for positions from here up to next
}

const (
	delimParen = iota
	delimBrace
	delimQuote
)

var delims = [3]byte{')', '}', '\''}

func (s *varScanner) reset(b []byte) {
	s.b = b
	for i := range s.next {
		s.next[i] = -1
		s.from[i] = len(b) + 1 // nothing cached
	}
}

// find returns the index of the first delimiter d at or after at, or -1
// when there is none within maxVarPart bytes.
func (s *varScanner) find(d, at int) int {
	if s.next[d] >= 0 && s.from[d] <= at && at <= s.next[d] {
		return s.next[d]
	}
	end := min(len(s.b), at+maxVarPart+1)
	j := bytes.IndexByte(s.b[at:end], delims[d])
	if j < 0 {
		return -1
	}
	s.next[d], s.from[d] = at+j, at
	return at + j
}

func isVarNameByte(c byte) bool { return c >= 'A' && c <= 'Z' || c == '_' }

// parse reads the variable reference starting with "$(" at i and ending
// before end. It returns the reference and its length in bytes.
func (s *varScanner) parse(i, end int) (varRef, int, bool) {
	b := s.b
	if end > len(b) || i+2 > end || b[i] != '$' || b[i+1] != '(' {
		return varRef{}, 0, false
	}
	j := i + 2
	for j < end && isVarNameByte(b[j]) {
		j++
	}
	name, ok := varNames[string(b[i+2:j])]
	if !ok {
		return varRef{}, 0, false
	}
	r := varRef{name: name}
	if j < end && b[j] == '{' {
		var key []byte
		if key, j, ok = s.part(j+1, end, delimBrace); !ok {
			return varRef{}, 0, false
		}
		if j >= end || b[j] != '}' {
			return varRef{}, 0, false
		}
		j++
		r.hasKey, r.key = true, string(key)
	}
	if j < end && b[j] == '|' {
		var def []byte
		if def, j, ok = s.part(j+1, end, delimParen); !ok {
			return varRef{}, 0, false
		}
		r.hasDef, r.def = true, string(def)
	}
	if j >= end || b[j] != ')' {
		return varRef{}, 0, false
	}
	return r, j + 1 - i, true
}

// part reads a key or default at j: single-quoted, or running up to the
// delimiter d. It returns the text and the index after it.
func (s *varScanner) part(j, end, d int) ([]byte, int, bool) {
	if j < end && s.b[j] == '\'' {
		q := s.find(delimQuote, j+1)
		if q < 0 || q >= end || q-j > maxVarPart {
			return nil, 0, false
		}
		return s.b[j+1 : q], q + 1, true
	}
	c := s.find(d, j)
	if c < 0 || c >= end || c-j > maxVarPart {
		return nil, 0, false
	}
	return s.b[j:c], c, true
}
