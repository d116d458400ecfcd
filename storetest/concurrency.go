package storetest

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/oncehq/once"
)

// workers is how many goroutines the concurrency cases release at once.
const workers = 200

// together runs fn(i) for i in [0, n) on n goroutines released at once by a
// barrier, and waits for them.
func together(n int, fn func(i int)) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
}

func testConcurrentClaimOneKey(f *fixture) {
	req := f.req("contended", "fp")
	var outcomes [once.Mismatch + 1]atomic.Int32
	var winner atomic.Uint64
	together(workers, func(int) {
		cr, err := f.s.Claim(f.ctx, req)
		if err != nil {
			f.Errorf("Claim: %v", err)
			return
		}
		outcomes[min(cr.Outcome, once.Mismatch)].Add(1)
		if cr.Outcome == once.Acquired {
			winner.Store(cr.Token)
		}
	})
	if a, ip := outcomes[once.Acquired].Load(), outcomes[once.InProgress].Load(); a != 1 || ip != workers-1 {
		f.Fatalf("%d concurrent claims of one key: %d acquired, %d in progress; want 1 and %d", workers, a, ip, workers-1)
	}
	f.checkHeld(f.get(req.Key), req.Key, winner.Load(), 1)
}

func testConcurrentClaimManyKeys(f *fixture) {
	var acquired atomic.Int32
	together(workers, func(i int) {
		cr, err := f.s.Claim(f.ctx, f.req(fmt.Sprintf("many-%d", i), "fp"))
		if err != nil {
			f.Errorf("Claim: %v", err)
			return
		}
		if cr.Outcome == once.Acquired {
			acquired.Add(1)
		}
	})
	if n := acquired.Load(); n != workers {
		f.Fatalf("%d concurrent claims of distinct keys: %d acquired, want all", workers, n)
	}
}

// testConcurrentComplete: among completions with distinct results by the same
// holder, exactly one wins and its result is the one kept.
func testConcurrentComplete(f *fixture) {
	req := f.req("complete-race", "fp")
	t := f.acquire(req, 0, 1)
	var wins atomic.Int32
	var won atomic.Int64
	together(workers/4, func(i int) {
		err := f.s.Complete(f.ctx, req.Key, t, result(fmt.Sprint(i)))
		switch {
		case err == nil:
			wins.Add(1)
			won.Store(int64(i))
		case !isFenced(err):
			f.Errorf("Complete: %v", err)
		}
	})
	if n := wins.Load(); n != 1 {
		f.Fatalf("%d concurrent completions with distinct results: %d succeeded, want 1", workers/4, n)
	}
	f.checkCompleted(f.get(req.Key), t, result(fmt.Sprint(won.Load())))
}

// testConcurrentAdvance: every version from 1 to workers, twice each, at once.
func testConcurrentAdvance(f *fixture) {
	var applied [workers + 1]atomic.Int32
	var bad atomic.Int32
	together(2*workers, func(i int) {
		v := uint64(i%workers + 1)
		ok, cur, err := f.s.Advance(f.ctx, f.scope, "entity", v)
		if err != nil {
			f.Errorf("Advance(%d): %v", v, err)
			return
		}
		if ok {
			applied[v].Add(1)
		}
		// Applied: v is now current. Not applied: something at least v is.
		if (ok && cur != v) || (!ok && cur < v) {
			bad.Add(1)
			f.Errorf("Advance(%d) = %v, %d: inconsistent", v, ok, cur)
		}
	})
	for v := 1; v <= workers; v++ {
		if n := applied[v].Load(); n > 1 {
			f.Errorf("version %d applied %d times, want at most once", v, n)
		}
	}
	if applied[workers].Load() != 1 {
		f.Errorf("the largest version %d was not applied", workers)
	}
	f.wantAdvance(f.scope, "entity", workers, false, workers)
}
