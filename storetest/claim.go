package storetest

import (
	"bytes"
	"time"

	"github.com/oncehq/once"
)

func testClaimFresh(f *fixture) {
	req := f.req("fresh", "fp-a")
	f.acquire(req, 0, 1)
	// A retention shorter than the lease is raised to the lease (checked by
	// acquire through ExpiresAt).
	short := f.req("short-retention", "")
	short.Retention = time.Second
	f.acquire(short, 0, 1)
}

func testClaimInProgress(f *fixture) {
	req := f.req("in-progress", "fp-a")
	t := f.acquire(req, 0, 1)
	for _, r := range []once.ClaimRequest{req, retry(req)} {
		cr := f.claimWant(r, once.InProgress)
		if cr.RetryAfter <= 0 || cr.RetryAfter > req.Lease {
			f.Errorf("InProgress RetryAfter %v, want in (0, %v]", cr.RetryAfter, req.Lease)
		}
		f.checkHeld(cr.Record, req.Key, t, 1)
	}
	c := f.clock()
	if c == nil {
		return
	}
	if cr := f.claim(req); cr.RetryAfter != req.Lease {
		f.Errorf("RetryAfter %v with the clock standing still, want the whole lease %v", cr.RetryAfter, req.Lease)
	}
	c.Advance(req.Lease / 4)
	if cr := f.claimWant(req, once.InProgress); cr.RetryAfter != req.Lease-req.Lease/4 {
		f.Errorf("RetryAfter %v after a quarter of the lease, want %v", cr.RetryAfter, req.Lease-req.Lease/4)
	}
}

func testClaimCompleted(f *fixture) {
	req := f.req("completed", "fp-a")
	t := f.acquire(req, 0, 1)
	res := result("the result")
	f.complete(req.Key, t, res)
	for _, r := range []once.ClaimRequest{req, retry(req)} {
		cr := f.claimWant(r, once.Completed)
		f.checkCompleted(cr.Record, t, res)
	}
	f.checkCompleted(f.get(req.Key), t, res)
}

// abandon acquires req with a short lease and lets the lease pass; with a
// fake clock it also checks the exact boundary.
func (f *fixture) abandon(req once.ClaimRequest) uint64 {
	f.Helper()
	req = f.short(req)
	t := f.acquire(req, 0, 1)
	if c := f.clock(); c != nil {
		c.Advance(req.Lease - time.Millisecond)
		if cr := f.claimWant(req, once.InProgress); cr.RetryAfter != time.Millisecond {
			f.Errorf("RetryAfter %v a millisecond before the lease passes, want 1ms", cr.RetryAfter)
		}
		c.Advance(time.Millisecond)
		return t
	}
	f.pass(req.Lease)
	return t
}

func testClaimAbandonedReject(f *fixture) {
	req := f.req("abandoned", "fp-a")
	t := f.abandon(req)
	f.claimWant(req, once.Abandoned)
	noPolicy := once.ClaimRequest{Key: req.Key, Fingerprint: req.Fingerprint, Lease: req.Lease, Retention: req.Retention}
	cr := f.claimWant(noPolicy, once.Abandoned)
	f.checkHeld(cr.Record, req.Key, t, 1)
	// Abandoned is not stored: the record stays in progress.
	f.checkHeld(f.get(req.Key), req.Key, t, 1)
}

func testClaimAbandonedRetry(f *fixture) {
	req := f.req("takeover", "fp-a")
	t := f.abandon(req)
	t2 := f.acquire(retry(req), t, 2)
	f.claimWant(req, once.InProgress)
	f.claimWant(retry(req), once.InProgress)
	res := result("second attempt")
	f.complete(req.Key, t2, res)
	f.checkCompleted(f.claimWant(req, once.Completed).Record, t2, res)
}

