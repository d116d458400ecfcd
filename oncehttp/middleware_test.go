package oncehttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/oncehttp"
)

// 1. A keyed method without a key gets 400 and nothing reaches the handler;
// other methods pass through untouched.
func TestMissingKey(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, echo)
	for _, m := range []string{"POST", "PATCH"} {
		r := do(t, m, e.srv.URL+"/orders", `{}`)
		wantProblem(t, r, 400, "missing-idempotency-key")
		if r.header.Get("X-Request-Id") == "" {
			t.Error("problem without X-Request-Id")
		}
	}
	if n := e.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times for keyless requests", n)
	}
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		r := do(t, m, e.srv.URL+"/orders", "")
		wantStatus(t, r, 201)
		if r.header.Get(oncehttp.HeaderReplayed) != "" {
			t.Errorf("%s: replay header on a pass-through", m)
		}
	}
	// Keys on methods that need none are ignored: every call runs.
	do(t, "PUT", e.srv.URL+"/orders", "", "Idempotency-Key", "k")
	do(t, "PUT", e.srv.URL+"/orders", "", "Idempotency-Key", "k")
	if n := e.calls.Load(); n != 5 {
		t.Fatalf("handler ran %d times, want 5 pass-throughs", n)
	}
}

func TestKeyOptionalPassesThrough(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{KeyOptional: true}, echo)
	for range 3 {
		r := e.post("", `{"a":1}`)
		wantStatus(t, r, 201)
		if r.header.Get(oncehttp.HeaderReplayed) != "" {
			t.Fatal("keyless pass-through marked as replay")
		}
	}
	if n := e.calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want 3", n)
	}
	// A malformed key is still refused.
	wantProblem(t, e.post(strings.Repeat("k", 256), `{}`), 400, "invalid-idempotency-key")
}

// 2. A raw token and an sf-string name the same key; malformed keys get 400.
func TestKeySyntax(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, echo)
	first := e.post("abc-123", `{"a":1}`)
	wantStatus(t, first, 201)
	again := e.post(`"abc-123"`, `{"a":1}`)
	wantStatus(t, again, 201)
	if again.header.Get(oncehttp.HeaderReplayed) != "true" || again.body != first.body {
		t.Fatalf("sf-string key did not replay the raw key's response: %q vs %q", again.body, first.body)
	}
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
	bad := map[string][]string{
		"empty":            {""},
		"empty sf-string":  {`""`},
		"two headers":      {"a", "b"},
		"256 characters":   {strings.Repeat("k", 256)},
		"non-printable":    {"a\tb"},
		"non-ASCII":        {"clé"},
		"unterminated":     {`"abc`},
		"list":             {`"a", "b"`},
		"bad escape":       {`"a\b"`},
		"sf 256 chars":     {`"` + strings.Repeat("k", 256) + `"`},
		"trailing garbage": {`"a" x`},
	}
	for name, values := range bad {
		t.Run(name, func(t *testing.T) {
			var h []string
			for _, v := range values {
				h = append(h, "Idempotency-Key", v)
			}
			r, err := try("POST", e.srv.URL+"/orders", "{}", h...)
			if err != nil { // Go's client refuses some bytes itself
				t.Skipf("client refused the header: %v", err)
			}
			wantProblem(t, r, 400, "invalid-idempotency-key")
		})
	}
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times after bad keys, want 1", n)
	}
	// 255 characters is fine.
	wantStatus(t, e.post(strings.Repeat("k", 255), "{}"), 201)
}

