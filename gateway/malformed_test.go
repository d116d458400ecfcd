package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/oncehttp"
)

// Requests that are not valid HTTP/1.1, which net/http's server refuses
// before the gateway's handler runs, still get problem+json, and reach
// neither the store nor the upstream.
func TestMalformedRequestsGetProblems(t *testing.T) {
	hs := start(t, gateway.Config{}, created)
	for name, tc := range map[string]struct {
		raw    string
		status int
		typ    string
	}{
		"control character in the key": {"POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x01b\r\nContent-Length: 2\r\n\r\n{}", 400, "bad-request"},
		"DEL in the key":               {"POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: a\x7fb\r\nContent-Length: 2\r\n\r\n{}", 400, "bad-request"},
		"two Content-Lengths":          {"POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "bad-request"},
		"garbage request line":         {"HELLO\r\n\r\n", 400, "bad-request"},
		"headers over the limit":       {"POST /orders HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", 431, "request-headers-too-large"},
		"unknown transfer coding":      {"POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\nTransfer-Encoding: zip\r\n\r\n", 501, "not-implemented"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", strings.TrimPrefix(hs.proxy, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go io.WriteString(c, tc.raw) // the server may answer before it reads it all
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status || res.Header.Get("Content-Type") != oncehttp.ContentTypeProblem {
				t.Fatalf("%d %q: %s", res.StatusCode, res.Header.Get("Content-Type"), body)
			}
			var p oncehttp.Problem
			if err := json.Unmarshal(body, &p); err != nil || p.Name() != tc.typ || p.Status != tc.status {
				t.Fatalf("problem %+v (%v), want %s", p, err, tc.typ)
			}
		})
	}
	if n := hs.calls.Load(); n != 0 {
		t.Fatalf("upstream called %d times", n)
	}
	// Well-formed requests are untouched, errors of the handler included.
	if r := hs.post("k", "{}"); r.status != 201 {
		t.Fatalf("status %d", r.status)
	}
	wantProblem(t, hs.do("POST", "/orders", "{}"), 400, "missing-idempotency-key")
}
