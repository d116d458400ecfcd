package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/memstore"
)

// 5. The upstream gets the key as sent and a request ID, which the client gets
// back; 6. a retry replays byte for byte without calling the upstream.
func TestProxyExecuteAndReplay(t *testing.T) {
	hs := start(t, gateway.Config{}, created)
	first := hs.post(`"order-1"`, `{"qty":1}`)
	if first.status != 201 {
		t.Fatalf("status %d: %s", first.status, first.body)
	}
	var seen map[string]string
	json.Unmarshal([]byte(first.body), &seen)
	if seen["key"] != `"order-1"` || seen["request_id"] == "" || seen["forwarded_for"] != "127.0.0.1" {
		t.Fatalf("upstream saw %v", seen)
	}
	if got := first.header.Values("X-Request-Id"); len(got) != 1 || got[0] != seen["request_id"] {
		t.Fatalf("client got X-Request-Id %v, upstream saw %q", got, seen["request_id"])
	}
	retry := hs.post("order-1", `{ "qty": 1 }`, "X-Request-Id", "retry-1")
	if retry.status != 201 || retry.body != first.body || retry.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %d %q %v", retry.status, retry.body, retry.header)
	}
	if retry.header.Get("X-Request-Id") != "retry-1" {
		t.Fatalf("replay X-Request-Id %q, want the retry's own", retry.header.Get("X-Request-Id"))
	}
	for _, h := range []string{"Content-Type", "Content-Length", "Date"} {
		if retry.header.Get(h) != first.header.Get(h) {
			t.Errorf("%s: %q on replay, %q first", h, retry.header.Get(h), first.header.Get(h))
		}
	}
	if n := hs.calls.Load(); n != 1 {
		t.Fatalf("upstream called %d times, want 1", n)
	}
	// Other methods pass through, with one X-Request-Id.
	get := hs.do("GET", "/orders", "")
	if get.status != 201 || len(get.header.Values("X-Request-Id")) != 1 {
		t.Fatalf("GET: %d, X-Request-Id %v", get.status, get.header.Values("X-Request-Id"))
	}
	// Missing key: nothing forwarded.
	wantProblem(t, hs.do("POST", "/orders", "{}"), 400, "missing-idempotency-key")
	if n := hs.calls.Load(); n != 2 {
		t.Fatalf("upstream called %d times, want 2", n)
	}
}

// 8. A request that never reached the upstream releases the key: 502, and a
// retry executes.
func TestUpstreamUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // connections are refused until the upstream comes up
	u, _ := url.Parse("http://" + addr)
	hs := start(t, gateway.Config{Upstream: u}, created)
	wantProblem(t, hs.post("k", "{}"), 502, "upstream-unreachable")
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(created)}
	go srv.Serve(ln)
	defer srv.Close()
	if r := hs.post("k", "{}"); r.status != 201 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry after an unreachable upstream: %d %q", r.status, r.body)
	}
	if !strings.Contains(hs.logs.String(), `"outcome":"released"`) {
		t.Error("no released outcome logged")
	}
}

