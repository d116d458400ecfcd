package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// fixture is what a case works with: a store of its own (or a scope of its
// own on a shared one) and a way to let time pass.
type fixture struct {
	*testing.T
	ctx    context.Context
	h      *harness
	s      once.Store
	timer  timer
	scope  string
	closed bool
}

func newFixture(t *testing.T, h *harness) *fixture {
	s, tm := h.open(t)
	if s == nil {
		t.Fatal("storetest: the factory returned a nil store")
	}
	f := &fixture{T: t, ctx: t.Context(), h: h, s: s, timer: tm, scope: randomScope(t)}
	t.Cleanup(func() {
		if !f.closed {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return f
}

// randomScope returns a scope no earlier run or other case has used.
func randomScope(tb testing.TB) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return "storetest-" + hex.EncodeToString(b[:])
}

// randomID returns an ID no earlier run or other case has used.
func randomID(tb testing.TB, prefix string) string { return prefix + "-" + randomScope(tb) }

func (f *fixture) key(id string) once.Key { return once.Key{Scope: f.scope, ID: id} }

// clock returns the fake clock, or nil when the store keeps time on its server.
func (f *fixture) clock() *FakeClock { return f.timer.fake() }

// pass lets at least d pass on the store's clock.
func (f *fixture) pass(d time.Duration) { f.timer.pass(d) }

// req returns a claim of id with leases and retentions that do not pass
// during the case.
func (f *fixture) req(id, fp string) once.ClaimRequest {
	return f.reqKey(f.key(id), fp)
}

func (f *fixture) reqKey(k once.Key, fp string) once.ClaimRequest {
	r := once.ClaimRequest{Key: k, Lease: f.h.long, Retention: f.h.long}
	if fp != "" {
		r.Fingerprint = []byte(fp)
	}
	return r
}

// short returns req with a short lease (one unit) that the case lets pass.
func (f *fixture) short(req once.ClaimRequest) once.ClaimRequest {
	req.Lease = f.h.unit
	return req
}

func retry(req once.ClaimRequest) once.ClaimRequest {
	req.Policy = once.AbandonRetry
	return req
}

func (f *fixture) claim(req once.ClaimRequest) once.ClaimResult {
	f.Helper()
	cr, err := f.s.Claim(f.ctx, req)
	if err != nil {
		f.Fatalf("Claim(%q, fp %q, policy %v): %v", req.Key.ID, req.Fingerprint, req.Policy, err)
	}
	return cr
}

// claimWant claims and checks the outcome and the fields that only some
// outcomes carry.
func (f *fixture) claimWant(req once.ClaimRequest, want once.Outcome) once.ClaimResult {
	f.Helper()
	cr := f.claim(req)
	if cr.Outcome != want {
		f.Fatalf("Claim(%q, fp %q, policy %v) = %v (record %s), want %v",
			req.Key.ID, req.Fingerprint, req.Policy, cr.Outcome, describe(cr.Record), want)
	}
	if want != once.Acquired && cr.Token != 0 {
		f.Errorf("Claim(%q) = %v with Token %d; Token is for Acquired only", req.Key.ID, want, cr.Token)
	}
	if want != once.InProgress && cr.RetryAfter != 0 {
		f.Errorf("Claim(%q) = %v with RetryAfter %v; RetryAfter is for InProgress only", req.Key.ID, want, cr.RetryAfter)
	}
	return cr
}

// acquire claims req, wants Acquired with a token larger than after and
// attempts as given, checks the new record, and returns the token.
func (f *fixture) acquire(req once.ClaimRequest, after uint64, attempts uint32) uint64 {
	f.Helper()
	cr := f.claimWant(req, once.Acquired)
	if cr.Token <= after {
		f.Fatalf("Claim(%q) acquired token %d, want more than %d", req.Key.ID, cr.Token, after)
	}
	f.checkClaimed(cr.Record, req, cr.Token, attempts)
	return cr.Token
}

// checkClaimed checks the record a claim that acquired the key returned.
func (f *fixture) checkClaimed(r once.Record, req once.ClaimRequest, token uint64, attempts uint32) {
	f.Helper()
	f.checkHeld(r, req.Key, token, attempts)
	if len(req.Fingerprint) > 0 && !bytes.Equal(r.Fingerprint, req.Fingerprint) {
		f.Errorf("record fingerprint %q, want %q", r.Fingerprint, req.Fingerprint)
	}
	if r.Lease < req.Lease {
		f.Errorf("record Lease %v, want at least %v", r.Lease, req.Lease)
	}
	if d := r.LeaseExpiresAt.Sub(r.UpdatedAt); d != req.Lease {
		f.Errorf("record LeaseExpiresAt is UpdatedAt+%v, want +%v (the lease)", d, req.Lease)
	}
	if d, want := r.ExpiresAt.Sub(r.UpdatedAt), max(req.Retention, req.Lease); d != want {
		f.Errorf("record ExpiresAt is UpdatedAt+%v, want +%v (the retention)", d, want)
	}
	f.checkNow(r.UpdatedAt, "UpdatedAt")
}

// checkHeld checks that r is in progress under token.
func (f *fixture) checkHeld(r once.Record, k once.Key, token uint64, attempts uint32) {
	f.Helper()
	if r.Key != k {
		f.Errorf("record Key %+v, want %+v", r.Key, k)
	}
	if r.State != once.StateInProgress || r.Token != token || r.Attempts != attempts {
		f.Errorf("record %s, want in_progress token %d attempts %d", describe(r), token, attempts)
	}
	if r.CreatedAt.IsZero() || r.UpdatedAt.Before(r.CreatedAt) {
		f.Errorf("record CreatedAt %v, UpdatedAt %v: want set, in order", r.CreatedAt, r.UpdatedAt)
	}
}

// checkNow checks that a time the store just stamped is now: exactly with a
// fake clock, roughly with a server clock.
func (f *fixture) checkNow(at time.Time, what string) {
	f.Helper()
	if c := f.clock(); c != nil {
		if !at.Equal(c.Now()) {
			f.Errorf("record %s %v, want the store clock's now %v", what, at, c.Now())
		}
		return
	}
	if d := time.Since(at); d < -time.Hour || d > time.Hour {
		f.Errorf("record %s %v is %v away from the local clock; want a plausible server time", what, at, d)
	}
}

// checkCompleted checks that r is completed under token with result.
func (f *fixture) checkCompleted(r once.Record, token uint64, result once.Result) {
	f.Helper()
	if r.State != once.StateCompleted || r.Token != token {
		f.Errorf("record %s, want completed token %d", describe(r), token)
	}
	if !r.Result.Equal(result) {
		f.Errorf("record result %s, want %s", describeResult(r.Result), describeResult(result))
	}
	if r.CompletedAt.Before(r.CreatedAt) || r.CompletedAt.IsZero() {
		f.Errorf("record CompletedAt %v, CreatedAt %v: want set, in order", r.CompletedAt, r.CreatedAt)
	}
}

func (f *fixture) get(k once.Key) once.Record {
	f.Helper()
	r, err := f.s.Get(f.ctx, k)
	if err != nil {
		f.Fatalf("Get(%q): %v", k.ID, err)
	}
	return r
}

func (f *fixture) complete(k once.Key, token uint64, res once.Result) {
	f.Helper()
	if err := f.s.Complete(f.ctx, k, token, res); err != nil {
		f.Fatalf("Complete(%q, token %d): %v", k.ID, token, err)
	}
}

// wantErr checks that err matches target.
func (f *fixture) wantErr(err, target error, call string) {
	f.Helper()
	if !errors.Is(err, target) {
		f.Errorf("%s = %v, want %v", call, err, target)
	}
}

// wantNil checks that err is nil.
func (f *fixture) wantNil(err error, call string) {
	f.Helper()
	if err != nil {
		f.Errorf("%s = %v, want success", call, err)
	}
}

// result returns a small distinct result.
func result(s string) once.Result {
	return once.Result{Data: []byte(s), Meta: map[string]string{"v": s}}
}

func isFenced(err error) bool { return errors.Is(err, once.ErrFenced) }

func isNotFound(err error) bool { return errors.Is(err, once.ErrNotFound) }
