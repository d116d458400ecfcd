package race_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once/race"
	"github.com/oncehq/once/race/racetest"
)

// MustRun runs c and fails the test on any error.
func MustRun(tb testing.TB, c race.Config) *race.Report {
	tb.Helper()
	rep, err := race.Run(context.Background(), c)
	if err != nil {
		tb.Fatalf("Run: %v", err)
	}
	return rep
}

// replayer is an idempotent endpoint: the first request for a key creates a
// resource, and every later one gets the same answer, marked replayed.
type replayer struct {
	mu      sync.Mutex
	answers map[string]string
	next    int
}

func (p *replayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	p.mu.Lock()
	body, seen := p.answers[key]
	if !seen {
		p.next++
		body = fmt.Sprintf(`{"id":%d}`, p.next)
		p.answers[key] = body
	}
	p.mu.Unlock()
	if seen {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	io.WriteString(w, body)
}

func TestRunRacyEndpointBreaksEveryRound(t *testing.T) {
	users := racetest.NewUsers(5 * time.Second)
	srv := httptest.NewServer(users)
	defer srv.Close()
	var called []int
	rep := MustRun(t, race.Config{
		URL: srv.URL + "/users", N: 20, Rounds: 3,
		Body:    `{"email":"{{uuid}}@example.com"}`,
		OnRound: func(r race.Round) { called = append(called, r.Round) },
	})
	if fmt.Sprint(called) != "[1 2 3]" {
		t.Errorf("OnRound called for rounds %v, want [1 2 3]", called)
	}
	if rep.Rounds != 3 || rep.RoundsFailed != 3 || rep.FlakeRate != 1 {
		t.Fatalf("rounds %d, failed %d, flake rate %v; want 3, 3, 1", rep.Rounds, rep.RoundsFailed, rep.FlakeRate)
	}
	for _, r := range rep.Details {
		if r.Held || r.Verdict != race.VerdictBroken || r.DistinctBodies < 2 || r.Statuses["201"] < 2 {
			t.Errorf("round %d: held %v, verdict %q, %d distinct 2xx, statuses %v; want broken with ≥ 2 inserts", r.Round, r.Held, r.Verdict, r.DistinctBodies, r.Statuses)
		}
		if !strings.Contains(r.Reason, "different 2xx answers") {
			t.Errorf("round %d: reason %q", r.Round, r.Reason)
		}
	}
	if users.Posted() != 60 {
		t.Errorf("server saw %d requests, want 60", users.Posted())
	}
}

func TestRunIdempotentEndpointHolds(t *testing.T) {
	srv := httptest.NewServer(&replayer{answers: map[string]string{}})
	defer srv.Close()
	rep := MustRun(t, race.Config{URL: srv.URL, N: 30, Rounds: 4})
	if rep.RoundsFailed != 0 || rep.Rounds != 4 || rep.Requests != 120 {
		t.Fatalf("failed %d of %d rounds, %d requests; want 0 of 4, 120", rep.RoundsFailed, rep.Rounds, rep.Requests)
	}
	for _, r := range rep.Details {
		if !r.Held || r.DistinctBodies != 1 || r.Replayed != 29 || r.Statuses["200"] != 30 {
			t.Errorf("round %d: held %v, %d distinct, %d replayed, statuses %v; want held, 1, 29, 200×30", r.Round, r.Held, r.DistinctBodies, r.Replayed, r.Statuses)
		}
		if len(r.Answers) != 1 || r.Answers[0].Count != 30 || r.Answers[0].Replayed != 29 {
			t.Errorf("round %d: answers %+v", r.Round, r.Answers)
		}
	}
}

// TestFireOverlaps proves the barrier: the server holds every request until
// all n are in flight at once, and answers 500 if that takes too long.
func TestFireOverlaps(t *testing.T) {
	const n = 200
	var arrived atomic.Int64
	all := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
			io.WriteString(w, "together")
		case <-time.After(10 * time.Second):
			http.Error(w, "alone", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	rep := MustRun(t, race.Config{URL: srv.URL, N: n, Rounds: 1, Timeout: 20 * time.Second})
	if got := rep.Details[0].Statuses["200"]; got != n {
		t.Fatalf("%d of %d requests were in flight together (statuses %v)", got, n, rep.Details[0].Statuses)
	}
}

func TestRunCheck(t *testing.T) {
	users := racetest.NewUsers(5 * time.Second)
	srv := httptest.NewServer(users)
	defer srv.Close()
	check := func(ctx context.Context, v race.Vars) (string, error) {
		return fmt.Sprintf(" %d\n", users.Count(v.UUID+"@example.com")), nil
	}
	rep := MustRun(t, race.Config{
		URL: srv.URL, N: 10, Rounds: 2, Key: race.KeyNone,
		Body:  `{"email":"{{uuid}}@example.com"}`,
		Check: check, Expect: "1",
	})
	if rep.RoundsFailed != 2 {
		t.Fatalf("failed %d of 2 rounds, want 2", rep.RoundsFailed)
	}
	for _, r := range rep.Details {
		n, _ := strconv.Atoi(r.Check.Value)
		if r.Check.Expect != "1" || n < 2 || r.Held || r.Reason != fmt.Sprintf("check gave %q, want \"1\"", r.Check.Value) {
			t.Errorf("round %d: check %+v, held %v, reason %q", r.Round, r.Check, r.Held, r.Reason)
		}
	}
}

func TestRunCheckErrorStops(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	boom := errors.New("boom")
	rep, err := race.Run(context.Background(), race.Config{
		URL: srv.URL, N: 2, Rounds: 5, Expect: "1",
		Check: func(ctx context.Context, v race.Vars) (string, error) {
			if v.Round == 2 {
				return "", boom
			}
			return "1", nil
		},
	})
	var ce *race.CheckError
	if !errors.As(err, &ce) || ce.Round != 2 || !errors.Is(err, boom) {
		t.Fatalf("err = %v, want a CheckError for round 2 wrapping boom", err)
	}
	if rep.Rounds != 1 || rep.Error == "" {
		t.Errorf("report: %d rounds, error %q; want 1 round and the error", rep.Rounds, rep.Error)
	}
}

func TestShellCheck(t *testing.T) {
	check, err := race.ShellCheck(`echo "{{round}} {{key}} {{uuid}} {{n}} $ONCE_RACE_ROUND $ONCE_RACE_KEY"`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := check(context.Background(), race.Vars{Round: 3, Key: "k", UUID: "u", N: 7})
	if err != nil || got != "3 k u 7 3 k\n" {
		t.Fatalf("got %q, %v; want %q", got, err, "3 k u 7 3 k\n")
	}
	failing, _ := race.ShellCheck("echo nope >&2; exit 3")
	if _, err := failing(context.Background(), race.Vars{}); err == nil || !strings.Contains(err.Error(), "exit status 3: nope") {
		t.Errorf("failing check: %v, want exit status 3 and its stderr", err)
	}
	if _, err := race.ShellCheck("echo {{i}}"); err == nil {
		t.Error("{{i}} in a check: no error")
	}
}

// recorder keeps what each request carried.
type recorder struct {
	mu   sync.Mutex
	seen []http.Header // with X-Body and X-URL added
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h := r.Header.Clone()
	h.Set("X-Body", string(b))
	h.Set("X-URL", r.URL.String())
	h.Set("X-Method", r.Method)
	rc.mu.Lock()
	rc.seen = append(rc.seen, h)
	rc.mu.Unlock()
}

func TestTemplatesAndKeys(t *testing.T) {
	for _, mode := range []race.KeyMode{race.KeySame, race.KeyUnique, race.KeyNone} {
		t.Run(string(mode), func(t *testing.T) {
			rc := &recorder{}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			MustRun(t, race.Config{
				URL: srv.URL + "/r/{{round}}?n={{n}}&i={{i}}", N: 5, Rounds: 2, Key: mode, Method: "PUT",
				Header: []race.Header{{Name: "X-Key", Value: "{{key}}"}, {Name: "X-Uuid", Value: "{{uuid}}"}},
				Body:   `{"round":{{round}},"i":{{i}}}`,
			})
			checkTemplates(t, rc.seen, mode)
		})
	}
}

func checkTemplates(t *testing.T, seen []http.Header, mode race.KeyMode) {
	t.Helper()
	if len(seen) != 10 {
		t.Fatalf("%d requests, want 10", len(seen))
	}
	keyOf := map[string]string{} // round → key
	uuidOf := map[string]string{}
	for _, h := range seen {
		var body struct{ Round, I int }
		if err := json.Unmarshal([]byte(h.Get("X-Body")), &body); err != nil || h.Get("Content-Type") != "application/json" || h.Get("X-Method") != "PUT" {
			t.Fatalf("body %q (%v), content type %q, method %q", h.Get("X-Body"), err, h.Get("Content-Type"), h.Get("X-Method"))
		}
		r := strconv.Itoa(body.Round)
		if want := fmt.Sprintf("/r/%s?n=5&i=%d", r, body.I); h.Get("X-URL") != want {
			t.Errorf("URL %q, want %q", h.Get("X-URL"), want)
		}
		if k, ok := keyOf[r]; ok && (k != h.Get("X-Key") || uuidOf[r] != h.Get("X-Uuid")) {
			t.Errorf("round %s: {{key}} or {{uuid}} differ between requests", r)
		}
		keyOf[r], uuidOf[r] = h.Get("X-Key"), h.Get("X-Uuid")
		want := map[race.KeyMode]string{race.KeySame: keyOf[r], race.KeyUnique: fmt.Sprintf("%s-%d", keyOf[r], body.I)}[mode]
		if got := h.Get("Idempotency-Key"); got != want {
			t.Errorf("Idempotency-Key %q, want %q", got, want)
		}
	}
	if keyOf["1"] == keyOf["2"] || uuidOf["1"] == uuidOf["2"] || keyOf["1"] == uuidOf["1"] || len(keyOf["1"]) != 36 {
		t.Errorf("keys %v and uuids %v: want fresh UUIDs each round", keyOf, uuidOf)
	}
}

func TestUserKeyHeaderWins(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	MustRun(t, race.Config{URL: srv.URL, N: 2, Rounds: 1, Header: []race.Header{{Name: "Idempotency-Key", Value: `"{{key}}"`}}})
	for _, h := range rc.seen {
		if v := h.Values("Idempotency-Key"); len(v) != 1 || !strings.HasPrefix(v[0], `"`) {
			t.Errorf("Idempotency-Key %q, want the user's one quoted value", v)
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	rep, err := race.Run(context.Background(), race.Config{URL: "http://" + addr + "/x", N: 5, Rounds: 3})
	var ce *race.ConnError
	if !errors.As(err, &ce) || ce.Round != 1 || ce.Addr != addr || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want a ConnError for round 1 naming %s and the refusal", err, addr)
	}
	if rep.Rounds != 0 {
		t.Errorf("%d rounds in the report, want 0", rep.Rounds)
	}
}

func TestNoAnswerIsAConnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
	}))
	defer srv.Close()
	_, err := race.Run(context.Background(), race.Config{URL: srv.URL, N: 3, Rounds: 1, Timeout: 50 * time.Millisecond})
	var ce *race.ConnError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "no request got an answer") {
		t.Fatalf("err = %v, want a ConnError: no request got an answer", err)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var other atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { other.Add(1) }))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.RedirectHandler(elsewhere.URL, http.StatusFound))
	defer srv.Close()
	rep := MustRun(t, race.Config{URL: srv.URL, N: 4, Rounds: 1})
	if rep.Details[0].Statuses["302"] != 4 || other.Load() != 0 {
		t.Fatalf("statuses %v, %d requests elsewhere; want 302×4 and none", rep.Details[0].Statuses, other.Load())
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(&replayer{answers: map[string]string{}})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshake below is expected
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	rep := MustRun(t, race.Config{URL: srv.URL, N: 10, Rounds: 2, TLSConfig: &tls.Config{RootCAs: roots}, Spread: 5 * time.Millisecond})
	if rep.RoundsFailed != 0 || rep.Details[1].Statuses["200"] != 10 {
		t.Fatalf("report: %+v", rep)
	}
	_, err := race.Run(context.Background(), race.Config{URL: srv.URL, N: 2, Rounds: 1})
	if !errors.As(err, new(*race.ConnError)) {
		t.Errorf("untrusted certificate: err = %v, want a ConnError", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    race.Config
		want string
	}{
		{race.Config{URL: "ftp://x"}, "scheme must be http or https"},
		{race.Config{URL: "http:///path"}, "no host"},
		{race.Config{URL: "http://{{uuid}}.example/"}, "path and query only"},
		{race.Config{URL: "http://x", N: race.MaxN + 1}, "-n 10001: must be 1 to 10000"},
		{race.Config{URL: "http://x", N: -1}, "-n -1"},
		{race.Config{URL: "http://x", Rounds: -2}, "--rounds -2"},
		{race.Config{URL: "http://x", Method: "GE T"}, "-X"},
		{race.Config{URL: "http://x", Spread: -1}, "--spread"},
		{race.Config{URL: "http://x", Key: "each"}, `--key "each" is not same, unique or none`},
		{race.Config{URL: "http://x/{{nope}}"}, "unknown template {{nope}}"},
		{race.Config{URL: "http://x", Body: "{{Round}}"}, "-d: unknown template {{Round}}"},
		{race.Config{URL: "http://x", Header: []race.Header{{Name: "A", Value: "{{x}}"}}}, "-H A: unknown"},
		{race.Config{URL: "http://x", Expect: "{{i}}"}, "--expect: {{i}}"},
	} {
		err := tc.c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.c, err, tc.want)
		}
	}
	ok := race.Config{URL: "http://x/{{round}}", Body: `{"a":{"b":{}}} {{ not a template }}`}
	if err := ok.Validate(); err != nil || ok.N != 50 || ok.Rounds != 10 || ok.Method != "POST" || ok.Key != race.KeySame {
		t.Errorf("defaults: %v, %+v", err, ok)
	}
}

