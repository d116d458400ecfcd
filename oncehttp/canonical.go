package oncehttp

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// canonicalizer writes a JSON document in its RFC 8785 form, as
// github.com/gowebpki/jcs does, without building a tree: an object's members
// are written in input order, then reordered in place once the object ends.
// It accepts valid JSON only; on anything it refuses, canonicalBody asks jcs,
// the reference, so that a fingerprint never depends on which of the two
// answered (FuzzCanonical checks that they agree). It keeps its buffers
// between documents; it is not safe for concurrent use.
type canonicalizer struct {
	in      []byte
	pos     int
	depth   int
	out     []byte
	keys    []byte   // decoded member names of the open objects
	members []member // members of the open objects, innermost last
	scratch []byte
}

// member is an object member written to out.
type member struct {
	keyStart, keyEnd int // its decoded name in keys, for sorting
	start, end       int // its text in out: name, colon and value
}

// maxCanonicalDepth bounds nesting; deeper documents go to jcs. Reordering
// copies an object's text once per enclosing object, so the bound also
// bounds the work per input byte.
const maxCanonicalDepth = 64

var canonicalizers = sync.Pool{New: func() any { return new(canonicalizer) }}

// maxPooledBuffer is the largest buffer a pooled canonicalizer keeps.
const maxPooledBuffer = 64 << 10

// canonicalSum returns the SHA-256 of body in RFC 8785 form, or of body itself
// if it is not JSON.
func canonicalSum(body []byte) [32]byte {
	c := canonicalizers.Get().(*canonicalizer)
	defer c.release()
	if out, ok := c.canonicalize(body); ok {
		return sha256.Sum256(out)
	}
	if out, err := jcs.Transform(body); err == nil {
		return sha256.Sum256(out)
	}
	return sha256.Sum256(body)
}

func (c *canonicalizer) release() {
	c.in = nil
	if cap(c.out) > maxPooledBuffer || cap(c.scratch) > maxPooledBuffer || cap(c.keys) > maxPooledBuffer {
		return
	}
	canonicalizers.Put(c)
}

