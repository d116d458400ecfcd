// Package racetest provides an HTTP endpoint with a known race condition, to
// test race and the tools built on it: seed 000's user creation, where two
// requests for one email both pass "does it exist?" before either inserts.
package racetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// User is a row of Users.
type User struct {
	ID    int    `json:"id"`
	Email string `json:"email"`
}

// Users serves POST {"email": "..."}: it answers 200 and the existing user
// when one has the email, and otherwise inserts one and answers 201. It
// checks and inserts in two steps, like the code in seed 000, and holds the
// window between them open until a second request for the same email has
// passed the check too, or the window given to NewUsers has passed. So whenever two requests for
// one email overlap, both insert: the race happens every time instead of
// once in a thousand, and a lone request costs the window.
//
// The zero value is not usable; call NewUsers. It is safe for concurrent use.
type Users struct {
	gate   *Gate
	mu     sync.Mutex
	rows   []User
	posted int
}

// NewUsers returns an empty Users whose window is window.
func NewUsers(window time.Duration) *Users {
	return &Users{gate: NewGate(window)}
}

// ServeHTTP finds or creates the user named by the request, racily.
func (u *Users) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Email string `json:"email"`
	}
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Email == "" {
		http.Error(w, `want {"email": "..."}`, http.StatusBadRequest)
		return
	}
	u.count()
	if user, ok := u.find(in.Email); ok {
		writeJSON(w, http.StatusOK, user)
		return
	}
	u.gate.Wait(in.Email) // the bug: the check above is stale by now
	writeJSON(w, http.StatusCreated, u.insert(in.Email))
}

func (u *Users) count() {
	u.mu.Lock()
	u.posted++
	u.mu.Unlock()
}

// find is the check of check-then-insert.
func (u *Users) find(email string) (User, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, row := range u.rows {
		if row.Email == email {
			return row, true
		}
	}
	return User{}, false
}

// insert is the insert of check-then-insert: it never looks again.
func (u *Users) insert(email string) User {
	u.mu.Lock()
	defer u.mu.Unlock()
	user := User{ID: len(u.rows) + 1, Email: email}
	u.rows = append(u.rows, user)
	return user
}

// Count returns how many users have email: 1 is right, more is the bug.
func (u *Users) Count(email string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, row := range u.rows {
		if row.Email == email {
			n++
		}
	}
	return n
}

// Posted returns how many well-formed requests reached the endpoint.
func (u *Users) Posted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.posted
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "%s\n", b)
}

// Gate holds a request in the window of a check-then-act until a second
// request for the same key is in it too, or a timeout passes. Put in that
// window, it makes a race that needs two overlapping requests happen every
// time they overlap, while a lone request only waits. It remembers every
// key, as tests do not run long. It is safe for concurrent use; the zero
// value is not usable.
type Gate struct {
	timeout time.Duration
	mu      sync.Mutex
	keys    map[string]*gateKey
}

type gateKey struct {
	arrived int
	open    chan struct{}
}

// NewGate returns a gate whose waiters give up after timeout.
func NewGate(timeout time.Duration) *Gate {
	return &Gate{timeout: timeout, keys: map[string]*gateKey{}}
}

// Wait returns when a second caller has waited for key, or after the
// gate's timeout.
func (g *Gate) Wait(key string) {
	g.mu.Lock()
	k := g.keys[key]
	if k == nil {
		k = &gateKey{open: make(chan struct{})}
		g.keys[key] = k
	}
	k.arrived++
	if k.arrived == 2 {
		close(k.open)
	}
	g.mu.Unlock()
	t := time.NewTimer(g.timeout)
	defer t.Stop()
	select {
	case <-k.open:
	case <-t.C:
	}
}
