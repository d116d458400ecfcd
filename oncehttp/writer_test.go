package oncehttp_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/oncehttp"
)

// A request that passes through keeps the writer's interfaces that handlers
// check for: http.Flusher (streaming), http.Hijacker (upgrades).
func TestPassthroughKeepsFlusherAndHijacker(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		_, f := w.(http.Flusher)
		_, h := w.(http.Hijacker)
		fmt.Fprintf(w, "flusher=%v hijacker=%v", f, h)
	})
	if r := do(t, "GET", e.srv.URL+"/events", ""); r.body != "flusher=true hijacker=true" {
		t.Fatalf("GET passthrough: %s", r.body)
	}
}

// A pass-through response flushed before any write still has its
// X-Request-Id.
func TestPassthroughFlushFirstHasRequestID(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		http.NewResponseController(w).Flush()
		io.WriteString(w, "data: x\n\n")
	})
	if r := do(t, "GET", e.srv.URL+"/events", ""); r.header.Get("X-Request-Id") == "" {
		t.Fatalf("no X-Request-Id: %v", r.header)
	}
}

// A keyed handler that checks for http.Flusher finds one (its flushes wait
// for the response to be stored, unless the response is streamed).
func TestKeyedHandlerFindsFlusher(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		fl, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "streaming unsupported", 500)
			return
		}
		w.WriteHeader(201)
		io.WriteString(w, "data: 1\n\n")
		fl.Flush()
	})
	wantStatus(t, e.post("k1", "{}"), 201)
}

// A handler that gives up after its response began streaming (larger than
// MaxResponseBody): the client's connection is aborted, never a truncated
// body that looks whole, and the key is left to become abandoned.
func TestPanicAfterStreamingAborts(t *testing.T) {
	for _, pv := range []any{"boom", http.ErrAbortHandler} {
		t.Run(fmt.Sprint(pv), func(t *testing.T) {
			e := newEnv(t, nil, once.Config{Wait: once.NoWait}, oncehttp.Config{MaxResponseBody: 100}, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(200)
				w.Write([]byte(strings.Repeat("x", 500)))
				panic(pv)
			})
			e.srv.Config.ErrorLog = quietLog()
			if r, err := e.tryPost("k", "{}"); err == nil {
				t.Fatalf("client got a complete-looking %d response of %d bytes", r.status, len(r.body))
			}
			if r := e.post("k", "{}"); r.status != 409 {
				t.Fatalf("retry: %d %s, want 409 (not executed again)", r.status, r.body)
			}
			if n := e.calls.Load(); n != 1 {
				t.Fatalf("handler ran %d times", n)
			}
		})
	}
}

// The first answer has what a bare server would add (Date, a sniffed
// Content-Type), and replays the same; trailers are not stored and do not
// come back as headers; a newline in a header value stays one value.
func TestRecordedHeadersAsServerWouldSend(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Note", "a\nb")
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "<html><body>hi</body></html>")
		w.Header().Set("X-Sum", "abc")
	}
	bare := httptest.NewServer(http.HandlerFunc(h))
	defer bare.Close()
	want := do(t, "POST", bare.URL, "{}")
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, h)
	first := e.post("k", "{}")
	replay := e.post("k", "{}")
	for _, r := range []reply{first, replay} {
		if r.header.Get("Content-Type") != want.header.Get("Content-Type") || r.header.Get("Date") == "" {
			t.Errorf("Content-Type %q (bare %q), Date %q", r.header.Get("Content-Type"), want.header.Get("Content-Type"), r.header.Get("Date"))
		}
		if v := r.header.Values("X-Note"); len(v) != 1 || v[0] != "a b" {
			t.Errorf("X-Note %q, want one value %q", v, "a b")
		}
		if r.header.Get("X-Sum") != "" || r.header.Get("Trailer") != "" {
			t.Errorf("trailer stored as a header: %v", r.header)
		}
	}
	if first.header.Get("Date") != replay.header.Get("Date") {
		t.Errorf("replay Date %q, first %q", replay.header.Get("Date"), first.header.Get("Date"))
	}
}

// A body over the limit of an http.MaxBytesHandler around the middleware
// is 413, like one over the middleware's own limit.
func TestOuterMaxBytesIs413(t *testing.T) {
	ex := once.New(memstore.New(memstore.Config{}), once.Config{})
	defer ex.Close()
	h := oncehttp.Middleware(ex, oncehttp.Config{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv := httptest.NewServer(http.MaxBytesHandler(h, 10))
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL, io.MultiReader(strings.NewReader(strings.Repeat("x", 100))))
	req.Header.Set("Idempotency-Key", "k")
	r, err := readReply(client.Do(req))
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, r, 413, "request-too-large")
}

// A keyed handler may set deadlines through http.ResponseController, as it
// would without the middleware.
func TestKeyedHandlerDeadlines(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if err := rc.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.WriteHeader(201)
	})
	wantStatus(t, e.post("k1", "{}"), 201)
}