// 3. The fingerprint: JSON is canonical; another body, path or query under
// the same key gets 422 naming the part.
func TestFingerprintMismatch(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, echo)
	first := e.post("k1", `{"item":"book","qty":2}`)
	wantStatus(t, first, 201)
	same := e.post("k1", "{ \"qty\" : 2,\n \"item\":\"book\" }")
	wantStatus(t, same, 201)
	if same.body != first.body || same.header.Get(oncehttp.HeaderReplayed) != "true" {
		t.Fatalf("reordered JSON was not replayed: %s", same.body)
	}
	cases := []struct {
		name, method, path, body, differs string
	}{
		{"body", "POST", "/orders", `{"item":"book","qty":3}`, "body"},
		{"path", "POST", "/orders/x", `{"item":"book","qty":2}`, "path"},
		{"query", "POST", "/orders?dry=1", `{"item":"book","qty":2}`, "query"},
		{"method", "PATCH", "/orders", `{"item":"book","qty":2}`, "method"},
		{"path and body", "POST", "/other", `{}`, "path,body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, c.method, e.srv.URL+c.path, c.body, "Content-Type", "application/json", "Idempotency-Key", "k1")
			p := wantProblem(t, r, 422, "idempotency-key-mismatch")
			if p.Differs != c.differs {
				t.Fatalf("differs %q, want %q (%s)", p.Differs, c.differs, p.Detail)
			}
			if !strings.Contains(p.Detail, strings.Split(c.differs, ",")[0]) {
				t.Fatalf("detail %q does not name the part", p.Detail)
			}
		})
	}
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
	// A non-JSON body is hashed raw: whitespace matters.
	wantStatus(t, do(t, "POST", e.srv.URL+"/t", "a b", "Content-Type", "text/plain", "Idempotency-Key", "k2"), 201)
	wantProblem(t, do(t, "POST", e.srv.URL+"/t", "a  b", "Content-Type", "text/plain", "Idempotency-Key", "k2"), 422, "idempotency-key-mismatch")
}

// 4. The same key under two Authorization values is two records.
func TestScopeByAuthorization(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "for %s", r.Header.Get("Authorization"))
	})
	alice := e.post("shared-key", "{}", "Authorization", "Bearer alice")
	bob := e.post("shared-key", "{}", "Authorization", "Bearer bob")
	anon := e.post("shared-key", "{}")
	if alice.body != "for Bearer alice" || bob.body != "for Bearer bob" || anon.body != "for " {
		t.Fatalf("responses crossed principals: %q %q %q", alice.body, bob.body, anon.body)
	}
	if r := e.post("shared-key", "{}", "Authorization", "Bearer bob"); r.body != "for Bearer bob" || r.header.Get(oncehttp.HeaderReplayed) != "true" {
		t.Fatalf("bob's retry got %q", r.body)
	}
	if n := e.calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want 3 (one per principal)", n)
	}
	// The store holds the hash, never the header.
	rec, err := e.store.Get(context.Background(), once.Key{Scope: oncehttp.Scope([]string{"Bearer alice"}), ID: "shared-key"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rec.Key.Scope, "alice") || len(rec.Key.Scope) != 64 {
		t.Fatalf("scope %q is not a SHA-256 hex", rec.Key.Scope)
	}
	for k, v := range rec.Result.Meta {
		if strings.Contains(k+v, "Authorization") && strings.Contains(v, "alice") {
			t.Fatalf("stored meta holds the Authorization header: %s=%s", k, v)
		}
	}
}

func TestCustomScopeHeader(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{ScopeHeader: "X-Tenant"}, echo)
	e.post("k", "{}", "X-Tenant", "a")
	e.post("k", "{}", "X-Tenant", "b")
	e.post("k", "{}", "X-Tenant", "a", "Authorization", "other")
	if n := e.calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2 (one per tenant)", n)
	}
}

// 5 and 6. The first request runs the handler with the key and a request ID;
// a retry gets the stored status, headers and body byte for byte.
func TestExecuteThenReplay(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, echo)
	first := e.post("order-1", `{"item":"book"}`)
	wantStatus(t, first, 201)
	var got map[string]string
	if err := json.Unmarshal([]byte(first.body), &got); err != nil {
		t.Fatal(err)
	}
	id := first.header.Get("X-Request-Id")
	if id == "" || got["request_id"] != id || got["key"] != "order-1" {
		t.Fatalf("handler saw request_id %q key %q; client got X-Request-Id %q", got["request_id"], got["key"], id)
	}
	if first.header.Get(oncehttp.HeaderReplayed) != "" {
		t.Fatal("first response marked as replayed")
	}
	retry := e.post("order-1", `{"item":"book"}`, "X-Request-Id", "retry-7")
	wantStatus(t, retry, 201)
	if retry.body != first.body {
		t.Fatalf("replayed body %q, want %q", retry.body, first.body)
	}
	if retry.header.Get(oncehttp.HeaderReplayed) != "true" || retry.header.Get("X-Request-Id") != "retry-7" {
		t.Fatalf("replay headers: %v", retry.header)
	}
	for _, h := range []string{"Content-Type", "X-Order", "Content-Length", "Date"} {
		if retry.header.Get(h) != first.header.Get(h) {
			t.Errorf("header %s: replay %q, first %q", h, retry.header.Get(h), first.header.Get(h))
		}
	}
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