// testTakeoverKeepsFingerprint: a takeover without a fingerprint keeps the
// abandoned record's, so the mismatch check still protects the key, and the
// key keeps its creation time.
func testTakeoverKeepsFingerprint(f *fixture) {
	req := f.req("takeover-fp", "fp-a")
	t := f.abandon(req)
	created := f.get(req.Key).CreatedAt
	cr := f.claimWant(retry(f.req("takeover-fp", "")), once.Acquired)
	if cr.Token <= t || !bytes.Equal(cr.Record.Fingerprint, []byte("fp-a")) || !cr.Record.CreatedAt.Equal(created) {
		f.Errorf("takeover without a fingerprint: token %d (after %d), fingerprint %q, CreatedAt %v; want larger, \"fp-a\", %v",
			cr.Token, t, cr.Record.Fingerprint, cr.Record.CreatedAt, created)
	}
	f.claimWant(f.req("takeover-fp", "fp-b"), once.Mismatch)
	checkFingerprint(f, req.Key, "fp-a")
}

func testMismatchInProgress(f *fixture) {
	req := f.req("mismatch-in-progress", "fp-a")
	t := f.acquire(req, 0, 1)
	other := f.req("mismatch-in-progress", "fp-b")
	for _, r := range []once.ClaimRequest{other, retry(other)} {
		cr := f.claimWant(r, once.Mismatch)
		f.checkHeld(cr.Record, req.Key, t, 1)
	}
	f.claimWant(req, once.InProgress)
	checkFingerprint(f, req.Key, "fp-a")
}

func testMismatchCompleted(f *fixture) {
	req := f.req("mismatch-completed", "fp-a")
	t := f.acquire(req, 0, 1)
	res := result("r")
	f.complete(req.Key, t, res)
	other := f.req("mismatch-completed", "fp-b")
	for _, r := range []once.ClaimRequest{other, retry(other)} {
		f.checkCompleted(f.claimWant(r, once.Mismatch).Record, t, res)
	}
	f.claimWant(req, once.Completed)
	checkFingerprint(f, req.Key, "fp-a")
}

func testMismatchAbandoned(f *fixture) {
	req := f.req("mismatch-abandoned", "fp-a")
	t := f.abandon(req)
	other := f.req("mismatch-abandoned", "fp-b")
	for _, r := range []once.ClaimRequest{other, retry(other)} {
		f.checkHeld(f.claimWant(r, once.Mismatch).Record, req.Key, t, 1)
	}
	f.claimWant(req, once.Abandoned)
	f.acquire(retry(req), t, 2)
}

// testMismatchReleased: a released record is given up, so any fingerprint
// acquires it, and the new fingerprint then holds.
func testMismatchReleased(f *fixture) {
	req := f.req("mismatch-released", "fp-a")
	t := f.acquire(req, 0, 1)
	if err := f.s.Release(f.ctx, req.Key, t); err != nil {
		f.Fatalf("Release: %v", err)
	}
	f.acquire(f.req("mismatch-released", "fp-b"), t, 2)
	f.claimWant(req, once.Mismatch)
	checkFingerprint(f, req.Key, "fp-b")
}

func testEmptyFingerprint(f *fixture) {
	// Empty on the request's side.
	req := f.req("empty-request-fp", "fp-a")
	t := f.acquire(req, 0, 1)
	f.claimWant(f.req("empty-request-fp", ""), once.InProgress)
	f.complete(req.Key, t, result("r"))
	f.claimWant(f.req("empty-request-fp", ""), once.Completed)
	// Empty on the stored side.
	bare := f.req("empty-stored-fp", "")
	t = f.acquire(bare, 0, 1)
	f.claimWant(f.req("empty-stored-fp", "fp-b"), once.InProgress)
	f.complete(bare.Key, t, result("r"))
	f.claimWant(f.req("empty-stored-fp", "fp-c"), once.Completed)
}

func checkFingerprint(f *fixture, k once.Key, want string) {
	f.Helper()
	if r := f.get(k); !bytes.Equal(r.Fingerprint, []byte(want)) {
		f.Errorf("stored fingerprint %q, want %q", r.Fingerprint, want)
	}
}
