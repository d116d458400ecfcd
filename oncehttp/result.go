package oncehttp

import (
	"fmt"
	"net/http"
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
	drop := connectionHeaders(header)
	for name, values := range header {
		name = http.CanonicalHeaderKey(name)
		if len(values) == 0 || drop[name] {
			continue
		}
		res.Meta[MetaHeaderPrefix+name] = strings.Join(values, "\n")
	}
	return res
}

// connectionHeaders returns the set of headers that must not be stored.
func connectionHeaders(h http.Header) map[string]bool {
	drop := make(map[string]bool, len(hopByHop)+2)
	for _, name := range hopByHop {
		drop[name] = true
	}
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				drop[http.CanonicalHeaderKey(name)] = true
			}
		}
	}
	return drop
}

// DecodeResult returns the status, headers and body that res records. It
// returns an error wrapping ErrCorruptResult if res does not record an HTTP
// response, and one wrapping ErrResponseNotStored if the response was too
// large to store (status is then the original status).
func DecodeResult(res once.Result) (status int, header http.Header, body []byte, err error) {
	status, err = strconv.Atoi(res.Meta[MetaStatus])
	if err != nil || status < 100 || status > 999 {
		return 0, nil, nil, fmt.Errorf("%w: status %q", ErrCorruptResult, res.Meta[MetaStatus])
	}
	if size, ok := res.Meta[MetaNotStored]; ok {
		return status, nil, nil, fmt.Errorf("%w: the response had %s bytes", ErrResponseNotStored, size)
	}
	header = make(http.Header, len(res.Meta))
	for k, v := range res.Meta {
		if name, ok := strings.CutPrefix(k, MetaHeaderPrefix); ok {
			header[name] = strings.Split(v, "\n")
		}
	}
	return status, header, res.Data, nil
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