// Hop-by-hop headers are not stored.
func TestHopByHopNotStored(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "per-connection")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
		fmt.Fprint(w, "ok")
	})
	e.post("k", "{}")
	rec, err := e.store.Get(context.Background(), once.Key{ID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Connection", "X-Private", "Keep-Alive"} {
		if _, ok := rec.Result.Meta[oncehttp.MetaHeaderPrefix+h]; ok {
			t.Errorf("hop-by-hop header %s stored", h)
		}
	}
	if rec.Result.Meta[oncehttp.MetaHeaderPrefix+"X-Kept"] != "yes" {
		t.Errorf("end-to-end header not stored: %v", rec.Result.Meta)
	}
}

// 7. Concurrent duplicates wait for the first and get its response; the
// handler runs once.
func TestConcurrentDuplicatesCoalesce(t *testing.T) {
	const n = 300
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		echo(w, r)
	})
	replies := storm(t, n, func() (reply, error) { return e.tryPost("storm", `{"x":1}`) })
	if c := e.calls.Load(); c != 1 {
		t.Fatalf("handler ran %d times for %d identical requests, want 1", c, n)
	}
	replayed := 0
	for _, r := range replies {
		if r.status != 201 || r.body != replies[0].body {
			t.Fatalf("reply %d %q differs from %q", r.status, r.body, replies[0].body)
		}
		if r.header.Get(oncehttp.HeaderReplayed) == "true" {
			replayed++
		}
	}
	if replayed != n-1 {
		t.Fatalf("%d replies marked replayed, want %d", replayed, n-1)
	}
}

// 7. When the wait runs out: 409 with Retry-After.
func TestWaitRunsOut(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, nil, once.Config{Wait: 100 * time.Millisecond, Lease: 5 * time.Second}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		<-release
		fmt.Fprint(w, "done")
	})
	first := make(chan reply)
	go func() { r, _ := e.tryPost("slow", "{}"); first <- r }()
	waitFor(t, func() bool { return e.calls.Load() == 1 })
	r := e.post("slow", "{}")
	p := wantProblem(t, r, 409, "request-in-progress")
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After %q", ra)
	}
	_ = p
	close(release)
	wantStatus(t, <-first, 200)
	if r := e.post("slow", "{}"); r.body != "done" || r.header.Get(oncehttp.HeaderReplayed) != "true" {
		t.Fatalf("after completion: %d %q", r.status, r.body)
	}
}

// --wait 0: a duplicate gets 409 at once.
func TestNoWait(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, nil, once.Config{Wait: once.NoWait}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		<-release
	})
	go e.tryPost("k", "{}")
	waitFor(t, func() bool { return e.calls.Load() == 1 })
	start := time.Now()
	wantProblem(t, e.post("k", "{}"), 409, "request-in-progress")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("no-wait duplicate took %v", d)
	}
	close(release)
}

// 8. Every status is stored, 5xx included, except 429, which releases the key.
func TestStoragePolicy(t *testing.T) {
	var status atomic.Int64
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
		fmt.Fprintf(w, "status %d", status.Load())
	})
	for _, code := range []int{500, 503, 400, 404, 200} {
		status.Store(int64(code))
		key := fmt.Sprint("k", code)
		wantStatus(t, e.post(key, "{}"), code)
		status.Store(200)
		r := e.post(key, "{}")
		if r.status != code || r.header.Get(oncehttp.HeaderReplayed) != "true" {
			t.Fatalf("%d was not replayed: got %d", code, r.status)
		}
	}
	status.Store(429)
	wantStatus(t, e.post("limited", "{}"), 429)
	status.Store(201)
	r := e.post("limited", "{}")
	if r.status != 201 || r.header.Get(oncehttp.HeaderReplayed) != "" {
		t.Fatalf("retry after 429 got %d replayed=%q, want a fresh 201", r.status, r.header.Get(oncehttp.HeaderReplayed))
	}
	if n := e.calls.Load(); n != 7 {
		t.Fatalf("handler ran %d times, want 7", n)
	}
}

