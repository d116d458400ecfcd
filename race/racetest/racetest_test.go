package racetest_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once/race/racetest"
)

func TestGate(t *testing.T) {
	g := racetest.NewGate(10 * time.Second)
	var wg sync.WaitGroup
	began := time.Now()
	for range 2 {
		wg.Go(func() { g.Wait("k") })
	}
	wg.Wait()
	if time.Since(began) > 5*time.Second {
		t.Error("two waiters did not open the gate")
	}
	lone := racetest.NewGate(50 * time.Millisecond)
	began = time.Now()
	lone.Wait("k")
	if time.Since(began) < 50*time.Millisecond {
		t.Error("a lone waiter did not wait for the timeout")
	}
}

func TestUsers(t *testing.T) {
	u := racetest.NewUsers(10 * time.Millisecond)
	post := func(method, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		u.ServeHTTP(rec, httptest.NewRequest(method, "/users", strings.NewReader(body)))
		return rec
	}
	if rec := post("POST", `{"email":"a@x"}`); rec.Code != http.StatusCreated || rec.Body.String() != "{\"id\":1,\"email\":\"a@x\"}\n" {
		t.Errorf("create: %d %q", rec.Code, rec.Body)
	}
	if rec := post("POST", `{"email":"a@x"}`); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":1`) {
		t.Errorf("existing: %d %q", rec.Code, rec.Body)
	}
	if post("GET", "").Code != http.StatusMethodNotAllowed || post("POST", "{").Code != http.StatusBadRequest {
		t.Error("bad requests accepted")
	}
	if u.Count("a@x") != 1 || u.Posted() != 2 {
		t.Errorf("count %d, posted %d; want 1, 2", u.Count("a@x"), u.Posted())
	}
}
