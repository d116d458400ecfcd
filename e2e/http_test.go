package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
	"github.com/oncehq/once/stores"
)

// client sends the tests' requests. Storms open hundreds of connections at
// once; keeping them idle lets later requests reuse them.
var client = &http.Client{
	Transport: &http.Transport{MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second},
	Timeout:   60 * time.Second,
}

// reply is a gateway's answer.
type reply struct {
	status int
	header http.Header
	body   string
	at     time.Time // when the answer had been read whole
}

func (r reply) replayed() bool { return r.header.Get("Idempotent-Replayed") == "true" }

// problem returns the problem type's name (after the type URI's base) of an
// application/problem+json answer, or "" for any other answer.
func (r reply) problem() string {
	if r.header.Get("Content-Type") != "application/problem+json" {
		return ""
	}
	var p struct{ Type string }
	if json.Unmarshal([]byte(r.body), &p) != nil {
		return ""
	}
	return strings.TrimPrefix(p.Type, "https://oncehq.dev/problems/")
}

func (r reply) String() string {
	body := r.body
	if len(body) > 300 {
		body = body[:300] + "…"
	}
	return fmt.Sprintf("%d replayed=%v %s", r.status, r.replayed(), body)
}

// post sends POST base/orders with the key and a JSON body.
func post(base, key, body string) (reply, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/orders", strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	res, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, header: res.Header, body: string(b), at: time.Now()}, err
}

func mustPost(t *testing.T, g *gateway, key, body string) reply {
	t.Helper()
	r, err := post(g.proxy, key, body)
	if err != nil {
		t.Fatalf("POST via gateway %s: %v", g.name, err)
	}
	return r
}

// orderBody is the request body sent with key number i.
func orderBody(i int) string { return fmt.Sprintf(`{"order":%d,"qty":1}`, i) }

// upstream is the origin behind the gateways: it counts the calls it gets
// per Idempotency-Key and answers 201 with a body unique to each call, so that
// equal bodies prove one execution. It can be slow for chosen keys.
type upstream struct {
	url   string
	delay time.Duration // for every call, unless a key has its own

	calls  sync.Map // key → *atomic.Int64
	delays sync.Map // key → time.Duration

	mu      sync.Mutex
	arrived map[string]chan struct{} // closed when the key's first call arrives
}

func newUpstream(t *testing.T, delay time.Duration) *upstream {
	u := &upstream{delay: delay, arrived: map[string]chan struct{}{}}
	srv := httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(srv.Close)
	u.url = srv.URL
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	key := r.Header.Get("Idempotency-Key")
	n := u.counter(key).Add(1)
	u.mu.Lock()
	if ch, ok := u.arrived[key]; ok && n == 1 {
		close(ch)
	}
	u.mu.Unlock()
	d := u.delay
	if v, ok := u.delays.Load(key); ok {
		d = v.(time.Duration)
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done(): // the gateway died or gave up
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"key":%q,"call":%d,"execution":%q}`, key, n, randHex(8))
}

func (u *upstream) counter(key string) *atomic.Int64 {
	c, _ := u.calls.LoadOrStore(key, new(atomic.Int64))
	return c.(*atomic.Int64)
}

// count returns how many calls key got.
func (u *upstream) count(key string) int64 { return u.counter(key).Load() }

// slow makes key's calls take d and returns a channel closed when its first
// call arrives.
func (u *upstream) slow(key string, d time.Duration) <-chan struct{} {
	u.delays.Store(key, d)
	ch := make(chan struct{})
	u.mu.Lock()
	u.arrived[key] = ch
	u.mu.Unlock()
	return ch
}

// seen returns the number of calls of every key under prefix that got any.
func (u *upstream) seen(prefix string) map[string]int64 {
	m := map[string]int64{}
	u.calls.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n > 0 && strings.HasPrefix(k.(string), prefix) {
			m[k.(string)] = n
		}
		return true
	})
	return m
}

// keyset names the keys of one test: unique to the run, since the stores
// are shared and never emptied.
type keyset string

func newKeys(tag string) keyset { return keyset("e2e-" + runID + "-" + tag + "-" + randHex(3) + "-") }

func (k keyset) id(i int) string { return string(k) + strconv.Itoa(i) }

// sharedStore is one of the shared backends the gateways run on.
type sharedStore struct {
	name string
	url  string // the store URL given to once serve
}

// forEachStore runs fn, in parallel, on Redis and on PostgreSQL (each skipped
// when its URL is unset).
func forEachStore(t *testing.T, fn func(*testing.T, sharedStore)) {
	for _, name := range []string{"redis", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, openShared(t, name))
		})
	}
}

// openShared returns the URL of a shared backend: Redis under a key prefix of
// this run, PostgreSQL (default tables: the store URL has no table prefix)
// under an application_name of this run.
func openShared(t *testing.T, name string) sharedStore {
	t.Helper()
	if name == "redis" {
		return sharedStore{name, withQuery(t, testenv.RedisURL(t), "prefix", "once-e2e-"+runID+":")}
	}
	return sharedStore{name, withQuery(t, testenv.PostgresURL(t), "application_name", "once-e2e-"+runID+"-"+randHex(3))}
}

// withQuery returns raw with the query parameter name set to value.
func withQuery(t *testing.T, raw, name, value string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("backend URL: %v", err)
	}
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// openStore opens the store at rawURL in the test process, to look at the
// records the gateways wrote.
func openStore(t *testing.T, rawURL string) once.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := stores.Open(ctx, rawURL)
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
