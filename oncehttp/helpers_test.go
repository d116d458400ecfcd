package oncehttp_test

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/oncehttp"
)

// env is a server with the middleware around a handler that counts calls.
type env struct {
	t     *testing.T
	srv   *httptest.Server
	exec  *once.Executor
	store once.Store
	calls atomic.Int64
}

// newEnv starts the middleware (cfg, xcfg) over store (nil: a memstore)
// around h, which is counted.
func newEnv(t *testing.T, store once.Store, xcfg once.Config, cfg oncehttp.Config, h http.HandlerFunc) *env {
	t.Helper()
	if store == nil {
		store = memstore.New(memstore.Config{})
	}
	e := &env{t: t, store: store}
	e.exec = once.New(store, xcfg)
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.calls.Add(1)
		h(w, r)
	})
	e.srv = httptest.NewServer(oncehttp.Middleware(e.exec, cfg)(counted))
	t.Cleanup(func() {
		e.srv.Close()
		e.exec.Close()
	})
	return e
}

// echo answers 201 with a JSON body naming the request, and a custom header.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Order", "o-1")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]string{
		"method": r.Method, "path": r.URL.Path, "body": string(body),
		"key": r.Header.Get("Idempotency-Key"), "request_id": r.Header.Get("X-Request-Id"),
	})
}

// reply is a response read whole.
type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) problem(t *testing.T) oncehttp.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != oncehttp.ContentTypeProblem {
		t.Fatalf("Content-Type %q, want %s (status %d, body %s)", ct, oncehttp.ContentTypeProblem, r.status, r.body)
	}
	var p oncehttp.Problem
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		t.Fatalf("problem body %q: %v", r.body, err)
	}
	if p.Status != r.status {
		t.Fatalf("problem status %d, response status %d", p.Status, r.status)
	}
	return p
}

// do sends a request; headers are name, value pairs.
func do(t testing.TB, method, url, body string, headers ...string) reply {
	t.Helper()
	r, err := try(method, url, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try sends a request; safe in any goroutine.
func try(method, url, body string, headers ...string) (reply, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return readReply(client.Do(req))
}

// readReply reads res whole, or passes err on.
func readReply(res *http.Response, err error) (reply, error) {
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: res.StatusCode, header: res.Header, body: string(b)}, nil
}

// client keeps enough idle connections for the storms.
var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}, Timeout: 30 * time.Second}

func (e *env) post(key, body string, headers ...string) reply {
	e.t.Helper()
	r, err := e.tryPost(key, body, headers...)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// tryPost posts to /orders; safe in any goroutine.
func (e *env) tryPost(key, body string, headers ...string) (reply, error) {
	h := append([]string{"Content-Type", "application/json"}, headers...)
	if key != "" {
		h = append(h, "Idempotency-Key", key)
	}
	return try("POST", e.srv.URL+"/orders", body, h...)
}

func wantStatus(t testing.TB, r reply, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

func wantProblem(t *testing.T, r reply, status int, name string) oncehttp.Problem {
	t.Helper()
	wantStatus(t, r, status)
	p := r.problem(t)
	if p.Name() != name {
		t.Fatalf("problem type %q, want %s%s (%+v)", p.Type, oncehttp.ProblemTypeBase, name, p)
	}
	return p
}

// storm fires n copies of fn at once, released by a barrier, and returns
// their replies.
func storm(t *testing.T, n int, fn func() (reply, error)) []reply {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	out := make([]reply, n)
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := fn()
			if err != nil {
				t.Error(err)
			}
			out[i] = r
		}()
	}
	close(start)
	wg.Wait()
	return out
}

// failingStore fails every operation with ErrUnavailable.
type failingStore struct{ once.Store }

func (failingStore) Claim(context.Context, once.ClaimRequest) (once.ClaimResult, error) {
	return once.ClaimResult{}, once.ErrUnavailable
}

func (failingStore) Get(context.Context, once.Key) (once.Record, error) {
	return once.Record{}, once.ErrUnavailable
}

// shortly is a deadline for things that should happen at once.
const shortly = 5 * time.Second

// quietLog discards a server's error log (expected panics).
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