// A panicking handler releases the key: the retry runs.
func TestHandlerPanicReleases(t *testing.T) {
	var panicked atomic.Bool
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		if panicked.CompareAndSwap(false, true) {
			panic("boom")
		}
		fmt.Fprint(w, "ok")
	})
	e.srv.Config.ErrorLog = quietLog()
	if _, err := e.tryPost("p", "{}"); err == nil {
		t.Fatal("a panicking handler's connection was not aborted")
	}
	if r := e.post("p", "{}"); r.status != 200 || r.body != "ok" {
		t.Fatalf("retry after panic: %d %q", r.status, r.body)
	}
}

// 9. An abandoned key: reject (409 outcome-unknown) or retry (runs again with
// a larger token).
func TestAbandonedKey(t *testing.T) {
	for _, policy := range []once.AbandonPolicy{once.AbandonReject, once.AbandonRetry} {
		t.Run(policy.String(), func(t *testing.T) {
			store := memstore.New(memstore.Config{})
			e := newEnv(t, store, once.Config{Abandoned: policy}, oncehttp.Config{}, echo)
			// A holder that died: it claimed with the request's fingerprint
			// and a lease that has passed.
			fp := oncehttp.Fingerprint("POST", "/orders", "", "application/json", []byte("{}"))
			_, err := store.Claim(context.Background(), once.ClaimRequest{Key: once.Key{ID: "dead"}, Fingerprint: fp,
				Lease: time.Millisecond, Retention: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
			r := e.post("dead", "{}")
			if policy == once.AbandonReject {
				p := wantProblem(t, r, 409, "outcome-unknown")
				if p.Outcome != "unknown" {
					t.Fatalf("outcome %q", p.Outcome)
				}
				if n := e.calls.Load(); n != 0 {
					t.Fatalf("abandoned key executed %d times under reject", n)
				}
				return
			}
			wantStatus(t, r, 201)
			rec, err := store.Get(context.Background(), once.Key{ID: "dead"})
			if err != nil || rec.Token != 2 || rec.State != once.StateCompleted {
				t.Fatalf("after takeover: token %d state %v err %v", rec.Token, rec.State, err)
			}
		})
	}
}

// 10. A response larger than the limit is streamed whole to the first
// client; a retry gets 409 response-not-stored, never a truncated body.
func TestLargeResponseStreamed(t *testing.T) {
	big := strings.Repeat("x", 10_000)
	for _, declared := range []bool{true, false} {
		t.Run(fmt.Sprint("content-length=", declared), func(t *testing.T) {
			e := newEnv(t, nil, once.Config{}, oncehttp.Config{MaxResponseBody: 1000}, func(w http.ResponseWriter, r *http.Request) {
				if declared {
					w.Header().Set("Content-Length", fmt.Sprint(len(big)))
				}
				w.WriteHeader(201)
				for i := 0; i < len(big); i += 100 {
					w.Write([]byte(big[i : i+100]))
				}
			})
			first := e.post("big", "{}")
			if first.status != 201 || first.body != big {
				t.Fatalf("first: %d, %d bytes", first.status, len(first.body))
			}
			if first.header.Get("X-Request-Id") == "" {
				t.Fatal("streamed response without X-Request-Id")
			}
			r := e.post("big", "{}")
			p := wantProblem(t, r, 409, "response-not-stored")
			if p.OriginalStatus != 201 || r.header.Get(oncehttp.HeaderReplayed) != "true" {
				t.Fatalf("problem %+v, replayed %q", p, r.header.Get(oncehttp.HeaderReplayed))
			}
			if n := e.calls.Load(); n != 1 {
				t.Fatalf("handler ran %d times", n)
			}
		})
	}
}

// The request body limit: 413, nothing forwarded.
func TestRequestTooLarge(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{MaxRequestBody: 10}, echo)
	wantProblem(t, e.post("k", `{"a":"0123456789"}`), 413, "request-too-large")
	wantStatus(t, e.post("k", `{"a":1}`), 201)
	if n := e.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
}

// 11. Store unreachable: 503, nothing forwarded.
func TestStoreUnavailable(t *testing.T) {
	e := newEnv(t, failingStore{memstore.New(memstore.Config{})}, once.Config{}, oncehttp.Config{}, echo)
	r := e.post("k", "{}")
	wantProblem(t, r, 503, "store-unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if n := e.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times with the store down", n)
	}
	// Methods that need no key still pass through.
	wantStatus(t, do(t, "GET", e.srv.URL+"/orders", ""), 201)
}

