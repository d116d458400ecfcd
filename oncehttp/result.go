package oncehttp

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/oncehq/once"
)

// Meta keys of a once.Result that records an HTTP response. The body is the
// result's Data.
const (
	// MetaStatus holds the status code, in decimal.
	MetaStatus = "http.status"
	// MetaHeaderPrefix prefixes one key per header, in canonical form; the
	// value is the header's values joined by "\n" (which no value contains).
	MetaHeaderPrefix = "http.header."
	// MetaRequestID holds the X-Request-Id of the request that executed.
	MetaRequestID = "http.request_id"
	// MetaNotStored is set (to the body's size in bytes) when the response
	// was too large to store: it was streamed to the first client and Data is
	// empty. Such a result is never replayed as if whole.
	MetaNotStored = "http.not_stored"
)

// hopByHop are the headers that describe one connection, not the response
// (RFC 9110 §7.6.1); they are never stored.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// EncodeResult records a response as a once.Result: its status, its headers
// minus the hop-by-hop ones (and those named in Connection), and its body.
func EncodeResult(status int, header http.Header, body []byte, requestID string) once.Result {
	res := once.Result{Data: body, Meta: make(map[string]string, len(header)+2)}
	res.Meta[MetaStatus] = strconv.Itoa(status)
	if requestID != "" {
		res.Meta[MetaRequestID] = requestID
	}
	connection := header.Values("Connection")
	for name, values := range header {
		name = http.CanonicalHeaderKey(name)
		if len(values) == 0 || slices.Contains(hopByHop, name) || names(connection, name) {
			continue
		}
		res.Meta[metaHeaderKey(name)] = joinValues(values)
	}
	return res
}

// names reports whether the Connection header values name the header name.
func names(connection []string, name string) bool {
	for _, v := range connection {
		for token := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(token)) == name {
				return true
			}
		}
	}
	return false
}

// metaHeaderKey returns the Meta key of the header name (canonical), without
// building the common ones per response.
func metaHeaderKey(name string) string {
	switch name {
	case "Content-Type":
		return MetaHeaderPrefix + "Content-Type"
	case "Content-Length":
		return MetaHeaderPrefix + "Content-Length"
	case "Date":
		return MetaHeaderPrefix + "Date"
	case "Location":
		return MetaHeaderPrefix + "Location"
	case "Cache-Control":
		return MetaHeaderPrefix + "Cache-Control"
	case HeaderRequestID:
		return MetaHeaderPrefix + HeaderRequestID
	}
	return MetaHeaderPrefix + name
}

// DecodeResult returns the status, headers and body that res records. It
// returns an error wrapping ErrCorruptResult if res does not record an HTTP
// response, and one wrapping ErrResponseNotStored if the response was too
// large to store (status is then the original status).
func DecodeResult(res once.Result) (status int, header http.Header, body []byte, err error) {
	if status, err = decodeStatus(res); err != nil {
		return status, nil, nil, err
	}
	header = make(http.Header, len(res.Meta))
	decodeHeader(res, header)
	return status, header, res.Data, nil
}

// decodeStatus returns the status res records, and the errors of
// DecodeResult.
func decodeStatus(res once.Result) (int, error) {
	status, err := strconv.Atoi(res.Meta[MetaStatus])
	if err != nil || status < 100 || status > 999 {
		return 0, fmt.Errorf("%w: status %q", ErrCorruptResult, res.Meta[MetaStatus])
	}
	if size, ok := res.Meta[MetaNotStored]; ok {
		return status, fmt.Errorf("%w: the response had %s bytes", ErrResponseNotStored, size)
	}
	return status, nil
}

// decodeHeader sets in h the headers that res records. The headers with one
// value, most of them, share one array.
func decodeHeader(res once.Result, h http.Header) {
	single := make([]string, 0, len(res.Meta))
	for k, v := range res.Meta {
		name, ok := strings.CutPrefix(k, MetaHeaderPrefix)
		switch {
		case !ok:
		case strings.IndexByte(v, '\n') < 0:
			single = append(single, v)
			h[name] = single[len(single)-1 : len(single) : len(single)]
		default:
			h[name] = strings.Split(v, "\n")
		}
	}
}

// notStoredResult records that a response of status and size bytes was
// streamed rather than stored.
func notStoredResult(status int, size int64, requestID string) once.Result {
	res := once.Result{Meta: map[string]string{
		MetaStatus:    strconv.Itoa(status),
		MetaNotStored: strconv.FormatInt(size, 10),
	}}
	if requestID != "" {
		res.Meta[MetaRequestID] = requestID
	}
	return res
}

// joinValues joins a header's values with newlines, after turning the
// newlines inside a value into spaces, as net/http does when it writes a
// header: a value stays one value.
func joinValues(values []string) string {
	for _, v := range values {
		if strings.ContainsAny(v, "\r\n") {
			clean := make([]string, len(values))
			for i, v := range values {
				clean[i] = strings.Map(func(r rune) rune {
					if r == '\r' || r == '\n' {
						return ' '
					}
					return r
				}, v)
			}
			return strings.Join(clean, "\n")
		}
	}
	return strings.Join(values, "\n")
}