// 8. The connection breaks after the request was sent: 502 outcome unknown,
// and the key is not executed again.
func TestUpstreamBreaksAfterSend(t *testing.T) {
	hs := start(t, gateway.Config{Lease: time.Hour, Wait: once.NoWait}, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	r := hs.post("k", "{}")
	wantProblem(t, r, 502, "upstream-failed")
	if !strings.Contains(r.body, `"outcome":"unknown"`) {
		t.Fatalf("problem does not say the outcome is unknown: %s", r.body)
	}
	requireAbandonSupport(t, hs.store, once.Key{ID: "k"})
	r = hs.post("k", "{}")
	if r.status != 409 {
		t.Fatalf("retry: %d %s, want 409", r.status, r.body)
	}
	if n := hs.calls.Load(); n != 1 {
		t.Fatalf("upstream called %d times, want 1", n)
	}
}

// 8. The same on a kept-alive connection, where net/http's Transport would
// send a request with an Idempotency-Key again on its own when the
// connection breaks before the response: the upstream must see it once.
func TestUpstreamBreaksAfterSendOnKeptAliveConnection(t *testing.T) {
	for _, body := range []string{`{"qty":1}`, ""} {
		var breaks atomic.Int64
		hs := start(t, gateway.Config{Lease: time.Hour, Wait: once.NoWait}, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/break" {
				w.WriteHeader(201)
				return
			}
			breaks.Add(1)
			io.ReadAll(r.Body)
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		})
		// The first request leaves a kept-alive connection to the upstream.
		if r := hs.post("warm", "{}"); r.status != 201 {
			t.Fatalf("warm-up: %d %s", r.status, r.body)
		}
		r := hs.do("POST", "/break", body, "Idempotency-Key", "b", "Content-Type", "application/json")
		wantProblem(t, r, 502, "upstream-failed")
		if !strings.Contains(r.body, `"outcome":"unknown"`) {
			t.Fatalf("body %q: problem does not say the outcome is unknown: %s", body, r.body)
		}
		if n := breaks.Load(); n != 1 {
			t.Fatalf("body %q: upstream got the request %d times, want 1", body, n)
		}
	}
}

// The upstream gets the key under its name, whatever the case in which the
// gateway writes it (header names are case-insensitive).
func TestForwardedKeyHeader(t *testing.T) {
	var got []string
	hs := start(t, gateway.Config{}, func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Idempotency-Key")+"|"+r.Header.Get("X-Idempotency-Key"))
		w.WriteHeader(201)
	})
	hs.post("k1", "{}", "X-Idempotency-Key", "x1")
	hs.do("GET", "/orders", "", "Idempotency-Key", "k2")
	if want := []string{"k1|x1", "k2|"}; !slices.Equal(got, want) {
		t.Fatalf("upstream saw %q, want %q", got, want)
	}
}

// 8. The response cannot be read (the body breaks off): outcome unknown.
func TestUpstreamBodyBreaks(t *testing.T) {
	hs := start(t, gateway.Config{Lease: time.Hour, Wait: once.NoWait}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(201)
		w.Write([]byte("partial"))
		http.NewResponseController(w).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	wantProblem(t, hs.post("k", "{}"), 502, "upstream-failed")
	requireAbandonSupport(t, hs.store, once.Key{ID: "k"})
	if r := hs.post("k", "{}"); r.status != 409 {
		t.Fatalf("retry: %d %s, want 409", r.status, r.body)
	}
}

// 8. The upstream does not answer in time: 504 outcome unknown.
func TestUpstreamTimeout(t *testing.T) {
	hs := start(t, gateway.Config{UpstreamTimeout: 100 * time.Millisecond, Lease: time.Hour}, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // so that the server notices the gateway hanging up
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	r := hs.post("k", "{}")
	wantProblem(t, r, 504, "upstream-timeout")
	if !strings.Contains(r.body, `"outcome":"unknown"`) {
		t.Fatalf("problem does not say the outcome is unknown: %s", r.body)
	}
}

// requireAbandonSupport skips when the executor released a key whose function
// returned once.Abandon: it must leave it in progress (see abandon.go).
func requireAbandonSupport(t *testing.T, store once.Store, key once.Key) {
	t.Helper()
	rec, err := store.Get(context.Background(), key)
	if err == nil && rec.State == once.StateReleased {
		t.Skip("once.Executor.Do released a key whose function returned once.Abandon(err); it must leave it in progress (see abandon.go)")
	}
}

// 10. A large response is streamed whole through the proxy; a retry gets 409
// response-not-stored.
func TestLargeResponseThroughProxy(t *testing.T) {
	big := strings.Repeat("0123456789", 50_000)
	hs := start(t, gateway.Config{MaxResponseBody: 64 << 10}, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.Write([]byte(big))
	})
	first := hs.post("big", "{}")
	if first.status != 200 || first.body != big {
		t.Fatalf("first: %d, %d bytes of %d", first.status, len(first.body), len(big))
	}
	wantProblem(t, hs.post("big", "{}"), 409, "response-not-stored")
	if n := hs.calls.Load(); n != 1 {
		t.Fatalf("upstream called %d times", n)
	}
}

// 1,000 identical concurrent requests: one upstream call, 1,000 identical
// answers. The time is reported, not asserted (see BENCHMARKS.md).
func TestThousandIdenticalRequests(t *testing.T) {
	const n = 1000
	const latency = 100 * time.Millisecond
	hs := start(t, gateway.Config{}, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(latency)
		created(w, r)
	})
	var wg sync.WaitGroup
	gate := make(chan struct{})
	replies := make([]reply, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			replies[i], errs[i] = send("POST", hs.proxy+"/orders", `{"item":"book"}`, "Idempotency-Key", "same", "Content-Type", "application/json")
		}()
	}
	begin := time.Now()
	close(gate)
	wg.Wait()
	took := time.Since(begin)
	if c := hs.calls.Load(); c != 1 {
		t.Fatalf("upstream called %d times for %d identical requests", c, n)
	}
	for i, r := range replies {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if r.status != 201 || r.body != replies[0].body {
			t.Fatalf("answer %d: %d %q, first %q", i, r.status, r.body, replies[0].body)
		}
	}
	t.Logf("%d identical requests: 1 upstream call, all answers identical, %v (upstream latency %v)", n, took, latency)
}

