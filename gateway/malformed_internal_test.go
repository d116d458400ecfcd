package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

func FuzzRewriteServerError(f *testing.F) {
	f.Add([]byte("HTTP/1.1 400 Bad Request" + serverErrorHeaders + "400 Bad Request"))
	f.Add([]byte("HTTP/1.1 400 Bad Request: missing required Host header" + serverErrorHeaders + "400 Bad Request: missing required Host header"))
	f.Add([]byte("HTTP/1.1 431 Request Header Fields Too Large" + serverErrorHeaders + "431 Request Header Fields Too Large"))
	f.Add([]byte("HTTP/1.1 501 Not Implemented" + serverErrorHeaders + "Unsupported transfer encoding"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nDate: x\r\nConnection: close\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 999 x" + serverErrorHeaders))
	f.Fuzz(func(t *testing.T, p []byte) {
		out, ok := rewriteServerError(p)
		if !ok {
			return
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("%q: not a response: %v", out, err)
		}
		body, err := io.ReadAll(res.Body)
		var prob map[string]any
		if err != nil || json.Unmarshal(body, &prob) != nil || res.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%q: not a problem", out)
		}
	})
}
