// Package storetest is the conformance suite every once.Store passes. A store
// package calls Run (stores that keep time in Go and accept a clock) or
// RunServerClock (stores whose server decides every lease and retention) from
// its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(tb testing.TB, clock once.Clock) once.Store {
//			return memstore.New(memstore.Config{Clock: clock})
//		})
//	}
//
// Every case uses keys in a scope of its own, drawn at random, so stores
// backed by a shared server need not be emptied between cases or runs.
package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// Factory returns a new, empty store whose lease and retention decisions read
// clock. The suite calls it once per case and closes the store when the case
// ends, so the factory must not close it itself; it may register cleanups for
// other resources (a temporary directory, say) with tb.Cleanup.
type Factory func(tb testing.TB, clock once.Clock) once.Store

// ServerFactory returns a store that takes every time decision with its
// server's clock. The store may share its backing server with other cases and
// earlier runs. The suite closes the store when the case ends.
type ServerFactory func(tb testing.TB) once.Store

// FakeClock is a clock that moves only when told to. It is safe for
// concurrent use. Use NewFakeClock to make one.
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

// fakeStart is where each case's FakeClock starts: a whole second, so that
// stores keeping coarser timestamps still compare equal.
var fakeStart = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

// Run runs the conformance suite against stores made by newStore, passing each
// a FakeClock that the suite advances to make leases and retentions pass.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	runSuite(t, &harness{
		unit: 10 * time.Second,
		long: time.Hour,
		open: func(tb testing.TB) (once.Store, timer) {
			c := NewFakeClock(fakeStart)
			return newStore(tb, c.Clock()), fakeTimer{c}
		},
	})
}

// RunServerClock runs the conformance suite against stores that take every
// time decision on their server (Redis TIME, PostgreSQL now()). Cases that
// depend on time use real leases of a few hundred milliseconds, sleep past
// them with a margin, and run in parallel with each other.
func RunServerClock(t *testing.T, newStore ServerFactory) {
	t.Helper()
	runSuite(t, &harness{
		unit:     200 * time.Millisecond,
		long:     2 * time.Minute,
		parallel: true,
		open: func(tb testing.TB) (once.Store, timer) {
			return newStore(tb), sleepTimer{slack: 150 * time.Millisecond}
		},
	})
}

// timer lets time pass on a store's clock.
type timer interface {
	// pass makes at least d pass on the store's clock.
	pass(d time.Duration)
	// fake returns the store's clock when the suite controls it, else nil.
	fake() *FakeClock
}

type fakeTimer struct{ c *FakeClock }

func (f fakeTimer) pass(d time.Duration) { f.c.Advance(d) }
func (f fakeTimer) fake() *FakeClock     { return f.c }

// sleepTimer waits on the wall clock, plus slack for the server's clock and
// the round trips around the sleep.
type sleepTimer struct{ slack time.Duration }

func (s sleepTimer) pass(d time.Duration) { time.Sleep(d + s.slack) }
func (s sleepTimer) fake() *FakeClock     { return nil }

// harness is what differs between Run and RunServerClock.
type harness struct {
	open func(tb testing.TB) (once.Store, timer)
	// unit is the short lease of the cases that let time pass.
	unit time.Duration
	// long is a lease or retention that does not pass during a case.
	long time.Duration
	// parallel runs the cases that let time pass in parallel.
	parallel bool
}

// testCase is one case of the suite.
type testCase struct {
	name string
	// timed cases let time pass; with a server clock they sleep.
	timed bool
	run   func(f *fixture)
}

func runSuite(t *testing.T, h *harness) {
	t.Helper()
	for _, c := range cases {
		if !c.timed {
			t.Run(c.name, func(t *testing.T) { c.run(newFixture(t, h)) })
		}
	}
	// The timed cases run in a group of their own so that, with a server
	// clock, their sleeps overlap each other but not the other cases.
	t.Run("Time", func(t *testing.T) {
		for _, c := range cases {
			if c.timed {
				t.Run(c.name, func(t *testing.T) {
					if h.parallel {
						t.Parallel()
					}
					c.run(newFixture(t, h))
				})
			}
		}
	})
}

var cases = []testCase{
	{name: "ClaimFresh", run: testClaimFresh},
	{name: "ClaimInProgress", run: testClaimInProgress},
	{name: "ClaimCompleted", run: testClaimCompleted},
	{name: "ClaimAbandonedReject", timed: true, run: testClaimAbandonedReject},
	{name: "ClaimAbandonedRetry", timed: true, run: testClaimAbandonedRetry},
	{name: "TakeoverKeepsFingerprint", timed: true, run: testTakeoverKeepsFingerprint},
	{name: "MismatchInProgress", run: testMismatchInProgress},
	{name: "MismatchCompleted", run: testMismatchCompleted},
	{name: "MismatchAbandoned", timed: true, run: testMismatchAbandoned},
	{name: "MismatchReleased", run: testMismatchReleased},
	{name: "EmptyFingerprintOptsOut", run: testEmptyFingerprint},
	{name: "CompleteFenced", run: testCompleteFenced},
	{name: "CompleteEqualResults", run: testCompleteEqualResults},
	{name: "CompleteAfterTakeover", timed: true, run: testCompleteAfterTakeover},
	{name: "CompleteAfterLeasePassed", timed: true, run: testCompleteAfterLeasePassed},
	{name: "Release", run: testRelease},
	{name: "ReleaseAfterLeasePassed", timed: true, run: testReleaseAfterLeasePassed},
	{name: "ExtendRenews", timed: true, run: testExtendRenews},
	{name: "ExtendFenced", run: testExtendFenced},
	{name: "ExtendAfterLeasePassed", timed: true, run: testExtendAfterLeasePassed},
	{name: "ExtendAfterTakeover", timed: true, run: testExtendAfterTakeover},
	{name: "GetNotFound", run: testGetNotFound},
	{name: "GetFields", run: testGetFields},
	{name: "Delete", run: testDelete},
	{name: "DeleteInProgress", run: testDeleteInProgress},
	{name: "DeleteKeepsTombstone", timed: true, run: testDeleteKeepsTombstone},
	{name: "ShortClaimKeepsTombstone", timed: true, run: testShortClaimKeepsTombstone},
	{name: "RetentionExpiry", timed: true, run: testRetentionExpiry},
	{name: "ScopesIndependent", run: testScopesIndependent},
	{name: "InvalidKey", run: testInvalidKey},
	{name: "ValidKeyEdges", run: testValidKeyEdges},
	{name: "InvalidArgument", run: testInvalidArgument},
	{name: "LargeResult", run: testLargeResult},
	{name: "ResultMetaBytes", run: testResultMetaBytes},
	{name: "ResultsCopied", run: testResultsCopied},
	{name: "Advance", run: testAdvance},
	{name: "Close", run: testClose},
	{name: "ConcurrentClaimOneKey", run: testConcurrentClaimOneKey},
	{name: "ConcurrentClaimManyKeys", run: testConcurrentClaimManyKeys},
	{name: "ConcurrentComplete", run: testConcurrentComplete},
	{name: "ConcurrentAdvance", run: testConcurrentAdvance},
	{name: "List", run: testList},
	{name: "Sweep", timed: true, run: testSweep},
	{name: "Linearizable", run: testLinearizable},
	{name: "AdvanceLinearizable", run: testAdvanceLinearizable},
}