// 12. Routes: a key from another header or from the JSON body.
func TestRoutesKeySources(t *testing.T) {
	gh, _ := oncehttp.ParseKeySource("header:X-GitHub-Delivery")
	stripe, _ := oncehttp.ParseKeySource("json:/id")
	optional := true
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{Routes: []oncehttp.Route{
		{Prefix: "/hooks/github", Key: gh},
		{Prefix: "/hooks/stripe", Key: stripe},
		{Prefix: "/public", KeyOptional: &optional, Methods: []string{"POST", "PUT"}},
	}}, echo)
	for range 3 {
		wantStatus(t, do(t, "POST", e.srv.URL+"/hooks/github", `{"a":1}`, "X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"), 201)
		wantStatus(t, do(t, "POST", e.srv.URL+"/hooks/stripe/events", `{"id":"evt_1","type":"charge.succeeded"}`, "Content-Type", "application/json"), 201)
	}
	if n := e.calls.Load(); n != 2 {
		t.Fatalf("webhooks ran %d times, want 2", n)
	}
	wantProblem(t, do(t, "POST", e.srv.URL+"/hooks/github", `{}`), 400, "missing-idempotency-key")
	wantProblem(t, do(t, "POST", e.srv.URL+"/hooks/stripe", `{"type":"x"}`, "Content-Type", "application/json"), 400, "missing-idempotency-key")
	wantProblem(t, do(t, "POST", e.srv.URL+"/hooks/stripe", `{"id":{"x":1}}`), 400, "invalid-idempotency-key")
	// /public: optional key, PUT keyed too.
	wantStatus(t, do(t, "PUT", e.srv.URL+"/public/x", `{}`), 201)
	do(t, "PUT", e.srv.URL+"/public/x", `{}`, "Idempotency-Key", "p")
	if r := do(t, "PUT", e.srv.URL+"/public/x", `{}`, "Idempotency-Key", "p"); r.header.Get(oncehttp.HeaderReplayed) != "true" {
		t.Fatal("PUT with a key on /public was not replayed")
	}
	// Not a prefix of a path segment: /hooks/githubx is the default route.
	wantProblem(t, do(t, "POST", e.srv.URL+"/hooks/githubx", `{}`, "X-GitHub-Delivery", "d"), 400, "missing-idempotency-key")
}

// Fail from a handler: a plain error releases, an Abandon leaves the key.
func TestFailFromHandler(t *testing.T) {
	var mode atomic.Value
	e := newEnv(t, nil, once.Config{Lease: time.Hour}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "unreachable":
			oncehttp.Fail(r, oncehttp.ErrUpstreamUnreachable)
		case "unknown":
			oncehttp.Fail(r, once.Abandon(errors.New("connection reset")))
		default:
			fmt.Fprint(w, "ok")
		}
	})
	mode.Store("unreachable")
	wantProblem(t, e.post("a", "{}"), 502, "upstream-unreachable")
	mode.Store("ok")
	if r := e.post("a", "{}"); r.body != "ok" || r.header.Get(oncehttp.HeaderReplayed) != "" {
		t.Fatalf("retry after a released failure: %d %q", r.status, r.body)
	}
	mode.Store("unknown")
	p := wantProblem(t, e.post("b", "{}"), 502, "upstream-failed")
	if p.Outcome != "unknown" {
		t.Fatalf("outcome %q", p.Outcome)
	}
	mode.Store("ok")
	requireAbandonSupport(t, e.store)
	r := e.post("b", "{}")
	if r.status != 409 {
		t.Fatalf("retry after an unknown outcome: %d %q, want 409 (not executed again)", r.status, r.body)
	}
	if n := e.calls.Load(); n != 3 {
		t.Fatalf("handler ran %d times, want 3", n)
	}
}

