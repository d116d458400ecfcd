package oncehttp

import (
	"errors"
	"fmt"
	"strings"

	"github.com/oncehq/once"
)

// HeaderKey is the request header that carries the idempotency key.
const HeaderKey = "Idempotency-Key"

// errKeySyntax wraps every key that cannot be parsed.
var errKeySyntax = errors.New("malformed")

// ParseKey returns the idempotency key that the values of one header carry.
// values are every line of the header, as in http.Header.Values.
//
// Two syntaxes name the same key: a raw token (Stripe: Idempotency-Key: abc)
// and an RFC 8941 sf-string (IETF draft: Idempotency-Key: "abc"), whose
// parameters are parsed and ignored. A value starting with a double quote is
// an sf-string. The key is 1 to 255 characters of printable ASCII.
//
// It returns ErrMissingKey when there is no value, and an error wrapping
// once.ErrInvalidKey (saying why) for an empty value, more than one value, a
// malformed sf-string, or a key that is too long or not printable.
func ParseKey(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", ErrMissingKey
	case 1:
	default:
		return "", fmt.Errorf("%w: %d key headers, want one", once.ErrInvalidKey, len(values))
	}
	v := strings.Trim(values[0], " \t")
	if v == "" {
		return "", fmt.Errorf("%w: empty", once.ErrInvalidKey)
	}
	key := v
	if v[0] == '"' {
		var err error
		if key, err = parseSFItemString(v); err != nil {
			return "", fmt.Errorf("%w: %v", once.ErrInvalidKey, err)
		}
	}
	if err := once.ValidateID(key); err != nil {
		return "", fmt.Errorf("%w: %v", once.ErrInvalidKey, strings.TrimPrefix(err.Error(), once.ErrInvalidKey.Error()+": "))
	}
	return key, nil
}

// parseSFItemString parses an RFC 8941 Item whose bare item is a String
// (§3.3.3), with optional parameters (§3.1.2), and returns the string.
func parseSFItemString(v string) (string, error) {
	s, rest, err := parseSFString(v)
	if err != nil {
		return "", err
	}
	rest, err = skipSFParams(rest)
	if err != nil {
		return "", err
	}
	if rest != "" {
		if rest[0] == ',' {
			return "", fmt.Errorf("%w: a list of keys, want one", errKeySyntax)
		}
		return "", fmt.Errorf("%w: unexpected %q after the quoted key", errKeySyntax, rest[0])
	}
	return s, nil
}

// parseSFString parses the sf-string at the start of v (which starts with a
// double quote) and returns it and what follows.
func parseSFString(v string) (string, string, error) {
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v) || (v[i] != '"' && v[i] != '\\') {
				return "", "", fmt.Errorf("%w: a backslash may only escape \" or \\", errKeySyntax)
			}
			b.WriteByte(v[i])
		case c == '"':
			return b.String(), v[i+1:], nil
		case c < 0x20 || c > 0x7e:
			return "", "", fmt.Errorf("%w: byte 0x%02x in the quoted key is not printable ASCII", errKeySyntax, c)
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("%w: the quoted key has no closing quote", errKeySyntax)
}

// skipSFParams skips RFC 8941 parameters (;key[=bare-item]) at the start of v.
func skipSFParams(v string) (string, error) {
	for len(v) > 0 && v[0] == ';' {
		v = strings.TrimLeft(v[1:], " ")
		n := sfKeyLen(v)
		if n == 0 {
			return "", fmt.Errorf("%w: bad parameter name", errKeySyntax)
		}
		v = v[n:]
		if len(v) > 0 && v[0] == '=' {
			var err error
			if v, err = skipSFBareItem(v[1:]); err != nil {
				return "", err
			}
		}
	}
	return v, nil
}

// sfKeyLen returns the length of the sf key at the start of v, or 0.
func sfKeyLen(v string) int {
	if v == "" || !(isLCAlpha(v[0]) || v[0] == '*') {
		return 0
	}
	i := 1
	for i < len(v) && (isLCAlpha(v[i]) || isDigit(v[i]) || strings.IndexByte("_-.*", v[i]) >= 0) {
		i++
	}
	return i
}

// skipSFBareItem skips a bare item (integer, decimal, string, token, byte
// sequence or boolean) at the start of v.
func skipSFBareItem(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("%w: parameter without a value after '='", errKeySyntax)
	}
	switch c := v[0]; {
	case c == '"':
		_, rest, err := parseSFString(v)
		return rest, err
	case c == '-' || isDigit(c):
		return skipWhile(v[1:], func(c byte) bool { return isDigit(c) || c == '.' }), nil
	case c == '?':
		if len(v) < 2 || (v[1] != '0' && v[1] != '1') {
			return "", fmt.Errorf("%w: bad boolean parameter", errKeySyntax)
		}
		return v[2:], nil
	case c == ':':
		end := strings.IndexByte(v[1:], ':')
		if end < 0 {
			return "", fmt.Errorf("%w: unterminated byte sequence parameter", errKeySyntax)
		}
		return v[end+2:], nil
	case isAlpha(c) || c == '*':
		return skipWhile(v[1:], isTChar), nil
	}
	return "", fmt.Errorf("%w: bad parameter value", errKeySyntax)
}

func skipWhile(v string, ok func(byte) bool) string {
	i := 0
	for i < len(v) && ok(v[i]) {
		i++
	}
	return v[i:]
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }

// isTChar reports whether c may appear in an sf-token after its first byte.
func isTChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~:/", c) >= 0
}
