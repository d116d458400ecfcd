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
	"time"

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
	r, err := readReply(client.Do(req))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A body shorter than its Content-Length gets 400, nothing forwarded.
func TestRequestBodyShort(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, echo)
	c := dialRaw(t, e)
	fmt.Fprintf(c.conn, "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: short\r\nContent-Length: 100000\r\n\r\n%s", strings.Repeat("x", 1000))
	c.conn.(*net.TCPConn).CloseWrite()
	wantProblem(t, c.reply(), 400, "invalid-request-body")
	if n := e.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
}

// A keyed body that stops arriving for Config.BodyIdleTimeout gets 400 and
// its connection is closed, nothing forwarded: headers that announce a body
// never sent do not hold a connection forever.
func TestRequestBodyStalled(t *testing.T) {
	const idle = 300 * time.Millisecond
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{BodyIdleTimeout: idle}, echo)
	c := dialRaw(t, e)
	start := time.Now()
	fmt.Fprintf(c.conn, "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: stalled\r\nContent-Length: 100\r\n\r\n{\"a\":")
	wantProblem(t, c.reply(), 400, "invalid-request-body")
	if d := time.Since(start); d < idle*63/64 {
		t.Errorf("answered after %v, before the body had been idle for %v", d, idle)
	}
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("connection still open after a stalled body (read: %v)", err)
	}
	if n := e.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
}

// A keyed body that keeps arriving is read whole however long it takes in
// all, and the bound ends with the body: a handler slower than it answers,
// on a connection that stays usable.
func TestRequestBodySlowNotCutOff(t *testing.T) {
	const idle = 400 * time.Millisecond
	slow := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * idle)
		echo(w, r)
	}
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{BodyIdleTimeout: idle}, slow)
	c := dialRaw(t, e)
	const parts = 20 // 20 × idle/8: 2.5 idle in all
	fmt.Fprintf(c.conn, "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: slow\r\nContent-Length: %d\r\n\r\n", parts+2)
	c.conn.Write([]byte(`"`))
	for range parts {
		time.Sleep(idle / 8)
		c.conn.Write([]byte("x"))
	}
	c.conn.Write([]byte(`"`))
	wantStatus(t, c.reply(), 201)
	fmt.Fprintf(c.conn, "POST /orders HTTP/1.1\r\nHost: x\r\nIdempotency-Key: next\r\nContent-Length: 2\r\n\r\n{}")
	wantStatus(t, c.reply(), 201)
}

// rawConn is a client connection written by hand.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, e *env) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// A generous bound on the whole exchange: a server that never answers
	// fails the test rather than hanging it.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// reply reads the next response.
func (c *rawConn) reply() reply {
	c.t.Helper()
	r, err := readReply(http.ReadResponse(c.br, nil))
	if err != nil {
		c.t.Fatal(err)
	}
	return r
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
