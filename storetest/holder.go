package storetest

import (
	"fmt"

	"github.com/oncehq/once"
)

func testCompleteFenced(f *fixture) {
	req := f.req("complete", "fp")
	t := f.acquire(req, 0, 1)
	k := req.Key
	for _, bad := range []uint64{0, t - 1, t + 1, t + 1000} {
		if bad == t {
			continue
		}
		f.wantErr(f.s.Complete(f.ctx, k, bad, result("x")), once.ErrFenced, fmt.Sprintf("Complete(token %d) while %d holds", bad, t))
	}
	f.checkHeld(f.get(k), k, t, 1)
	res := result("first")
	f.complete(k, t, res)
	f.wantNil(f.s.Complete(f.ctx, k, t, result("first")), "Complete repeated with an equal result")
	f.wantErr(f.s.Complete(f.ctx, k, t, result("second")), once.ErrFenced, "Complete repeated with another result")
	f.wantErr(f.s.Complete(f.ctx, k, t+1, res), once.ErrFenced, "Complete(another token) on a completed record")
	f.checkCompleted(f.get(k), t, res)
	f.checkNow(f.get(k).CompletedAt, "CompletedAt")
	f.wantErr(f.s.Complete(f.ctx, f.key("never-claimed"), 1, res), once.ErrFenced, "Complete on a key never claimed")
}

// testCompleteEqualResults: nil and empty data or metadata are equal results.
func testCompleteEqualResults(f *fixture) {
	k := f.key("equal-results")
	t := f.acquire(f.reqKey(k, ""), 0, 1)
	f.complete(k, t, once.Result{})
	empty := once.Result{Data: []byte{}, Meta: map[string]string{}}
	f.wantNil(f.s.Complete(f.ctx, k, t, empty), "Complete(empty result) after Complete(zero result)")
	f.wantErr(f.s.Complete(f.ctx, k, t, once.Result{Data: []byte{0}}), once.ErrFenced, "Complete(one zero byte) after Complete(zero result)")
	r := f.get(k)
	if len(r.Result.Data) != 0 || len(r.Result.Meta) != 0 {
		f.Errorf("stored result %s, want empty", describeResult(r.Result))
	}
}

func testCompleteAfterTakeover(f *fixture) {
	req := f.req("complete-takeover", "fp")
	t := f.abandon(req)
	t2 := f.acquire(retry(req), t, 2)
	f.wantErr(f.s.Complete(f.ctx, req.Key, t, result("old")), once.ErrFenced, "Complete(old token) after a takeover")
	f.checkHeld(f.get(req.Key), req.Key, t2, 2)
	f.complete(req.Key, t2, result("new"))
	f.wantErr(f.s.Complete(f.ctx, req.Key, t, result("new")), once.ErrFenced, "Complete(old token) after the new holder completed")
	f.checkCompleted(f.get(req.Key), t2, result("new"))
}

// testCompleteAfterLeasePassed: a holder whose lease passed but whom nobody
// took over still holds the key.
func testCompleteAfterLeasePassed(f *fixture) {
	req := f.req("complete-late", "fp")
	t := f.abandon(req)
	f.complete(req.Key, t, result("late"))
	f.checkCompleted(f.claimWant(req, once.Completed).Record, t, result("late"))
}

func testRelease(f *fixture) {
	req := f.req("release", "fp")
	k := req.Key
	t := f.acquire(req, 0, 1)
	f.wantErr(f.s.Release(f.ctx, k, t+1), once.ErrFenced, "Release(another token)")
	f.wantNil(f.s.Release(f.ctx, k, t), "Release")
	f.wantNil(f.s.Release(f.ctx, k, t), "Release repeated")
	if r := f.get(k); r.State != once.StateReleased || r.Token != t {
		f.Errorf("after Release, record %s, want released token %d", describe(r), t)
	}
	f.wantErr(f.s.Complete(f.ctx, k, t, result("x")), once.ErrFenced, "Complete after Release")
	f.wantErr(f.s.Extend(f.ctx, k, t, f.h.long), once.ErrFenced, "Extend after Release")
	t2 := f.acquire(req, t, 2)
	f.wantErr(f.s.Release(f.ctx, k, t), once.ErrFenced, "Release(stale token) after a new claim")
	f.complete(k, t2, result("done"))
	f.wantErr(f.s.Release(f.ctx, k, t2), once.ErrFenced, "Release of a completed record")
	f.checkCompleted(f.get(k), t2, result("done"))
	f.wantErr(f.s.Release(f.ctx, f.key("never-claimed"), 1), once.ErrFenced, "Release on a key never claimed")
}

