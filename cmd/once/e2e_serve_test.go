package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests build the real binary once and drive "once serve"
// over loopback, killing it with real signals.

var serveBin struct {
	once sync.Once
	path string
	err  error
}

// onceBinary builds the once binary, once per test binary.
func onceBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	serveBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "once-e2e-")
		if err != nil {
			serveBin.err = err
			return
		}
		serveBin.path = filepath.Join(dir, "once")
		out, err := exec.Command("go", "build", "-o", serveBin.path, ".").CombinedOutput()
		if err != nil {
			serveBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if serveBin.err != nil {
		t.Fatal(serveBin.err)
	}
	return serveBin.path
}

// gatewayProc is a running "once serve".
type gatewayProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	proxy  string
	api    string
	stderr *serveLogBuffer
	exited chan error
}

// startServe runs "once serve" with args on free loopback ports and waits
// until it is ready.
func startServe(t *testing.T, env []string, args ...string) *gatewayProc {
	t.Helper()
	proxy, api := serveFreeAddr(t), serveFreeAddr(t)
	g := &gatewayProc{t: t, proxy: "http://" + proxy, api: "http://" + api, stderr: &serveLogBuffer{}, exited: make(chan error, 1)}
	g.cmd = exec.Command(onceBinary(t), append([]string{"serve", "--listen", proxy, "--api-listen", api}, args...)...)
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
		g.exited <- nil
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r, err := http.Get(g.api + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return g
			}
		}
		select {
		case err := <-g.exited:
			t.Fatalf("once serve exited: %v\n%s", err, g.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("once serve not ready:\n%s", g.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func serveFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveLogBuffer collects a process's stderr.
type serveLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *serveLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *serveLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type e2eReply struct {
	status int
	header http.Header
	body   string
}

func e2ePost(url, key, body string, headers ...string) (e2eReply, error) {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return e2eReply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return e2eReply{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return e2eReply{status: res.StatusCode, header: res.Header, body: string(b)}, err
}

func e2eMustPost(t *testing.T, url, key, body string, headers ...string) e2eReply {
	t.Helper()
	r, err := e2ePost(url, key, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func e2eProblemType(r e2eReply) string {
	var p struct{ Type string }
	json.Unmarshal([]byte(r.body), &p)
	return strings.TrimPrefix(p.Type, "https://oncehq.dev/problems/")
}

// countingUpstream counts calls per key and can hold the calls of one key.
type countingUpstream struct {
	srv   *httptest.Server
	calls sync.Map      // key → *atomic.Int64
	hold  atomic.Value  // string: the key whose calls are held
	held  chan struct{} // receives when a held call arrives
	free  chan struct{} // closed to release held calls
}

func newCountingUpstream(t *testing.T, hold string) *countingUpstream {
	u := &countingUpstream{held: make(chan struct{}, 16), free: make(chan struct{})}
	u.hold.Store(hold)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := r.Header.Get("Idempotency-Key")
		n := u.count(key).Add(1)
		if key != "" && key == u.hold.Load().(string) {
			u.held <- struct{}{}
			<-u.free
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"key":%q,"call":%d,"body":%q}`, key, n, body)
	}))
	t.Cleanup(func() {
		select {
		case <-u.free:
		default:
			close(u.free)
		}
		u.srv.Close()
	})
	return u
}

func (u *countingUpstream) count(key string) *atomic.Int64 {
	c, _ := u.calls.LoadOrStore(key, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// The basics over the real binary: a replay, 400, 422, and the environment.
func TestE2EServe(t *testing.T) {
	up := newCountingUpstream(t, "")
	store := "file:" + filepath.Join(t.TempDir(), "once.db")
	g := startServe(t, []string{"ONCE_UPSTREAM=" + up.srv.URL, "ONCE_STORE=" + store})
	first := e2eMustPost(t, g.proxy+"/orders", "k1", `{"a":1,"b":2}`)
	again := e2eMustPost(t, g.proxy+"/orders", `"k1"`, `{"b":2, "a":1}`)
	if first.status != 201 || again.status != 201 || again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %q, retry %d %q %v", first.status, first.body, again.status, again.body, again.header)
	}
	if r := e2eMustPost(t, g.proxy+"/orders", "", `{}`); r.status != 400 || e2eProblemType(r) != "missing-idempotency-key" {
		t.Fatalf("keyless: %d %s", r.status, r.body)
	}
	if r := e2eMustPost(t, g.proxy+"/orders", "k1", `{"a":2}`); r.status != 422 || !strings.Contains(r.body, `"differs":"body"`) {
		t.Fatalf("mismatch: %d %s", r.status, r.body)
	}
	if n := up.count("k1").Load(); n != 1 {
		t.Fatalf("upstream called %d times for k1", n)
	}
	res, err := http.Get(g.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), `once_requests_total{outcome="replayed"} 1`) {
		t.Fatalf("metrics:\n%s", metrics)
	}
	if !strings.Contains(g.stderr.String(), `"outcome":"executed"`) {
		t.Fatalf("no JSON request log on stderr:\n%s", g.stderr.String())
	}
}

// kill -9 mid-request, then a restart on the same store: completed records
// replay, and the in-flight key is not executed twice.
func TestE2EKill9MidRequest(t *testing.T) {
	up := newCountingUpstream(t, "inflight")
	store := "file:" + filepath.Join(t.TempDir(), "once.db")
	args := []string{"--upstream", up.srv.URL, "--store", store, "--lease", "1s", "--wait", "0"}
	g := startServe(t, nil, args...)
	done := e2eMustPost(t, g.proxy+"/orders", "done", `{"n":1}`)
	if done.status != 201 {
		t.Fatalf("done: %d %s", done.status, done.body)
	}
	go e2ePost(g.proxy+"/orders", "inflight", `{"n":2}`)
	select {
	case <-up.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight request never reached the upstream")
	}
	if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g.exited
	g.exited <- nil

	g2 := startServe(t, nil, args...)
	r := e2eMustPost(t, g2.proxy+"/orders", "done", `{"n":1}`)
	if r.status != 201 || r.body != done.body || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("completed key after restart: %d %q %v", r.status, r.body, r.header)
	}
	// Before the dead holder's lease passes: in progress; after: abandoned.
	r = e2eMustPost(t, g2.proxy+"/orders", "inflight", `{"n":2}`)
	if r.status != 409 {
		t.Fatalf("in-flight key after restart: %d %s", r.status, r.body)
	}
	time.Sleep(1100 * time.Millisecond)
	r = e2eMustPost(t, g2.proxy+"/orders", "inflight", `{"n":2}`)
	if r.status != 409 || e2eProblemType(r) != "outcome-unknown" {
		t.Fatalf("abandoned key: %d %s, want 409 outcome-unknown", r.status, r.body)
	}
	if n := up.count("inflight").Load(); n != 1 {
		t.Fatalf("the in-flight key reached the upstream %d times, want 1", n)
	}
	if n := up.count("done").Load(); n != 1 {
		t.Fatalf("the completed key reached the upstream %d times, want 1", n)
	}
}

// --abandoned retry: after a kill -9, the key is taken over and executed again.
func TestE2EKill9AbandonedRetry(t *testing.T) {
	up := newCountingUpstream(t, "k")
	store := "file:" + filepath.Join(t.TempDir(), "once.db")
	args := []string{"--upstream", up.srv.URL, "--store", store, "--lease", "500ms", "--abandoned", "retry"}
	g := startServe(t, nil, args...)
	go e2ePost(g.proxy+"/orders", "k", `{}`)
	<-up.held
	g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
	g.exited <- nil
	up.hold.Store("")
	close(up.free)
	g2 := startServe(t, nil, args...)
	time.Sleep(600 * time.Millisecond)
	if r := e2eMustPost(t, g2.proxy+"/orders", "k", `{}`); r.status != 201 || !strings.Contains(r.body, `"call":2`) {
		t.Fatalf("takeover: %d %s", r.status, r.body)
	}
}

// SIGTERM: stop accepting, let in-flight requests finish and store their
// records, exit 0.
func TestE2ESigterm(t *testing.T) {
	up := newCountingUpstream(t, "slow")
	store := "file:" + filepath.Join(t.TempDir(), "once.db")
	args := []string{"--upstream", up.srv.URL, "--store", store}
	g := startServe(t, nil, args...)
	got := make(chan e2eReply, 1)
	go func() {
		r, err := e2ePost(g.proxy+"/orders", "slow", `{}`)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	<-up.held
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the gateway is draining
	close(up.free)
	r := <-got
	if r.status != 201 {
		t.Fatalf("in-flight request during shutdown: %d %s", r.status, r.body)
	}
	select {
	case err := <-g.exited:
		g.exited <- nil
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, g.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("once serve did not exit after SIGTERM")
	}
	g2 := startServe(t, nil, args...)
	if r := e2eMustPost(t, g2.proxy+"/orders", "slow", `{}`); r.status != 201 || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("after restart: %d %v", r.status, r.header)
	}
	if n := up.count("slow").Load(); n != 1 {
		t.Fatalf("upstream called %d times", n)
	}
}

// "once serve -h" documents every flag and its environment variable.
func TestE2EServeHelp(t *testing.T) {
	out, err := exec.CommandContext(context.Background(), onceBinary(t), "serve", "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("serve -h: %v\n%s", err, out)
	}
	for _, want := range []string{"--upstream", "ONCE_UPSTREAM", "ONCE_MAX_RESPONSE_BODY", "-require-key"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("serve -h lacks %q", want)
		}
	}
}

// 11. A store that is down when the gateway starts: it runs, answers 503
// (fail closed) and forwards nothing; /readyz says not ready.
func TestE2EStoreDown(t *testing.T) {
	up := newCountingUpstream(t, "")
	g := startServe(t, nil, "--upstream", up.srv.URL, "--store", "redis://127.0.0.1:1/0")
	r := e2eMustPost(t, g.proxy+"/orders", "k", `{}`)
	if r.status != 503 || e2eProblemType(r) != "store-unavailable" || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("store down: %d %s", r.status, r.body)
	}
	res, err := http.Get(g.api + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 503 {
		t.Fatalf("/readyz with the store down: %d", res.StatusCode)
	}
	if n := up.count("k").Load(); n != 0 {
		t.Fatalf("upstream called %d times with the store down", n)
	}
}
