package oncehttp

import (
	"bytes"
	"crypto/sha256"
	"mime"
	"strings"
)

// fingerprintVersion is the first byte of a fingerprint, so that a change of
// the layout is told apart from a changed request.
const fingerprintVersion = 1

// FingerprintSize is the length of a fingerprint: a version byte and one
// SHA-256 per part (method, path, query, body).
const FingerprintSize = 1 + len(Parts)*sha256.Size

// Parts names the parts of a request that a fingerprint covers, in order.
var Parts = [...]string{"method", "path", "query", "body"}

// Fingerprint returns the fingerprint of a request: a version byte followed by
// the SHA-256 of its method, of its escaped path, of its raw query and of its
// body. A body whose Content-Type is JSON (application/json or any +json type)
// is canonicalized with RFC 8785 first, so that member order, whitespace and
// number spelling do not matter; a body that does not parse is hashed raw, as
// is every other body. Hashing each part apart lets Differs say which part of
// a reused key's request changed.
func Fingerprint(method, path, rawQuery, contentType string, body []byte) []byte {
	fp := make([]byte, 0, FingerprintSize)
	fp = append(fp, fingerprintVersion)
	for _, part := range [...]string{method, path, rawQuery} {
		sum := sha256.Sum256([]byte(part))
		fp = append(fp, sum[:]...)
	}
	sum := bodySum(contentType, body)
	return append(fp, sum[:]...)
}

// bodySum returns the SHA-256 of body in RFC 8785 form if contentType is JSON
// and body parses, else of body itself.
func bodySum(contentType string, body []byte) [sha256.Size]byte {
	if len(body) == 0 || !IsJSON(contentType) {
		return sha256.Sum256(body)
	}
	return canonicalSum(body)
}

// IsJSON reports whether a Content-Type names JSON: application/json or a
// structured syntax suffix +json (RFC 6839).
func IsJSON(contentType string) bool {
	switch contentType { // the common spellings, without parsing
	case "application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8":
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// Differs returns the parts (see Parts) in which two fingerprints made by
// Fingerprint differ, in order. It returns nil if they are equal, and
// ["request"] if either was not made by this version of Fingerprint.
func Differs(a, b []byte) []string {
	if bytes.Equal(a, b) {
		return nil
	}
	if len(a) != FingerprintSize || len(b) != FingerprintSize || a[0] != b[0] || a[0] != fingerprintVersion {
		return []string{"request"}
	}
	var out []string
	for i, name := range Parts {
		lo := 1 + i*sha256.Size
		if !bytes.Equal(a[lo:lo+sha256.Size], b[lo:lo+sha256.Size]) {
			out = append(out, name)
		}
	}
	return out
}
