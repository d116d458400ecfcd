package race

import (
	"fmt"
	"net/http"
	"strings"
)

// Header is one request header, given as a template.
type Header struct {
	Name  string
	Value string
}

// ParseHeader parses "Name: value" as curl's -H does. The name must be an
// HTTP token (RFC 9110 tchar); the value may be empty and may hold templates,
// but no control characters other than tab.
func ParseHeader(s string) (Header, error) {
	name, value, ok := strings.Cut(s, ":")
	if !ok {
		return Header{}, fmt.Errorf("%q is not 'Name: value'", s)
	}
	name = strings.TrimSpace(name)
	if !isToken(name) {
		return Header{}, fmt.Errorf("%q: header name %q is not a valid HTTP token", s, name)
	}
	value = strings.TrimSpace(value)
	if !validValue(value) {
		return Header{}, fmt.Errorf("%q: header value holds a control character", s)
	}
	return Header{Name: http.CanonicalHeaderKey(name), Value: value}, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
