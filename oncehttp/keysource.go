package oncehttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"

	"github.com/oncehq/once"
)

// KeySource says where a request's idempotency key comes from. The zero value
// is the Idempotency-Key header.
type KeySource struct {
	// Header names a request header holding the key (raw or sf-string, as
	// ParseKey reads it), e.g. X-GitHub-Delivery.
	Header string
	// JSONPointer, if Header is empty and JSONPointer is set, is an RFC 6901
	// pointer to a string or number in the JSON request body, e.g. "/id"
	// for Stripe webhook events.
	JSONPointer string
	// json is set when JSONPointer is meaningful ("" points at the root).
	json bool
}

// ParseKeySource parses "header:NAME" or "json:/pointer" (RFC 6901).
func ParseKeySource(s string) (KeySource, error) {
	kind, arg, ok := strings.Cut(s, ":")
	switch {
	case !ok:
		return KeySource{}, fmt.Errorf("key source %q: want header:NAME or json:/pointer", s)
	case kind == "header":
		if arg == "" || strings.ContainsFunc(arg, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == ':' }) {
			return KeySource{}, fmt.Errorf("key source %q: header name %q is not a valid header name", s, arg)
		}
		return KeySource{Header: http.CanonicalHeaderKey(arg)}, nil
	case kind == "json":
		if _, err := splitPointer(arg); err != nil {
			return KeySource{}, fmt.Errorf("key source %q: %v", s, err)
		}
		return KeySource{JSONPointer: arg, json: true}, nil
	}
	return KeySource{}, fmt.Errorf("key source %q: unknown kind %q, want header:NAME or json:/pointer", s, kind)
}

// String returns the source in the form ParseKeySource reads.
func (k KeySource) String() string {
	switch {
	case k.Header != "":
		return "header:" + k.Header
	case k.json:
		return "json:" + k.JSONPointer
	}
	return "header:" + HeaderKey
}

// needsBody reports whether the key is read from the body.
func (k KeySource) needsBody() bool { return k.Header == "" && k.json }

// fromHeader returns the key from r's headers.
func (k KeySource) fromHeader(h http.Header) (string, error) {
	name := k.Header
	if name == "" {
		name = HeaderKey
	}
	key, err := ParseKey(h.Values(name))
	if errors.Is(err, ErrMissingKey) {
		return "", fmt.Errorf("%w: no %s header", ErrMissingKey, name)
	}
	return key, err
}

// fromBody returns the key at the JSON pointer in body.
func (k KeySource) fromBody(body []byte) (string, error) {
	v, err := lookupPointer(body, k.JSONPointer)
	if err != nil {
		return "", err
	}
	if err := once.ValidateID(v); err != nil {
		return "", fmt.Errorf("%w: the value at JSON pointer %q: %v", once.ErrInvalidKey, k.JSONPointer, reason(err, once.ErrInvalidKey))
	}
	return v, nil
}

// lookupPointer returns the string or number at pointer in the JSON document
// body. A missing member gives ErrMissingKey; a body that is not JSON, or a
// value of another type, an error wrapping once.ErrInvalidKey.
func lookupPointer(body []byte, pointer string) (string, error) {
	tokens, err := splitPointer(pointer)
	if err != nil {
		return "", fmt.Errorf("%w: %v", once.ErrInvalidKey, err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return "", fmt.Errorf("%w: the body is not JSON, so JSON pointer %q finds no key", ErrMissingKey, pointer)
	}
	for _, tok := range tokens {
		if doc, err = step(doc, tok); err != nil {
			return "", fmt.Errorf("%w: JSON pointer %q: %v", ErrMissingKey, pointer, err)
		}
	}
	switch v := doc.(type) {
	case string:
		return v, nil
	case json.Number:
		return numberKey(v)
	}
	return "", fmt.Errorf("%w: JSON pointer %q names a %T, want a string or number", once.ErrInvalidKey, pointer, doc)
}

// step descends one reference token into doc.
func step(doc any, tok string) (any, error) {
	switch d := doc.(type) {
	case map[string]any:
		v, ok := d[tok]
		if !ok {
			return nil, fmt.Errorf("no member %q", tok)
		}
		return v, nil
	case []any:
		i, err := strconv.Atoi(tok)
		if err != nil || i < 0 || i >= len(d) || (len(tok) > 1 && tok[0] == '0') {
			return nil, fmt.Errorf("no element %q", tok)
		}
		return d[i], nil
	}
	return nil, fmt.Errorf("cannot index %q into a scalar", tok)
}

// splitPointer splits an RFC 6901 pointer into unescaped reference tokens.
func splitPointer(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("JSON pointer %q must be empty or start with /", p)
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		for j := 0; j < len(s); j++ {
			if s[j] == '~' && (j+1 == len(s) || (s[j+1] != '0' && s[j+1] != '1')) {
				return nil, fmt.Errorf("JSON pointer %q: ~ must be followed by 0 or 1", p)
			}
		}
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

// numberKey returns the key a JSON number names: its exact value in one
// spelling, so that 7, 7.0, 7e0 and 70e-1 are one key, as they are one
// value to RFC 8785 (and to the fingerprint). Unlike RFC 8785 it does not
// round to a double: two ids that differ beyond the 17th digit stay two
// keys. An integer prints in decimal digits, any other number as a decimal
// fraction without trailing zeros.
func numberKey(n json.Number) (string, error) {
	s := n.String()
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		// big.Rat would expand 1e999999999: bound the exponent by what a
		// key of 255 characters can hold.
		if e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+")); err != nil || e > once.MaxKeyLen || e < -once.MaxKeyLen {
			return "", fmt.Errorf("%w: the number %.40s is not a key", once.ErrInvalidKey, s)
		}
	}
	var r big.Rat
	if _, ok := r.SetString(s); !ok {
		return "", fmt.Errorf("%w: the number %.40s is not a key", once.ErrInvalidKey, s)
	}
	if r.IsInt() {
		return r.Num().String(), nil
	}
	d := r.FloatString(len(s) + once.MaxKeyLen)
	return strings.TrimRight(d, "0"), nil
}