func TestParseHeader(t *testing.T) {
	for in, want := range map[string]race.Header{
		"content-type: application/json": {Name: "Content-Type", Value: "application/json"},
		"X-A:":                           {Name: "X-A", Value: ""},
		" X-B :  b: c ":                  {Name: "X-B", Value: "b: c"},
	} {
		if got, err := race.ParseHeader(in); err != nil || got != want {
			t.Errorf("ParseHeader(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"novalue", ": v", "a b: c", "A: \x01", "A\x00: b"} {
		if _, err := race.ParseHeader(in); err == nil {
			t.Errorf("ParseHeader(%q): no error", in)
		}
	}
}

func TestParseKeyMode(t *testing.T) {
	if m, err := race.ParseKeyMode("unique"); err != nil || m != race.KeyUnique {
		t.Errorf("unique: %v, %v", m, err)
	}
	if _, err := race.ParseKeyMode("Same"); err == nil {
		t.Error("Same: no error")
	}
}

func TestFireOneHostOnly(t *testing.T) {
	a, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
	b, _ := http.NewRequest("GET", "http://127.0.0.2:1/", nil)
	if _, err := race.Fire(context.Background(), []*http.Request{a, b}, race.FireOptions{}); err == nil || !strings.Contains(err.Error(), "a race talks to one host") {
		t.Fatalf("err = %v, want a refusal to talk to a second host", err)
	}
}

func TestFireSkipsInterimAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "once-race" {
			http.Error(w, "user agent "+r.Header.Get("User-Agent"), http.StatusBadRequest)
			return
		}
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "made")
	}))
	defer srv.Close()
	rep := MustRun(t, race.Config{URL: srv.URL, N: 3, Rounds: 1})
	if g := rep.Details[0].Answers; len(g) != 1 || g[0].Status != 201 || g[0].Body != "made" || g[0].Count != 3 {
		t.Fatalf("answers %+v, want 201 made ×3", g)
	}
}
