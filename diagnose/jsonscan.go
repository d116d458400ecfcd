package diagnose

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// valueKind is the JSON type of a scalar value handed to a fieldFunc.
type valueKind uint8

const (
	kindString valueKind = iota + 1
	kindNumber
	kindBool
	kindNull
)

// fieldFunc receives one scalar member of a JSON object. name is the member's
// path (nested objects joined with '.'); name and val are only valid during
// the call.
type fieldFunc func(name, val []byte, kind valueKind)

var errSyntax = errors.New("diagnose: not a JSON object")

// maxDepth bounds how deep nested objects are flattened; deeper members are
// validated but not reported.
const maxDepth = 6

// scanner is a validating, allocation-free (after warm-up) scanner of one
// JSON object. It reports scalar members, flattening nested objects, and
// skips arrays. It exists because encoding/json into a map costs several
// times more per line, and diagnose reads gigabytes.
type scanner struct {
	buf  []byte
	i    int
	name []byte // current path
	str  []byte // scratch for unescaped strings
	fn   fieldFunc
}

// scanObject validates line as exactly one JSON object (surrounding
// whitespace allowed) and calls fn for each scalar member.
func (s *scanner) scanObject(line []byte, fn fieldFunc) error {
	s.buf, s.i, s.fn = line, 0, fn
	s.name = s.name[:0]
	s.ws()
	if s.i >= len(s.buf) || s.buf[s.i] != '{' {
		return errSyntax
	}
	if err := s.object(0); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.buf) {
		return errSyntax
	}
	return nil
}