func TestMetricsAndHealth(t *testing.T) {
	hs := start(t, gateway.Config{}, created)
	hs.post("m", "{}")
	hs.post("m", "{}")
	hs.do("POST", "/orders", "{}")
	r, err := send("GET", hs.api+"/metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`once_requests_total{outcome="executed"} 1`,
		`once_requests_total{outcome="replayed"} 1`,
		`once_requests_total{outcome="missing_key"} 1`,
		`once_requests_total{outcome="conflict"} 0`,
		`once_upstream_duration_seconds_count 1`,
		`once_store_duration_seconds_count{op="claim"}`,
		`once_in_flight_requests 0`,
		`once_oldest_in_progress_seconds 0`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if r, err := send("GET", hs.api+path, ""); err != nil || r.status != 200 {
			t.Errorf("%s: %d %v", path, r.status, err)
		}
	}
	// Any other path on the operator API: a problem, like everything else.
	if r, err := send("GET", hs.api+"/nothing", ""); err != nil {
		t.Error(err)
	} else {
		wantProblem(t, r, 404, "not-found")
	}
	// The API is not on the proxy: /metrics there belongs to the upstream.
	if r := hs.do("GET", "/metrics", ""); strings.Contains(r.body, "once_requests_total") {
		t.Error("metrics served on the proxy port")
	}
}

func TestInFlightGauge(t *testing.T) {
	release := make(chan struct{})
	hs := start(t, gateway.Config{}, func(w http.ResponseWriter, r *http.Request) { <-release })
	go send("POST", hs.proxy+"/orders", "{}", "Idempotency-Key", "slow")
	waitFor(t, func() bool { return hs.calls.Load() == 1 })
	time.Sleep(20 * time.Millisecond)
	r, _ := send("GET", hs.api+"/metrics", "")
	close(release)
	if !strings.Contains(r.body, "once_in_flight_requests 1") || strings.Contains(r.body, "once_oldest_in_progress_seconds 0\n") {
		t.Fatalf("in-flight metrics while a request runs:\n%s", grep(r.body, "once_in_flight|once_oldest"))
	}
}

