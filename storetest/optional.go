package storetest

import (
	"fmt"
	"maps"

	"github.com/oncehq/once"
)

// testList: a Lister lists exactly the live records of the scope.
func testList(f *fixture) {
	l, ok := f.s.(once.Lister)
	if !ok {
		f.Skip("the store does not implement once.Lister")
	}
	want := map[string]once.State{}
	for i, state := range []once.State{once.StateInProgress, once.StateCompleted, once.StateReleased, 0} {
		id := fmt.Sprintf("list-%d", i)
		f.makeState(id, state)
		if state != 0 {
			want[id] = state
		}
	}
	f.acquire(f.reqKey(once.Key{Scope: f.scope + "-other", ID: "list-other"}, ""), 0, 1)
	got := map[string]once.State{}
	err := l.List(f.ctx, f.scope, func(r once.Record) bool {
		if _, dup := got[r.Key.ID]; dup || r.Key.Scope != f.scope {
			f.Errorf("List: record %+v twice or from another scope", r.Key)
		}
		got[r.Key.ID] = r.State
		return true
	})
	if err != nil || !maps.Equal(got, want) {
		f.Errorf("List = %v, %v; want %v", got, err, want)
	}
	calls := 0
	err = l.List(f.ctx, f.scope, func(once.Record) bool { calls++; return false })
	if err != nil || calls != 1 {
		f.Errorf("List stopping after the first record: %d calls, %v; want 1, nil", calls, err)
	}
}

// makeState puts the record of id in state; 0 means deleted.
func (f *fixture) makeState(id string, state once.State) {
	f.Helper()
	k := f.key(id)
	t := f.acquire(f.reqKey(k, ""), 0, 1)
	switch state {
	case once.StateCompleted:
		f.complete(k, t, result("r"))
	case once.StateReleased:
		f.wantNil(f.s.Release(f.ctx, k, t), "Release")
	case 0:
		f.wantNil(f.s.Delete(f.ctx, k), "Delete")
	}
}

// testSweep: a Sweeper forgets purgeable records in bounded batches, and
// keeps the tombstones that are not purgeable yet.
func testSweep(f *fixture) {
	sw, ok := f.s.(once.Sweeper)
	if !ok {
		f.Skip("the store does not implement once.Sweeper")
	}
	u := f.h.unit
	const n = 25
	for i := range n {
		req := f.req(fmt.Sprintf("sweep-%d", i), "fp")
		req.Lease, req.Retention = u, u
		f.complete(req.Key, f.acquire(req, 0, 1), result("r"))
	}
	// Expires with the others but is purgeable only at 8u.
	kept := f.req("sweep-kept", "fp")
	kept.Lease, kept.Retention = 4*u, 4*u
	tk := f.acquire(kept, 0, 1)
	f.complete(kept.Key, tk, result("r"))
	f.pass(4 * u)
	swept := f.sweepAll(sw)
	if f.clock() != nil && swept != n {
		f.Errorf("Sweep forgot %d records in all, want the %d purgeable ones", swept, n)
	}
	_, err := f.s.Get(f.ctx, kept.Key)
	f.wantErr(err, once.ErrNotFound, "Get past retention")
	f.acquire(kept, tk, 1)
}

// sweepAll sweeps in batches of 10 until nothing is left (or, on a shared
// server that others keep filling, for a bounded number of batches).
func (f *fixture) sweepAll(sw once.Sweeper) int {
	f.Helper()
	total := 0
	var batches []int
	for range 40 {
		got, err := sw.Sweep(f.ctx, 10)
		if err != nil {
			f.Fatalf("Sweep(10): %v", err)
		}
		if got < 0 || got > 10 {
			f.Fatalf("Sweep(10) = %d, want at most 10", got)
		}
		total += got
		batches = append(batches, got)
		if got == 0 {
			return total
		}
	}
	if f.clock() != nil {
		f.Errorf("Sweep(10) never ran out: batches %v", batches)
	}
	return total
}
