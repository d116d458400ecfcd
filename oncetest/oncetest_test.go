package oncetest_test

import (
	"errors"
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

	"github.com/oncehq/once/oncetest"
	"github.com/oncehq/once/race/racetest"
)

// fakeTB records what oncetest reports, to test the reports themselves.
type fakeTB struct {
	errors []string
	fatal  string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }

// TestRaceOverlaps proves the barrier: every call waits inside fn until all
// n are inside at once, and fails if that takes too long.
func TestRaceOverlaps(t *testing.T) {
	const n = 500
	var inside atomic.Int64
	all := make(chan struct{})
	errs := oncetest.Race(t, n, func(i int) error {
		if inside.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			return errors.New("alone")
		}
		if i%2 == 1 {
			return fmt.Errorf("odd %d", i)
		}
		return nil
	})
	if len(errs) != n || errs.Count() != n/2 {
		t.Fatalf("%d results, %d errors; want %d, %d (first: %v)", len(errs), errs.Count(), n, n/2, errs.Err())
	}
	for i, err := range errs {
		if (err != nil) != (i%2 == 1) || (err != nil && err.Error() != fmt.Sprintf("odd %d", i)) {
			t.Fatalf("errs[%d] = %v", i, err)
		}
	}
}

func TestRacePanicsAndBadN(t *testing.T) {
	errs := oncetest.Race(t, 3, func(i int) error {
		if i == 2 {
			panic("boom")
		}
		return nil
	})
	if errs[2] == nil || !strings.Contains(errs[2].Error(), "call 2 panicked: boom") || errs.Count() != 1 {
		t.Errorf("errs = %v", errs)
	}
	if oncetest.Race(t, 1, func(int) error { return nil }).Err() != nil {
		t.Error("Err of no failure is not nil")
	}
	var f fakeTB
	oncetest.Race(&f, 0, func(int) error { t.Error("called"); return nil })
	if !strings.Contains(f.fatal, "n = 0") {
		t.Errorf("n = 0: fatal %q", f.fatal)
	}
}

func TestBarrier(t *testing.T) {
	const n = 50
	var checked, acted atomic.Int64
	b := oncetest.NewBarrier(n)
	errs := oncetest.Race(t, n, func(int) error {
		checked.Add(1)
		b.Wait()
		if checked.Load() != n { // every check came before any act
			return errors.New("acted before all checked")
		}
		acted.Add(1)
		return nil
	})
	if errs.Err() != nil || acted.Load() != n {
		t.Errorf("%d acted, want %d: %v", acted.Load(), n, errs.Err())
	}
}

// upsert is seed 000 fixed: check and insert under one lock.
type upsert struct {
	mu    sync.Mutex
	users map[string]int
}

func (u *upsert) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	id, ok := u.users[string(b)]
	if !ok {
		id = len(u.users) + 1
		u.users[string(b)] = id
	}
	u.mu.Unlock()
	if ok {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	fmt.Fprintf(w, `{"id":%d}`, id)
}

func post(body string) *http.Request {
	return httptest.NewRequest(http.MethodPost, "/users", strings.NewReader(body))
}

func TestRaceHTTPTargets(t *testing.T) {
	h := &upsert{users: map[string]int{}}
	plain := httptest.NewServer(h)
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(h)
	defer tlsSrv.Close()
	u, _ := url.Parse(plain.URL + "/ignored")
	for name, target := range map[string]any{
		"handler": h, "string": plain.URL, "url": u, "server": plain, "tls server": tlsSrv,
	} {
		t.Run(name, func(t *testing.T) {
			email := `{"email":"` + name + `"}`
			a := oncetest.RaceHTTP(t, target, 40, post(email))
			if a.N != 40 || len(a.Groups) != 1 || a.Count(200) != 40 || a.Replayed() != 39 || len(a.Errors) != 0 {
				t.Fatalf("answers:\n%v (N %d, replayed %d)", a, a.N, a.Replayed())
			}
			oncetest.SameAnswer(t, a)
		})
	}
}

func TestRaceHTTPFindsTheRace(t *testing.T) {
	users := racetest.NewUsers(5 * time.Second)
	a := oncetest.RaceHTTP(t, users, 20, post(`{"email":"ann@example.com"}`))
	if a.Count(201) < 2 || a.Distinct2xx() < 2 || users.Count("ann@example.com") < 2 {
		t.Fatalf("no duplicate found:\n%v", a)
	}
	var f fakeTB
	if oncetest.SameAnswer(&f, a) || len(f.errors) != 1 || !strings.Contains(f.errors[0], "different 2xx answers to 20 identical requests") {
		t.Errorf("SameAnswer reported %q", f.errors)
	}
}

func TestRaceHTTPBadTargets(t *testing.T) {
	for _, target := range []any{42, "ftp://x", "http://127.0.0.1:1/"} {
		var f fakeTB
		oncetest.RaceHTTP(&f, target, 2, post("{}"))
		if f.fatal == "" {
			t.Errorf("%v: no fatal error", target)
		}
	}
}

func TestExactlyOnce(t *testing.T) {
	var i64 atomic.Int64
	var u32 atomic.Uint32
	i64.Store(1)
	u32.Store(1)
	if !oncetest.ExactlyOnce(t, &i64) || !oncetest.ExactlyOnce(t, &u32) || !oncetest.ExactlyOnce(t, oncetest.CountFunc(func() int64 { return 1 })) {
		t.Fatal("a count of 1 failed")
	}
	var f fakeTB
	i64.Store(3)
	if oncetest.ExactlyOnce(&f, &i64) || len(f.errors) != 1 || f.errors[0] != "the effect happened 3 times, want exactly 1" {
		t.Errorf("3: %q", f.errors)
	}
	if !oncetest.Exactly(t, &i64, 3) {
		t.Error("Exactly 3 failed")
	}
}