// canonicalize returns the canonical form of in, valid until the next call,
// or false if it leaves in to jcs.
func (c *canonicalizer) canonicalize(in []byte) ([]byte, bool) {
	c.in, c.pos, c.depth = in, 0, 0
	c.out, c.keys, c.members = c.out[:0], c.keys[:0], c.members[:0]
	if !c.value() {
		return nil, false
	}
	c.skipSpace()
	return c.out, c.pos == len(c.in)
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

// next skips whitespace and reports whether the next byte is b, consuming it
// if so.
func (c *canonicalizer) next(b byte) bool {
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == b {
		c.pos++
		return true
	}
	return false
}

func (c *canonicalizer) value() bool {
	c.skipSpace()
	if c.pos == len(c.in) {
		return false
	}
	switch c.in[c.pos] {
	case '{':
		c.pos++
		return c.nested(c.object)
	case '[':
		c.pos++
		return c.nested(c.array)
	case '"':
		c.pos++
		return c.str(false)
	}
	return c.scalar()
}

func (c *canonicalizer) nested(parse func() bool) bool {
	if c.depth++; c.depth > maxCanonicalDepth {
		return false
	}
	ok := parse()
	c.depth--
	return ok
}

func (c *canonicalizer) array() bool {
	if c.open('[', ']') {
		return true
	}
	for {
		if !c.value() {
			return false
		}
		if more, ok := c.more(']'); !more {
			return ok
		}
	}
}

func (c *canonicalizer) object() bool {
	if c.open('{', '}') {
		return true
	}
	base, keysBase := len(c.members), len(c.keys)
	defer func() { c.members, c.keys = c.members[:base], c.keys[:keysBase] }()
	for {
		m := member{start: len(c.out), keyStart: len(c.keys)}
		if !c.next('"') || !c.str(true) || !c.next(':') {
			return false
		}
		m.keyEnd = len(c.keys)
		c.out = append(c.out, ':')
		if !c.value() {
			return false
		}
		m.end = len(c.out)
		c.members = append(c.members, m)
		if more, ok := c.more('}'); !more {
			return ok && c.order(c.members[base:])
		}
	}
}

// open writes the opening bracket of an array or object, whose bracket was
// read, and reports whether it is empty: then its closing one is read and
// written too.
func (c *canonicalizer) open(open, close byte) (empty bool) {
	c.out = append(c.out, open)
	if c.next(close) {
		c.out = append(c.out, close)
		return true
	}
	return false
}

// more reads and writes what follows an element: a comma (more) or the
// closing bracket. ok is false for anything else.
func (c *canonicalizer) more(close byte) (more, ok bool) {
	switch {
	case c.next(','):
		c.out = append(c.out, ',')
		return true, true
	case c.next(close):
		c.out = append(c.out, close)
		return false, true
	}
	return false, false
}

// order puts the members of an object, written to out, in the order of
// their names' UTF-16 code units. It reports false for a duplicate name,
// which jcs refuses.
func (c *canonicalizer) order(ms []member) bool {
	cmp := func(a, b member) int { return compareUTF16(c.keys[a.keyStart:a.keyEnd], c.keys[b.keyStart:b.keyEnd]) }
	sorted := true
	for i := 1; i < len(ms); i++ {
		switch d := cmp(ms[i-1], ms[i]); {
		case d == 0:
			return false
		case d > 0:
			sorted = false
		}
	}
	if sorted {
		return true
	}
	slices.SortFunc(ms, cmp)
	for i := 1; i < len(ms); i++ {
		if cmp(ms[i-1], ms[i]) == 0 {
			return false
		}
	}
	// Rewrite the members' text in order, over itself, from a copy of it:
	// the same members and commas take the same room.
	from, to := ms[0].start, ms[0].end
	for _, m := range ms {
		from, to = min(from, m.start), max(to, m.end)
	}
	c.scratch = append(c.scratch[:0], c.out[from:to]...)
	w := c.out[from:from]
	for i, m := range ms {
		if i > 0 {
			w = append(w, ',')
		}
		w = append(w, c.scratch[m.start-from:m.end-from]...)
	}
	return true
}

// compareUTF16 compares two UTF-8 strings by their UTF-16 code units, the
// order RFC 8785 sorts names in. It is byte order unless a string holds a
// character outside the Basic Multilingual Plane.
func compareUTF16(a, b []byte) int {
	if !hasAstral(a) && !hasAstral(b) {
		return bytes.Compare(a, b)
	}
	for len(a) > 0 && len(b) > 0 {
		ra, na := utf8.DecodeRune(a)
		rb, nb := utf8.DecodeRune(b)
		if ra != rb {
			ua, ub := utf16Units(ra), utf16Units(rb)
			if ua[0] != ub[0] {
				return int(ua[0]) - int(ub[0])
			}
			return int(ua[1]) - int(ub[1])
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// hasAstral reports whether s holds a 4-byte UTF-8 sequence.
func hasAstral(s []byte) bool {
	for _, b := range s {
		if b >= 0xf0 {
			return true
		}
	}
	return false
}

// utf16Units returns the UTF-16 code units of r (the second is 0 for a
// character of the Basic Multilingual Plane).
func utf16Units(r rune) [2]uint16 {
	if r < 0x10000 {
		return [2]uint16{uint16(r)}
	}
	r -= 0x10000
	return [2]uint16{0xd800 + uint16(r>>10), 0xdc00 + uint16(r&0x3ff)}
}

// str reads a string whose opening quote was read, and writes it to out in
// canonical form; a member name is also decoded into keys.
func (c *canonicalizer) str(key bool) bool {
	c.out = append(c.out, '"')
	for c.pos < len(c.in) {
		b := c.in[c.pos]
		switch {
		case b == '"':
			c.pos++
			c.out = append(c.out, '"')
			return true
		case b < 0x20:
			return false
		case b == '\\':
			r, ok := c.escape()
			if !ok {
				return false
			}
			c.writeRune(r, key)
		case b < utf8.RuneSelf:
			c.pos++
			c.out = append(c.out, b)
			if key {
				c.keys = append(c.keys, b)
			}
		default:
			r, n := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && n <= 1 {
				return false
			}
			c.out = append(c.out, c.in[c.pos:c.pos+n]...)
			if key {
				c.keys = append(c.keys, c.in[c.pos:c.pos+n]...)
			}
			c.pos += n
		}
	}
	return false
}

// escape reads an escape sequence and returns the character it stands for.
// A surrogate pair must be whole.
func (c *canonicalizer) escape() (rune, bool) {
	if c.pos+1 >= len(c.in) {
		return 0, false
	}
	e := c.in[c.pos+1]
	c.pos += 2
	switch e {
	case '"', '\\', '/':
		return rune(e), true
	case 'b':
		return '\b', true
	case 'f':
		return '\f', true
	case 'n':
		return '\n', true
	case 'r':
		return '\r', true
	case 't':
		return '\t', true
	case 'u':
	default:
		return 0, false
	}
	r, ok := c.hex4()
	switch {
	case !ok:
		return 0, false
	case r < 0xd800 || r > 0xdfff:
		return r, true
	case r > 0xdbff: // a low surrogate first
		return 0, false
	}
	if c.pos+1 >= len(c.in) || c.in[c.pos] != '\\' || c.in[c.pos+1] != 'u' {
		return 0, false
	}
	c.pos += 2
	lo, ok := c.hex4()
	if !ok || lo < 0xdc00 || lo > 0xdfff {
		return 0, false
	}
	return 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00), true
}

func (c *canonicalizer) hex4() (rune, bool) {
	if c.pos+4 > len(c.in) {
		return 0, false
	}
	var r rune
	for _, b := range c.in[c.pos : c.pos+4] {
		switch {
		case b >= '0' && b <= '9':
			r = r<<4 | rune(b-'0')
		case b >= 'a' && b <= 'f':
			r = r<<4 | rune(b-'a'+10)
		case b >= 'A' && b <= 'F':
			r = r<<4 | rune(b-'A'+10)
		default:
			return 0, false
		}
	}
	c.pos += 4
	return r, true
}

// writeRune writes a decoded character to out as RFC 8785 (ECMAScript's
// JSON.stringify) spells it, and to keys if key.
func (c *canonicalizer) writeRune(r rune, key bool) {
	if key {
		c.keys = utf8.AppendRune(c.keys, r)
	}
	switch r {
	case '"', '\\':
		c.out = append(c.out, '\\', byte(r))
	case '\b':
		c.out = append(c.out, '\\', 'b')
	case '\f':
		c.out = append(c.out, '\\', 'f')
	case '\n':
		c.out = append(c.out, '\\', 'n')
	case '\r':
		c.out = append(c.out, '\\', 'r')
	case '\t':
		c.out = append(c.out, '\\', 't')
	default:
		if r < 0x20 {
			c.out = append(c.out, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
		} else {
			c.out = utf8.AppendRune(c.out, r)
		}
	}
}

const hexDigits = "0123456789abcdef"

// scalar reads a literal or a number: the bytes up to the next delimiter.
func (c *canonicalizer) scalar() bool {
	end := c.pos
	for end < len(c.in) {
		b := c.in[end]
		if b == ',' || b == ']' || b == '}' || b == ' ' || b == '\t' || b == '\n' || b == '\r' {
			break
		}
		end++
	}
	tok := c.in[c.pos:end]
	c.pos = end
	switch string(tok) {
	case "true", "false", "null":
		c.out = append(c.out, tok...)
		return true
	}
	return c.number(tok)
}

// number writes a JSON number as ECMAScript prints the double it stands for.
// Integers of up to 15 digits print as they are read (but -0 as 0).
func (c *canonicalizer) number(tok []byte) bool {
	digits, frac, exp, ok := numberParts(tok)
	switch {
	case !ok:
		return false
	case !frac && !exp && len(digits) <= 15:
		if string(tok) == "-0" {
			tok = tok[1:]
		}
		c.out = append(c.out, tok...)
		return true
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if err != nil {
		return false
	}
	s, err := jcs.NumberToJSON(f)
	if err != nil {
		return false
	}
	c.out = append(c.out, s...)
	return true
}

// numberParts matches tok against RFC 8259's number grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, and returns its integer
// digits and whether it has a fraction and an exponent.
func numberParts(tok []byte) (digits []byte, frac, exp, ok bool) {
	i := 0
	if i < len(tok) && tok[i] == '-' {
		i++
	}
	start := i
	switch {
	case i < len(tok) && tok[i] == '0':
		i++
	case i < len(tok) && tok[i] >= '1' && tok[i] <= '9':
		i = skipDigits(tok, i)
	default:
		return nil, false, false, false
	}
	digits = tok[start:i]
	if i < len(tok) && tok[i] == '.' {
		j := skipDigits(tok, i+1)
		if j == i+1 {
			return nil, false, false, false
		}
		i, frac = j, true
	}
	if i < len(tok) && (tok[i] == 'e' || tok[i] == 'E') {
		i++
		if i < len(tok) && (tok[i] == '+' || tok[i] == '-') {
			i++
		}
		j := skipDigits(tok, i)
		if j == i {
			return nil, false, false, false
		}
		i, exp = j, true
	}
	return digits, frac, exp, i == len(tok)
}

func skipDigits(s []byte, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}