func grep(s, words string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range strings.Split(words, "|") {
			if strings.HasPrefix(l, w) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

func TestReadyzStoreDown(t *testing.T) {
	hs := start(t, gateway.Config{Store: downStore{}}, created)
	r, err := send("GET", hs.api+"/readyz", "")
	if err != nil {
		t.Fatal(err)
	}
	wantProblem(t, r, 503, "store-unavailable")
	// 11. Fail closed: nothing forwarded.
	wantProblem(t, hs.post("k", "{}"), 503, "store-unavailable")
	if n := hs.calls.Load(); n != 0 {
		t.Fatalf("upstream called %d times with the store down", n)
	}
}

// downStore fails every operation.
type downStore struct{ once.Store }

func (downStore) Claim(context.Context, once.ClaimRequest) (once.ClaimResult, error) {
	return once.ClaimResult{}, fmt.Errorf("%w: connection refused", once.ErrUnavailable)
}
func (downStore) Get(context.Context, once.Key) (once.Record, error) {
	return once.Record{}, fmt.Errorf("%w: connection refused", once.ErrUnavailable)
}
func (downStore) Close() error { return nil }

// The log: one JSON line per keyed request, without bodies or credentials.
func TestRequestLog(t *testing.T) {
	hs := start(t, gateway.Config{}, created)
	key := "a-rather-long-idempotency-key-0001"
	hs.post(key, `{"card":"BODY-SECRET"}`, "Authorization", "Bearer TOKEN-SECRET")
	hs.post(key, `{"card":"BODY-SECRET"}`, "Authorization", "Bearer TOKEN-SECRET")
	logs := hs.logs.String()
	for _, secret := range []string{"BODY-SECRET", "TOKEN-SECRET", key} {
		if strings.Contains(logs, secret) {
			t.Errorf("log holds %q:\n%s", secret, logs)
		}
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "once request" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d request lines, want 2:\n%s", len(lines), logs)
	}
	for i, want := range []string{"executed", "replayed"} {
		l := lines[i]
		if l["outcome"] != want || l["status"] != float64(201) || l["key"] != once.Redact(key) || len(l["scope"].(string)) != 8 ||
			l["request_id"] == "" || l["token"] != float64(1) || l["attempt"] != float64(1) {
			t.Errorf("line %d: %v", i, l)
		}
	}
}

// 13. Shutdown lets in-flight requests finish and complete their records.
func TestGracefulShutdown(t *testing.T) {
	hs := start(t, gateway.Config{}, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		created(w, r)
	})
	got := make(chan reply, 1)
	go func() {
		r, err := send("POST", hs.proxy+"/orders", "{}", "Idempotency-Key", "inflight")
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	waitFor(t, func() bool { return hs.calls.Load() == 1 })
	if err := hs.stop(); err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	if r := <-got; r.status != 201 {
		t.Fatalf("in-flight request got %d %s", r.status, r.body)
	}
	rec, err := hs.store.Get(context.Background(), once.Key{ID: "inflight"})
	if err != nil || rec.State != once.StateCompleted {
		t.Fatalf("record after shutdown: %v %v", rec.State, err)
	}
	if _, err := send("POST", hs.proxy+"/orders", "{}", "Idempotency-Key", "late"); err == nil {
		t.Fatal("the proxy still accepts after shutdown")
	}
}

// 13. A request still in flight when the shutdown timeout ends does not hold
// the gateway up: Serve returns ErrShutdownTimeout, and the key is left in
// progress, as a crash would leave it.
func TestShutdownTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	hs := start(t, gateway.Config{ShutdownTimeout: 200 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		<-release
		created(w, r)
	})
	go send("POST", hs.proxy+"/orders", "{}", "Idempotency-Key", "slow")
	waitFor(t, func() bool { return hs.calls.Load() == 1 })
	start := time.Now()
	hs.cancel()
	// While it drains, the gateway is not ready: a load balancer stops
	// sending it requests.
	waitFor(t, func() bool {
		r, err := send("GET", hs.api+"/readyz", "")
		return err == nil && r.status == 503 && problemName(t, r) == "shutting-down"
	})
	err := hs.stop()
	if !errors.Is(err, gateway.ErrShutdownTimeout) {
		t.Fatalf("Serve returned %v, want ErrShutdownTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v with a 200ms timeout", d)
	}
	rec, err := hs.store.Get(context.Background(), once.Key{ID: "slow"})
	if err != nil || rec.State != once.StateInProgress {
		t.Fatalf("record after shutdown: %v %v, want in progress", rec.State, err)
	}
}

// 12. Rules from the config file: webhook keys from a header or the body.
func TestConfigRoutes(t *testing.T) {
	f, err := gateway.ParseConfig([]byte(`
routes:
  - path: /webhooks/github
    key: header:X-GitHub-Delivery
  - path: /webhooks/stripe
    key: json:/id
    ttl: 72h
  - path: /public
    required: false
`))
	if err != nil {
		t.Fatal(err)
	}
	hs := start(t, gateway.Config{Rules: f.Rules}, created)
	for range 3 {
		hs.do("POST", "/webhooks/github", `{"zen":"x"}`, "X-GitHub-Delivery", "d-1")
		hs.do("POST", "/webhooks/stripe", `{"id":"evt_1","type":"invoice.paid"}`, "Content-Type", "application/json")
	}
	if n := hs.calls.Load(); n != 2 {
		t.Fatalf("webhooks reached the upstream %d times, want 2", n)
	}
	rec, err := hs.store.Get(context.Background(), once.Key{ID: "evt_1"})
	if err != nil {
		t.Fatal(err)
	}
	if ttl := rec.ExpiresAt.Sub(rec.CreatedAt); ttl < 71*time.Hour {
		t.Fatalf("route ttl not applied: %v", ttl)
	}
	if r := hs.do("POST", "/public/x", "{}"); r.status != 201 {
		t.Fatalf("optional route without key: %d", r.status)
	}
}

// A keyed request's body is in memory by the time it is forwarded: the
// upstream gets head and body in one write on the connection (net/http
// flushes the head first for a streamed body), so a keyed request costs
// the gateway no more writes upstream than a bare proxy's.
func TestForwardedInOneWrite(t *testing.T) {
	var writes atomic.Int64
	dialer := &net.Dialer{}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: &writes}, nil
	}}
	defer tr.CloseIdleConnections()
	var body string
	hs := start(t, gateway.Config{Transport: tr}, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		w.WriteHeader(201)
	})
	const sent = `{"item":"book","qty":1}`
	if got := hs.post("one-write", sent); got.status != 201 {
		t.Fatalf("status %d: %s", got.status, got.body)
	}
	if body != sent {
		t.Fatalf("upstream got body %q, want %q", body, sent)
	}
	if n := writes.Load(); n != 1 {
		t.Fatalf("request written to the upstream in %d writes, want 1", n)
	}
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// noRenewStore cannot renew leases: a fault a real store gives only when it
// is unreachable at the wrong moment, or the process stalls past its lease.
type noRenewStore struct{ once.Store }

func (noRenewStore) Extend(context.Context, once.Key, uint64, time.Duration) error {
	return once.ErrUnavailable
}

// The lease passes while the upstream works: the call is cut short and the
// client told the lease was lost and the outcome is unknown (not that the
// upstream timed out), and the key is left to become abandoned, never
// released for a second execution.
func TestLeaseLostDuringUpstreamCall(t *testing.T) {
	hs := start(t, gateway.Config{Store: noRenewStore{memstore.New(memstore.Config{})}, Lease: 300 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // then the server notices the gateway hanging up
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		created(w, r)
	})
	r := hs.post("slow", "{}")
	wantProblem(t, r, 503, "lease-lost")
	if !strings.Contains(r.body, `"outcome":"unknown"`) {
		t.Fatalf("problem does not say the outcome is unknown: %s", r.body)
	}
	wantProblem(t, hs.post("slow", "{}"), 409, "outcome-unknown")
	if n := hs.calls.Load(); n != 1 {
		t.Fatalf("upstream called %d times, want 1", n)
	}
}
