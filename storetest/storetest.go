// Package storetest is the conformance suite every once.Store passes. A store
// package calls Run (stores that keep time in Go and accept a clock) or
// RunServerClock (stores whose server decides every lease and retention) from
// its own tests.
package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// Factory returns a new store whose lease and retention decisions read clock.
// The suite calls it once per case and closes the store itself when the case
// ends (the factory may register its own cleanup as well). Stores may be shared
// with earlier runs: the suite never reuses a key.
type Factory func(tb testing.TB, clock once.Clock) once.Store

// FakeClock is a clock that moves only when told to. It is safe for
// concurrent use. The zero value is not usable; use NewFakeClock.
type FakeClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewFakeClock returns a FakeClock that reads start until advanced.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the clock's current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Clock returns c as a once.Clock.
func (c *FakeClock) Clock() once.Clock { return c.Now }

// Run runs the conformance suite against stores made by newStore, passing each
// a FakeClock that the suite advances to make leases and retentions pass.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
}

// RunServerClock runs the conformance suite against stores that take every
// time decision on their server (Redis TIME, PostgreSQL now()). Cases that
// depend on time use short real leases and sleep past them.
func RunServerClock(t *testing.T, newStore func(tb testing.TB) once.Store) {
	t.Helper()
}
