package oncetest_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oncehq/once/oncetest"
	"github.com/oncehq/once/race/racetest"
)

// t stands in for the *testing.T of a real test, so that these examples run:
// a failed assertion prints instead of failing, and Fatalf panics.
var t = exampleT{}

type exampleT struct{}

func (exampleT) Helper()                           {}
func (exampleT) Errorf(format string, args ...any) { fmt.Printf("FAIL: "+format+"\n", args...) }
func (exampleT) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

var errPaid = errors.New("already paid")

// Fifty payments of one order start at the same instant; the check and the
// act share one lock, so exactly one charges.
func ExampleRace() {
	var (
		mu      sync.Mutex
		paid    = map[string]bool{}
		charges atomic.Int64
	)
	pay := func(order string) error {
		mu.Lock()
		defer mu.Unlock()
		if paid[order] {
			return errPaid
		}
		paid[order] = true
		charges.Add(1)
		return nil
	}

	errs := oncetest.Race(t, 50, func(i int) error { return pay("order-1") })
	fmt.Println(charges.Load(), "charge,", errs.Count(), "refused")
	oncetest.ExactlyOnce(t, &charges)
	// Output: 1 charge, 49 refused
}

// Seed 000: an endpoint that checks whether the user exists, then inserts.
// Ten identical requests at once create the user more than once.
func ExampleRaceHTTP() {
	users := racetest.NewUsers(time.Second) // check-then-insert
	req := httptest.NewRequest("POST", "/users", strings.NewReader(`{"email":"ann@example.com"}`))

	answers := oncetest.RaceHTTP(t, users, 10, req)
	fmt.Println("ann created more than once:", users.Count("ann@example.com") > 1)
	fmt.Println("different answers to one request:", answers.Distinct2xx() > 1)
	// Output:
	// ann created more than once: true
	// different answers to one request: true
}

// The fix of seed 000 as an HTTP handler: find-or-create under one lock (in a
// database: a unique constraint). Every request gets the same answer.
func ExampleSameAnswer() {
	var (
		mu    sync.Mutex
		users = map[string]int{}
	)
	create := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		email, _ := io.ReadAll(r.Body)
		mu.Lock()
		id, ok := users[string(email)]
		if !ok {
			id = len(users) + 1
			users[string(email)] = id
		}
		mu.Unlock()
		fmt.Fprintf(w, `{"id":%d}`, id)
	})
	req := httptest.NewRequest("POST", "/users", strings.NewReader("ann@example.com"))

	answers := oncetest.RaceHTTP(t, create, 10, req)
	oncetest.SameAnswer(t, answers)
	fmt.Print(answers)
	// Output: 200 ×10 {"id":1}
}

// Any count can be asserted: a counter of sync/atomic, or a function such as
// a SQL count(*).
func ExampleExactlyOnce() {
	var emails atomic.Int32
	var once sync.Once
	oncetest.Race(t, 20, func(int) error {
		once.Do(func() { emails.Add(1) })
		return nil
	})
	fmt.Println(oncetest.ExactlyOnce(t, &emails))
	// Output: true
}
