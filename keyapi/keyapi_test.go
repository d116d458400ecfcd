package keyapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once/keyapi"
	"github.com/oncehq/once/memstore"
)

// clock is a settable clock shared by the store and the handler.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	srv   *httptest.Server
	clock *clock
}

func newFixture(t *testing.T, tokens map[string]string) *fixture {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)}
	store := memstore.New(memstore.Config{Clock: c.Now})
	h := keyapi.New(keyapi.Config{Store: store, Tokens: tokens, Now: c.Now, MaxBody: 4096})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, clock: c}
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (f *fixture) call(t *testing.T, method, path, token, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
	}
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode >= 400 && ct != "application/problem+json" {
		t.Fatalf("%s %s: error answer %d has Content-Type %q, want application/problem+json", method, path, resp.StatusCode, ct)
	}
	return a
}

func (a answer) want(t *testing.T, status int, state string) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.raw)
	}
	if state != "" && a.body["state"] != state {
		t.Fatalf("state %v, want %q: %s", a.body["state"], state, a.raw)
	}
	return a
}

func (a answer) token(t *testing.T) uint64 {
	t.Helper()
	v, ok := a.body["token"].(float64)
	if !ok || v < 1 {
		t.Fatalf("no token in %s", a.raw)
	}
	return uint64(v)
}

func TestClaimCompleteReplay(t *testing.T) {
	f := newFixture(t, nil)
	a := f.call(t, "POST", "/v1/keys/order-1/claim", "", `{"fingerprint":"fp1"}`).want(t, 201, "acquired")
	if _, err := time.Parse(time.RFC3339, a.body["lease_expires_at"].(string)); err != nil {
		t.Fatalf("lease_expires_at: %v", err)
	}
	tok := a.token(t)
	f.call(t, "POST", "/v1/keys/order-1/claim", "", `{"fingerprint":"fp1"}`).want(t, 409, "in_progress")
	f.call(t, "POST", "/v1/keys/order-1/complete", "", fmt.Sprintf(`{"token":%d,"result":{"order": "o_1", "n": [1, 2]}}`, tok)).want(t, 200, "completed")
	got := f.call(t, "POST", "/v1/keys/order-1/claim", "", `{"fingerprint":"fp1"}`).want(t, 200, "completed")
	res, _ := json.Marshal(got.body["result"])
	if string(res) != `{"n":[1,2],"order":"o_1"}` {
		t.Fatalf("result %s", res)
	}
	if got.body["completed_at"] == nil {
		t.Fatalf("no completed_at: %s", got.raw)
	}
	g := f.call(t, "GET", "/v1/keys/order-1", "", "").want(t, 200, "completed")
	if g.body["attempts"] != 1.0 {
		t.Fatalf("attempts %v", g.body["attempts"])
	}
	f.call(t, "POST", "/v1/keys/order-1/claim", "", `{"fingerprint":"other"}`).want(t, 422, "mismatch")
}

func TestInProgressRetryAfter(t *testing.T) {
	f := newFixture(t, nil)
	f.call(t, "POST", "/v1/keys/k/claim", "", `{"lease_ms":5000}`).want(t, 201, "acquired")
	a := f.call(t, "POST", "/v1/keys/k/claim", "", ``).want(t, 409, "in_progress")
	if a.header.Get("Retry-After") != "5" {
		t.Fatalf("Retry-After %q, want 5", a.header.Get("Retry-After"))
	}
}