func (s *scanner) ws() {
	for s.i < len(s.buf) {
		switch s.buf[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// object scans an object starting at '{'. depth counts enclosing objects.
func (s *scanner) object(depth int) error {
	s.i++ // '{'
	s.ws()
	if s.i < len(s.buf) && s.buf[s.i] == '}' {
		s.i++
		return nil
	}
	base := len(s.name)
	for {
		s.ws()
		if s.i >= len(s.buf) || s.buf[s.i] != '"' {
			return errSyntax
		}
		key, err := s.string()
		if err != nil {
			return err
		}
		s.name = s.name[:base]
		if base > 0 {
			s.name = append(s.name, '.')
		}
		s.name = append(s.name, key...)
		s.ws()
		if s.i >= len(s.buf) || s.buf[s.i] != ':' {
			return errSyntax
		}
		s.i++
		s.ws()
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.buf) {
			return errSyntax
		}
		switch s.buf[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.name = s.name[:base]
			return nil
		default:
			return errSyntax
		}
	}
}

// value scans one value and reports it if it is a scalar.
func (s *scanner) value(depth int) error {
	if s.i >= len(s.buf) {
		return errSyntax
	}
	report := s.fn != nil && depth < maxDepth
	switch c := s.buf[s.i]; {
	case c == '"':
		v, err := s.string()
		if err == nil && report {
			s.fn(s.name, v, kindString)
		}
		return err
	case c == '{':
		if depth+1 >= 64 {
			return errSyntax
		}
		return s.object(depth + 1)
	case c == '[':
		return s.array(depth)
	case c == '-' || (c >= '0' && c <= '9'):
		start := s.i
		if err := s.number(); err != nil {
			return err
		}
		if report {
			s.fn(s.name, s.buf[start:s.i], kindNumber)
		}
		return nil
	default:
		return s.literal(report)
	}
}

func (s *scanner) literal(report bool) error {
	for _, lit := range [...]string{"true", "false", "null"} {
		if len(s.buf)-s.i >= len(lit) && string(s.buf[s.i:s.i+len(lit)]) == lit {
			v := s.buf[s.i : s.i+len(lit)]
			s.i += len(lit)
			if report {
				k := kindBool
				if lit == "null" {
					k = kindNull
				}
				s.fn(s.name, v, k)
			}
			return nil
		}
	}
	return errSyntax
}

// array validates an array; its members are not reported.
func (s *scanner) array(depth int) error {
	if depth+1 >= 64 {
		return errSyntax
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.buf) && s.buf[s.i] == ']' {
		s.i++
		return nil
	}
	fn := s.fn
	s.fn = nil
	defer func() { s.fn = fn }()
	for {
		s.ws()
		if err := s.value(depth + 1); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.buf) {
			return errSyntax
		}
		switch s.buf[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errSyntax
		}
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number validates a JSON number (RFC 8259 grammar).
func (s *scanner) number() error {
	b := s.buf
	if b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(b) || !isDigit(b[s.i]) {
		return errSyntax
	}
	if b[s.i] == '0' {
		s.i++
	} else {
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	if s.i < len(b) && b[s.i] == '.' {
		s.i++
		if s.i >= len(b) || !isDigit(b[s.i]) {
			return errSyntax
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	if s.i < len(b) && (b[s.i] == 'e' || b[s.i] == 'E') {
		s.i++
		if s.i < len(b) && (b[s.i] == '+' || b[s.i] == '-') {
			s.i++
		}
		if s.i >= len(b) || !isDigit(b[s.i]) {
			return errSyntax
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	return nil
}

// string scans a string starting at '"' and returns its unescaped bytes: a
// sub-slice of the line when it has no escapes, else the scratch buffer.
// Invalid UTF-8 is replaced by U+FFFD, as encoding/json does.
func (s *scanner) string() ([]byte, error) {
	s.i++ // '"'
	start := s.i
	b := s.buf
	for s.i < len(b) {
		c := b[s.i]
		switch {
		case c == '"':
			v := b[start:s.i]
			s.i++
			if !utf8.Valid(v) {
				s.str = append(s.str[:0], []byte(string([]rune(string(v))))...)
				return s.str, nil
			}
			return v, nil
		case c == '\\':
			s.str = append(s.str[:0], b[start:s.i]...)
			return s.escaped()
		case c < 0x20:
			return nil, errSyntax
		}
		s.i++
	}
	return nil, errSyntax
}

// escaped continues a string with escapes, appending to s.str.
func (s *scanner) escaped() ([]byte, error) {
	b := s.buf
	for s.i < len(b) {
		c := b[s.i]
		switch {
		case c == '"':
			s.i++
			if !utf8.Valid(s.str) {
				s.str = []byte(string([]rune(string(s.str))))
			}
			return s.str, nil
		case c < 0x20:
			return nil, errSyntax
		case c != '\\':
			s.str = append(s.str, c)
			s.i++
			continue
		}
		if s.i+1 >= len(b) {
			return nil, errSyntax
		}
		s.i += 2
		switch e := b[s.i-1]; e {
		case '"', '\\', '/':
			s.str = append(s.str, e)
		case 'b':
			s.str = append(s.str, '\b')
		case 'f':
			s.str = append(s.str, '\f')
		case 'n':
			s.str = append(s.str, '\n')
		case 'r':
			s.str = append(s.str, '\r')
		case 't':
			s.str = append(s.str, '\t')
		case 'u':
			if err := s.unicode(); err != nil {
				return nil, err
			}
		default:
			return nil, errSyntax
		}
	}
	return nil, errSyntax
}

// unicode decodes \uXXXX (after the "\u"), pairing surrogates.
func (s *scanner) unicode() error {
	r, ok := s.hex4()
	if !ok {
		return errSyntax
	}
	if utf16.IsSurrogate(r) {
		if s.i+1 < len(s.buf) && s.buf[s.i] == '\\' && s.buf[s.i+1] == 'u' {
			save := s.i
			s.i += 2
			r2, ok := s.hex4()
			if !ok {
				return errSyntax
			}
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				s.str = utf8.AppendRune(s.str, d)
				return nil
			}
			s.i = save
		}
		r = utf8.RuneError
	}
	s.str = utf8.AppendRune(s.str, r)
	return nil
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.buf) {
		return 0, false
	}
	var r rune
	for _, c := range s.buf[s.i : s.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}
