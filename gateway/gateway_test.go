package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/oncehttp"
)

// harness is a gateway in front of an upstream that counts its calls.
type harness struct {
	t        *testing.T
	gw       *gateway.Gateway
	store    once.Store
	proxy    string // base URL
	api      string
	calls    atomic.Int64
	upstream *httptest.Server
	cancel   context.CancelFunc
	done     chan error
	logs     *syncBuffer
}

// start runs a gateway with cfg (Store and Upstream filled in if unset) in
// front of h.
func start(t *testing.T, cfg gateway.Config, h http.HandlerFunc) *harness {
	t.Helper()
	hs := &harness{t: t, logs: &syncBuffer{}}
	hs.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.calls.Add(1)
		h(w, r)
	}))
	t.Cleanup(hs.upstream.Close)
	if cfg.Upstream == nil {
		cfg.Upstream, _ = url.Parse(hs.upstream.URL)
	}
	if cfg.Store == nil {
		cfg.Store = memstore.New(memstore.Config{})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(gateway.NewLogHandler(hs.logs, nil)) // as once serve logs
	}
	hs.store = cfg.Store
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs.gw = gw
	pl, al := listen(t), listen(t)
	hs.proxy, hs.api = "http://"+pl.Addr().String(), "http://"+al.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	hs.cancel, hs.done = cancel, make(chan error, 1)
	go func() { hs.done <- gw.Serve(ctx, pl, al) }()
	t.Cleanup(func() { hs.stop() })
	return hs
}

// stop shuts the gateway down and returns what Serve returned.
func (hs *harness) stop() error {
	hs.cancel()
	select {
	case err := <-hs.done:
		hs.done <- err
		return err
	case <-time.After(20 * time.Second):
		hs.t.Fatal("gateway did not stop")
		return nil
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

type reply struct {
	status int
	header http.Header
	body   string
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2048}, Timeout: 60 * time.Second}

func send(method, url, body string, headers ...string) (reply, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, header: res.Header, body: string(b)}, err
}

func (hs *harness) do(method, path, body string, headers ...string) reply {
	hs.t.Helper()
	r, err := send(method, hs.proxy+path, body, headers...)
	if err != nil {
		hs.t.Fatal(err)
	}
	return r
}

func (hs *harness) post(key, body string, headers ...string) reply {
	hs.t.Helper()
	return hs.do("POST", "/orders", body, append([]string{"Idempotency-Key", key, "Content-Type", "application/json"}, headers...)...)
}

func problemName(t *testing.T, r reply) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != oncehttp.ContentTypeProblem {
		t.Fatalf("status %d Content-Type %q body %q: not a problem", r.status, ct, r.body)
	}
	var p oncehttp.Problem
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		t.Fatal(err)
	}
	return p.Name()
}

func wantProblem(t *testing.T, r reply, status int, name string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (%s)", r.status, status, r.body)
	}
	if got := problemName(t, r); got != name {
		t.Fatalf("problem %q, want %q", got, name)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// created answers 201 with the request's essentials.
func created(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id")) // an echoing upstream
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"key":%q,"request_id":%q,"forwarded_for":%q,"body":%q}`,
		r.Header.Get("Idempotency-Key"), r.Header.Get("X-Request-Id"), r.Header.Get("X-Forwarded-For"), body)
}