func testReleaseAfterLeasePassed(f *fixture) {
	req := f.req("release-late", "fp")
	t := f.abandon(req)
	f.wantNil(f.s.Release(f.ctx, req.Key, t), "Release after the lease passed")
	// Released, not abandoned: even the reject policy acquires it.
	f.acquire(req, t, 2)
}

func testExtendRenews(f *fixture) {
	u := f.h.unit
	req := f.req("extend", "fp")
	req.Lease, req.Retention = u, u
	t := f.acquire(req, 0, 1)
	f.wantNil(f.s.Extend(f.ctx, req.Key, t, 5*u), "Extend")
	r := f.get(req.Key)
	if r.Lease != 5*u || r.LeaseExpiresAt.Sub(r.UpdatedAt) != 5*u || r.ExpiresAt.Before(r.LeaseExpiresAt) {
		f.Errorf("after Extend(5×%v): Lease %v, LeaseExpiresAt UpdatedAt+%v, ExpiresAt %v before LeaseExpiresAt %v",
			u, r.Lease, r.LeaseExpiresAt.Sub(r.UpdatedAt), r.ExpiresAt, r.LeaseExpiresAt)
	}
	f.checkNow(r.UpdatedAt, "UpdatedAt")
	// Past the first lease and the first retention: the extension holds both.
	f.pass(2 * u)
	cr := f.claimWant(req, once.InProgress)
	if cr.RetryAfter <= 0 || cr.RetryAfter > 3*u {
		f.Errorf("RetryAfter %v two units into a five-unit lease, want in (0, %v]", cr.RetryAfter, 3*u)
	}
	if f.clock() != nil && cr.RetryAfter != 3*u {
		f.Errorf("RetryAfter %v, want exactly %v", cr.RetryAfter, 3*u)
	}
	f.checkHeld(f.get(req.Key), req.Key, t, 1)
}

func testExtendFenced(f *fixture) {
	req := f.req("extend-fenced", "fp")
	k := req.Key
	t := f.acquire(req, 0, 1)
	f.wantErr(f.s.Extend(f.ctx, k, t+1, f.h.long), once.ErrFenced, "Extend(another token)")
	f.wantErr(f.s.Extend(f.ctx, k, t-1, f.h.long), once.ErrFenced, "Extend(an older token)")
	f.wantNil(f.s.Release(f.ctx, k, t), "Release")
	f.wantErr(f.s.Extend(f.ctx, k, t, f.h.long), once.ErrFenced, "Extend after Release")
	t2 := f.acquire(req, t, 2)
	f.wantErr(f.s.Extend(f.ctx, k, t, f.h.long), once.ErrFenced, "Extend(stale token)")
	f.complete(k, t2, result("r"))
	f.wantErr(f.s.Extend(f.ctx, k, t2, f.h.long), once.ErrFenced, "Extend of a completed record")
	f.wantErr(f.s.Extend(f.ctx, f.key("never-claimed"), 1, f.h.long), once.ErrFenced, "Extend on a key never claimed")
}

func testExtendAfterLeasePassed(f *fixture) {
	req := f.req("extend-late", "fp")
	t := f.abandon(req)
	f.wantNil(f.s.Extend(f.ctx, req.Key, t, f.h.long), "Extend after the lease passed")
	f.claimWant(req, once.InProgress)
	f.claimWant(retry(req), once.InProgress)
}

func testExtendAfterTakeover(f *fixture) {
	req := f.req("extend-takeover", "fp")
	t := f.abandon(req)
	t2 := f.acquire(retry(req), t, 2)
	f.wantErr(f.s.Extend(f.ctx, req.Key, t, f.h.long), once.ErrFenced, "Extend(old token) after a takeover")
	f.wantErr(f.s.Release(f.ctx, req.Key, t), once.ErrFenced, "Release(old token) after a takeover")
	f.checkHeld(f.get(req.Key), req.Key, t2, 2)
}