// requireAbandonSupport skips when Executor.Do releases a key whose fn
// returned once.Abandon: the executor must leave such keys in progress.
func requireAbandonSupport(t *testing.T, store once.Store) {
	t.Helper()
	rec, err := store.Get(context.Background(), once.Key{ID: "b"})
	if err == nil && rec.State == once.StateReleased {
		t.Skip("once.Executor.Do released a key whose function returned once.Abandon(err); it must leave it in progress (see abandon.go)")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(shortly)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

// 5. The lease is renewed while the handler works: another process (another
// executor on the same store) waiting on the key does not take it over, even
// under AbandonRetry, and gets the replay.
func TestLeaseRenewedAcrossProcesses(t *testing.T) {
	store := memstore.New(memstore.Config{})
	xcfg := once.Config{Lease: 300 * time.Millisecond, Abandoned: once.AbandonRetry, Wait: 5 * time.Second}
	slow := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		fmt.Fprint(w, "slow result")
	}
	a := newEnv(t, store, xcfg, oncehttp.Config{}, slow)
	b := newEnv(t, store, xcfg, oncehttp.Config{}, slow)
	first := make(chan reply, 1)
	go func() { r, _ := a.tryPost("long", "{}"); first <- r }()
	waitFor(t, func() bool { return a.calls.Load() == 1 })
	time.Sleep(500 * time.Millisecond) // past one lease: only renewals keep it
	r := b.post("long", "{}")
	if r.body != "slow result" || r.header.Get(oncehttp.HeaderReplayed) != "true" {
		t.Fatalf("other process got %d %q %v", r.status, r.body, r.header)
	}
	if got := <-first; got.body != "slow result" {
		t.Fatalf("first got %q", got.body)
	}
	if n := a.calls.Load() + b.calls.Load(); n != 1 {
		t.Fatalf("executed %d times across two processes", n)
	}
}

// When the key is taken over while the handler runs (an operator deleted it
// and another execution claimed it), the handler's response is not the
// key's: the client gets 503 lease-lost, not a 201 that no retry would ever
// see again, and a retry gets the key's response.
func TestFencedResponseNotSent(t *testing.T) {
	var e *env
	e = newEnv(t, nil, once.Config{}, oncehttp.Config{}, func(w http.ResponseWriter, r *http.Request) {
		ctx := context.Background()
		key := once.Key{Scope: oncehttp.Scope(nil), ID: "k"}
		rec, err := e.store.Get(ctx, key)
		if err != nil {
			t.Error(err)
			return
		}
		if err := e.store.Delete(ctx, key); err != nil {
			t.Error(err)
			return
		}
		cr, err := e.store.Claim(ctx, once.ClaimRequest{Key: key, Fingerprint: rec.Fingerprint, Lease: time.Minute, Retention: time.Hour})
		if err != nil || cr.Outcome != once.Acquired {
			t.Errorf("take-over: %v %v", cr.Outcome, err)
			return
		}
		if err := e.store.Complete(ctx, key, cr.Record.Token, oncehttp.EncodeResult(201, http.Header{}, []byte("the other execution"), "r-2")); err != nil {
			t.Error(err)
		}
		w.WriteHeader(201)
		io.WriteString(w, "this execution")
	})
	first := e.post("k", "{}")
	if first.status != 503 || first.problem(t).Name() != "lease-lost" {
		t.Fatalf("first: %d %s, want 503 lease-lost", first.status, first.body)
	}
	retry := e.post("k", "{}")
	if retry.status != 201 || retry.body != "the other execution" || retry.header.Get(oncehttp.HeaderReplayed) != "true" {
		t.Fatalf("retry: %d %q %v", retry.status, retry.body, retry.header)
	}
}

func TestMismatchDetail(t *testing.T) {
	e := newEnv(t, nil, once.Config{}, oncehttp.Config{}, echo)
	e.post("m", `{"a":1}`)
	for body, want := range map[string]string{
		`{"a":2}`: "the body differs;",
	} {
		if r := e.post("m", body); !strings.Contains(r.problem(t).Detail, want) {
			t.Errorf("%s: detail %q, want %q in it", body, r.problem(t).Detail, want)
		}
	}
	r, err := try("PATCH", e.srv.URL+"/other?x=1", `{"a":2}`, "Idempotency-Key", "m", "Content-Type", "application/json")
	if err != nil {
		t.Fatal(err)
	}
	if want := "the method, the path, the query and the body differ;"; !strings.Contains(r.problem(t).Detail, want) {
		t.Errorf("detail %q, want %q in it", r.problem(t).Detail, want)
	}
}
