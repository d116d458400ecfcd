// Package oncetest makes a race condition fail on demand in a Go test, and
// asserts that an effect happened exactly once.
//
// The first step with a race is always to reproduce it: start many calls at
// the same instant and count the effects. Race does that for any function,
// RaceHTTP for an http.Handler or a live URL, and ExactlyOnce and SameAnswer
// state the invariant:
//
//	func TestSignupIsIdempotent(t *testing.T) {
//		var created atomic.Int64
//		oncetest.Race(t, 100, func(i int) error {
//			return signup(ctx, "ann@example.com", &created)
//		})
//		oncetest.ExactlyOnce(t, &created)
//	}
//
// Run such tests with -race, and more than once (-count=20): a race that
// passes once proves little.
package oncetest

import (
	"errors"
	"fmt"
	"sync"
)

// TB is the part of testing.TB that oncetest uses. *testing.T and
// *testing.B satisfy it; so may a type of yours, to use oncetest outside a
// test.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Errors holds what each call of a race returned: Errors[i] is call i's
// error, nil when it succeeded.
type Errors []error

// Count returns how many calls failed.
func (e Errors) Count() int {
	n := 0
	for _, err := range e {
		if err != nil {
			n++
		}
	}
	return n
}

// Err joins the errors (errors.Join), or returns nil when no call failed.
func (e Errors) Err() error { return errors.Join(e...) }

// Race calls fn(0) … fn(n-1), each in a goroutine of its own, and returns
// their errors. It starts all the goroutines first and holds them at a
// barrier, then releases them together, so that the calls really overlap:
// a sequential loop, or goroutines started one by one, seldom hit the window
// of a check-then-act. A panic in fn is returned as call i's error.
//
// fn must not call tb.Fatalf (or t.FailNow): it runs in another goroutine.
// Race calls tb.Fatalf if n < 1.
func Race(tb TB, n int, fn func(i int) error) Errors {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("oncetest.Race: n = %d, want at least 1", n)
		return nil
	}
	errs := make(Errors, n)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			errs[i] = call(fn, i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

func call(fn func(int) error, i int) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("oncetest: call %d panicked: %v", i, p)
		}
	}()
	return fn(i)
}

// Barrier holds the goroutines that call Wait until n of them have. Put one
// between the check and the act of a check-then-act to force the worst
// interleaving, every time: every caller checks before any acts. It is for
// one use, and safe for concurrent use.
type Barrier struct {
	mu      sync.Mutex
	n       int
	arrived int
	open    chan struct{}
}

// NewBarrier returns a barrier for n goroutines.
func NewBarrier(n int) *Barrier {
	return &Barrier{n: n, open: make(chan struct{})}
}

// Wait blocks until n goroutines have called it. Every goroutine of the race
// must reach it, also on its error path, or the others wait forever.
func (b *Barrier) Wait() {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.open)
	}
	b.mu.Unlock()
	<-b.open
}
