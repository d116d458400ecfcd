package oncehttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/oncehttp"
)

// Keyed bodies of every size around the first buffer (64 KiB) and the limit
// reach the handler whole; a larger one gets 413, nothing forwarded.
func TestRequestBodySizes(t *testing.T) {
	const limit = 256 << 10
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{MaxRequestBody: limit}, echo)
	for i, n := range []int{0, 1, 64<<10 - 2, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10, limit - 8} {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d/chunked=%v", n, chunked), func(t *testing.T) {
				body := `"` + strings.Repeat("x", n) + `"` // n+2 bytes of JSON
				r := postBody(t, e, fmt.Sprintf("size-%d-%v", i, chunked), body, chunked)
				wantStatus(t, r, 201)
				var got map[string]string
				if err := json.Unmarshal([]byte(r.body), &got); err != nil {
					t.Fatal(err)
				}
				if got["body"] != body {
					t.Fatalf("handler got %d bytes, want %d", len(got["body"]), len(body))
				}
			})
		}
	}
	calls := e.calls.Load()
	for _, chunked := range []bool{false, true} {
		r := postBody(t, e, fmt.Sprintf("over-%v", chunked), `"`+strings.Repeat("x", limit-1)+`"`, chunked)
		wantProblem(t, r, 413, "request-too-large")
	}
	if n := e.calls.Load(); n != calls {
		t.Fatalf("%d bodies over the limit reached the handler", n-calls)
	}
}

// postBody posts body under key, with a Content-Length or chunked.
func postBody(t *testing.T, e *env, key, body string, chunked bool) reply {
	t.Helper()
	var rd io.Reader = strings.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // hides the length: sent chunked
	}
	req, err := http.NewRequest("POST", e.srv.URL+"/orders", rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: res.StatusCode, header: res.Header, body: string(b)}
}

// A body shorter than its Content-Length gets 400, nothing forwarded.
func TestRequestBodyShort(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, echo)
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: short\r\nContent-Length: 100000\r\n\r\n%s", strings.Repeat("x", 1000))
	conn.(*net.TCPConn).CloseWrite()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	wantProblem(t, reply{status: res.StatusCode, header: res.Header, body: string(b)}, 400, "invalid-request-body")
	if n := e.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
}

// A request that declares a large body but has sent none of it makes the
// middleware allocate a small buffer, not the declared length: headers alone
// must not make the server hold the limit.
func TestRequestBodyNotAllocatedAhead(t *testing.T) {
	const limit = 64 << 20
	exec := once.New(memstore.New(memstore.Config{}), once.Config{})
	t.Cleanup(func() { exec.Close() })
	h := oncehttp.Middleware(exec, oncehttp.Config{MaxRequestBody: limit})(http.HandlerFunc(echo))
	body := &stalledBody{}
	req := httptest.NewRequestWithContext(context.Background(), "POST", "/orders", body)
	req.ContentLength = limit
	req.Header.Set("Idempotency-Key", "ahead")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	body.before = ms.TotalAlloc
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 400 {
		t.Fatalf("status %d, want 400 for a body that broke off", w.Code)
	}
	if body.allocated > 1<<20 {
		t.Fatalf("%d bytes allocated before the first body byte arrived, want at most 1 MiB", body.allocated)
	}
}

// stalledBody is a request body whose connection breaks before its first
// byte. It records how much was allocated from before until it was read.
type stalledBody struct {
	before, allocated uint64
}

func (b *stalledBody) Read([]byte) (int, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.allocated = ms.TotalAlloc - b.before
	return 0, io.ErrUnexpectedEOF
}

func (b *stalledBody) Close() error { return nil }