func TestAbandoned(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.call(t, "POST", "/v1/keys/k/claim", "", `{"lease_ms":1000}`).want(t, 201, "acquired").token(t)
	f.clock.Advance(2 * time.Second)
	f.call(t, "POST", "/v1/keys/k/claim", "", ``).want(t, 409, "abandoned")
	f.call(t, "GET", "/v1/keys/k", "", ``).want(t, 200, "abandoned")
	tok2 := f.call(t, "POST", "/v1/keys/k/claim", "", `{"abandoned":"retry"}`).want(t, 201, "acquired").token(t)
	if tok2 <= tok {
		t.Fatalf("takeover token %d not > %d", tok2, tok)
	}
	f.call(t, "POST", "/v1/keys/k/complete", "", fmt.Sprintf(`{"token":%d,"result":1}`, tok)).want(t, 409, "fenced")
	f.call(t, "POST", "/v1/keys/k/extend", "", fmt.Sprintf(`{"token":%d}`, tok)).want(t, 409, "fenced")
	f.call(t, "POST", "/v1/keys/k/extend", "", fmt.Sprintf(`{"token":%d,"lease_ms":9000}`, tok2)).want(t, 200, "")
	f.call(t, "POST", "/v1/keys/k/release", "", fmt.Sprintf(`{"token":%d}`, tok2)).want(t, 200, "released")
	f.call(t, "POST", "/v1/keys/k/release", "", fmt.Sprintf(`{"token":%d}`, tok)).want(t, 409, "fenced")
	tok3 := f.call(t, "POST", "/v1/keys/k/claim", "", ``).want(t, 201, "acquired").token(t)
	if tok3 <= tok2 {
		t.Fatalf("token after release %d not > %d", tok3, tok2)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, nil)
	long := strings.Repeat("k", 256)
	cases := []struct {
		name, method, path, body string
		status                   int
		detail                   string
	}{
		{"unknown field", "POST", "/v1/keys/k/claim", `{"lease":5}`, 400, `"lease"`},
		{"wrong type", "POST", "/v1/keys/k/claim", `{"lease_ms":"5"}`, 400, `lease_ms`},
		{"negative lease", "POST", "/v1/keys/k/claim", `{"lease_ms":-5}`, 400, `lease_ms`},
		{"bad policy", "POST", "/v1/keys/k/claim", `{"abandoned":"maybe"}`, 400, `abandoned`},
		{"malformed", "POST", "/v1/keys/k/claim", `{`, 400, `malformed`},
		{"two values", "POST", "/v1/keys/k/claim", `{} {}`, 400, `more than one`},
		{"long key", "POST", "/v1/keys/" + long + "/claim", ``, 400, `key`},
		{"control char", "POST", "/v1/keys/a%01b/claim", ``, 400, `key`},
		{"utf8", "POST", "/v1/keys/" + url.PathEscape("ключ") + "/claim", ``, 400, `key`},
		{"complete without body", "POST", "/v1/keys/k/complete", ``, 400, `body`},
		{"both results", "POST", "/v1/keys/k/complete", `{"token":1,"result":1,"result_base64":"AA=="}`, 400, `exclusive`},
		{"too large", "POST", "/v1/keys/k/complete", `{"token":1,"result":"` + strings.Repeat("x", 5000) + `"}`, 413, `larger`},
		{"unknown key", "GET", "/v1/keys/nope", ``, 404, ``},
		{"unknown endpoint", "POST", "/v1/keys/k/explode", ``, 404, ``},
		{"version unknown field", "POST", "/v1/versions/e", `{"v":1}`, 400, `"v"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := f.call(t, c.method, c.path, "", c.body)
			if a.status != c.status || !strings.Contains(fmt.Sprint(a.body["detail"]), c.detail) {
				t.Fatalf("got %d %s, want %d with detail containing %q", a.status, a.raw, c.status, c.detail)
			}
		})
	}
	// Nothing was stored by any of them.
	f.call(t, "GET", "/v1/keys/k", "", "").want(t, 404, "")
}

func TestAuthScopes(t *testing.T) {
	f := newFixture(t, map[string]string{"tok-a": "tenant-a", "tok-b": "tenant-b"})
	f.call(t, "POST", "/v1/keys/k/claim", "", ``).want(t, 401, "")
	f.call(t, "POST", "/v1/keys/k/claim", "wrong", ``).want(t, 401, "")
	ta := f.call(t, "POST", "/v1/keys/k/claim", "tok-a", ``).want(t, 201, "acquired").token(t)
	f.call(t, "GET", "/v1/keys/k", "tok-b", ``).want(t, 404, "")
	f.call(t, "POST", "/v1/keys/k/complete", "tok-b", fmt.Sprintf(`{"token":%d,"result":1}`, ta)).want(t, 409, "fenced")
	f.call(t, "POST", "/v1/keys/k/claim", "tok-b", ``).want(t, 201, "acquired")
	f.call(t, "POST", "/v1/keys/k/complete", "tok-a", fmt.Sprintf(`{"token":%d,"result":"a"}`, ta)).want(t, 200, "completed")
}

func TestScopeHeader(t *testing.T) {
	f := newFixture(t, map[string]string{"tenant": "tenant-a", "ops": "*"})
	call := func(token, scope, method, path, body string) answer {
		req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if scope != "" {
			req.Header.Set("Once-Scope", scope)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return answer{status: resp.StatusCode, raw: string(raw)}
	}
	if a := call("tenant", "tenant-b", "POST", "/v1/keys/k/claim", ""); a.status != 403 || !strings.Contains(a.raw, "scope-forbidden") {
		t.Fatalf("tenant token naming another scope: %d %s", a.status, a.raw)
	}
	if a := call("tenant", "tenant-a", "POST", "/v1/keys/k/claim", ""); a.status != 201 {
		t.Fatalf("tenant token naming its own scope: %d %s", a.status, a.raw)
	}
	// The operator token sees tenant-a's key only when it names the scope.
	if a := call("ops", "", "GET", "/v1/keys/k", ""); a.status != 404 {
		t.Fatalf("operator token, empty scope: %d %s", a.status, a.raw)
	}
	if a := call("ops", url.PathEscape("tenant-a"), "GET", "/v1/keys/k", ""); a.status != 200 {
		t.Fatalf("operator token naming tenant-a: %d %s", a.status, a.raw)
	}
}

func TestLoopbackOnlyWithoutTokens(t *testing.T) {
	h := keyapi.New(keyapi.Config{Store: memstore.New(memstore.Config{})})
	if !h.LoopbackOnly() {
		t.Fatal("LoopbackOnly false without tokens")
	}
	for remote, want := range map[string]int{"10.1.2.3:5555": 403, "[2001:db8::1]:80": 403, "127.0.0.1:4000": 201, "[::1]:4000": 201} {
		req := httptest.NewRequest("POST", "/v1/keys/k-"+remote+"/claim", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("remote %s: status %d, want %d", remote, rec.Code, want)
		}
	}
}

func TestConcurrentClaimsOneAcquired(t *testing.T) {
	f := newFixture(t, nil)
	const n = 100
	var acquired, conflicts atomic.Int32
	var start, done sync.WaitGroup
	start.Add(1)
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			resp, err := http.Post(f.srv.URL+"/v1/keys/storm/claim", "application/json", strings.NewReader(`{"fingerprint":"f"}`))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case 201:
				acquired.Add(1)
			case 409:
				conflicts.Add(1)
			default:
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	start.Done()
	done.Wait()
	if acquired.Load() != 1 || conflicts.Load() != n-1 {
		t.Fatalf("acquired %d, conflicts %d; want 1 and %d", acquired.Load(), conflicts.Load(), n-1)
	}
}

func TestVersions(t *testing.T) {
	f := newFixture(t, map[string]string{"a": "A", "b": "B"})
	for _, c := range []struct {
		tok     string
		version int
		applied bool
		current float64
	}{{"a", 5, true, 5}, {"a", 3, false, 5}, {"a", 5, false, 5}, {"a", 6, true, 6}, {"b", 1, true, 1}} {
		a := f.call(t, "POST", "/v1/versions/sub-42", c.tok, fmt.Sprintf(`{"version":%d}`, c.version)).want(t, 200, "")
		if a.body["applied"] != c.applied || a.body["current"] != c.current {
			t.Fatalf("version %d with %s: got %s", c.version, c.tok, a.raw)
		}
	}
}

func TestBinaryResultRoundTrip(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.call(t, "POST", "/v1/keys/b/claim", "", ``).want(t, 201, "").token(t)
	f.call(t, "POST", "/v1/keys/b/complete", "", fmt.Sprintf(`{"token":%d,"result_base64":"AP8=","meta":{"ct":"bin"}}`, tok)).want(t, 200, "")
	a := f.call(t, "POST", "/v1/keys/b/claim", "", ``).want(t, 200, "completed")
	if a.body["result_base64"] != "AP8=" || a.body["meta"].(map[string]any)["ct"] != "bin" {
		t.Fatalf("got %s", a.raw)
	}
}

// TestOpenAPIMatchesHandlers checks that every operation in the committed
// document is served, and that every served route is documented.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	var doc struct {
		OpenAPI string                                                   `json:"openapi"`
		Paths   map[string]map[string]struct{ Responses map[string]any } `json:"paths"`
	}
	if err := json.Unmarshal(keyapi.OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	f := newFixture(t, nil)
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			route := strings.ToUpper(method) + " " + path
			documented[route] = true
			p := strings.NewReplacer("{key}", "doc-key", "{entity}", "doc-entity").Replace(path)
			body := ""
			if method == "post" {
				body = `{"token":1,"version":1}`
				if strings.HasSuffix(path, "/claim") {
					body = `{}`
				}
			}
			req, _ := http.NewRequest(strings.ToUpper(method), f.srv.URL+p, strings.NewReader(body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 405 || strings.Contains(string(raw), "no such endpoint") {
				t.Errorf("%s is documented but not served: %d %s", route, resp.StatusCode, raw)
			}
			if _, ok := op.Responses[fmt.Sprint(resp.StatusCode)]; !ok {
				t.Errorf("%s answered %d, which the document does not list", route, resp.StatusCode)
			}
		}
	}
	for _, r := range keyapi.Routes() {
		if !documented[r] {
			t.Errorf("route %q is served but not documented", r)
		}
	}
}
