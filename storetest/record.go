package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/oncehq/once"
)

func testGetNotFound(f *fixture) {
	for _, k := range []once.Key{f.key("unknown"), {ID: randomID(f, "unknown")}} {
		_, err := f.s.Get(f.ctx, k)
		f.wantErr(err, once.ErrNotFound, fmt.Sprintf("Get(%q) of an unknown key", k.ID))
	}
}

func testGetFields(f *fixture) {
	req := f.req("fields", "fp-fields")
	req.Retention = 2 * req.Lease
	t := f.acquire(req, 0, 1)
	r := f.get(req.Key)
	f.checkClaimed(r, req, t, 1)
	if !r.CreatedAt.Equal(r.UpdatedAt) {
		f.Errorf("fresh record: CreatedAt %v, UpdatedAt %v, want equal", r.CreatedAt, r.UpdatedAt)
	}
	if !r.CompletedAt.IsZero() || len(r.Result.Data) != 0 || len(r.Result.Meta) != 0 {
		f.Errorf("in-progress record has CompletedAt %v, result %s: want none", r.CompletedAt, describeResult(r.Result))
	}
	if c := f.clock(); c != nil {
		c.Advance(f.h.unit)
	}
	f.complete(req.Key, t, result("r"))
	done := f.get(req.Key)
	f.checkCompleted(done, t, result("r"))
	f.checkNow(done.CompletedAt, "CompletedAt")
	if !done.CreatedAt.Equal(r.CreatedAt) || !done.ExpiresAt.Equal(r.ExpiresAt) || done.UpdatedAt.Before(done.CompletedAt) {
		f.Errorf("completing moved CreatedAt %v→%v or ExpiresAt %v→%v, or UpdatedAt %v is before CompletedAt %v",
			r.CreatedAt, done.CreatedAt, r.ExpiresAt, done.ExpiresAt, done.UpdatedAt, done.CompletedAt)
	}
	if !bytes.Equal(done.Fingerprint, req.Fingerprint) || done.Attempts != 1 || done.Key != req.Key {
		f.Errorf("completed record %s key %+v, want fingerprint %q, attempts 1, key %+v", describe(done), done.Key, req.Fingerprint, req.Key)
	}
}

func testDelete(f *fixture) {
	req := f.req("delete", "fp")
	k := req.Key
	t := f.acquire(req, 0, 1)
	f.complete(k, t, result("r"))
	f.wantNil(f.s.Delete(f.ctx, k), "Delete")
	_, err := f.s.Get(f.ctx, k)
	f.wantErr(err, once.ErrNotFound, "Get after Delete")
	f.wantErr(f.s.Delete(f.ctx, k), once.ErrNotFound, "Delete repeated")
	f.wantErr(f.s.Complete(f.ctx, k, t, result("r")), once.ErrFenced, "Complete(same token, same result) after Delete")
	// The tombstone keeps the counter, and the key starts afresh.
	t2 := f.acquire(f.req("delete", "fp-other"), t, 1)
	f.wantErr(f.s.Delete(f.ctx, f.key("never-claimed")), once.ErrNotFound, "Delete of an unknown key")
	f.wantNil(f.s.Delete(f.ctx, k), "Delete of the new claim")
	f.acquire(req, t2, 1)
}

func testDeleteInProgress(f *fixture) {
	req := f.req("delete-in-progress", "fp")
	k := req.Key
	t := f.acquire(req, 0, 1)
	f.wantNil(f.s.Delete(f.ctx, k), "Delete while in progress")
	for name, err := range map[string]error{
		"Complete": f.s.Complete(f.ctx, k, t, result("r")),
		"Release":  f.s.Release(f.ctx, k, t),
		"Extend":   f.s.Extend(f.ctx, k, t, f.h.long),
	} {
		f.wantErr(err, once.ErrFenced, name+" by the holder after Delete")
	}
	t2 := f.acquire(req, t, 1)
	f.wantErr(f.s.Complete(f.ctx, k, t, result("r")), once.ErrFenced, "Complete by the deleted holder after a new claim")
	f.checkHeld(f.get(k), k, t2, 1)
}

// testDeleteKeepsTombstone: deleting a record whose holder may still be at
// work keeps the counter until that holder's lease would have passed, plus
// a lease, so its token is never handed out again.
func testDeleteKeepsTombstone(f *fixture) {
	req := f.req("delete-tombstone", "fp")
	req.Lease = 3 * f.h.unit
	t := f.acquire(req, 0, 1)
	f.wantNil(f.s.Delete(f.ctx, req.Key), "Delete while in progress")
	if c := f.clock(); c != nil {
		c.Advance(2*req.Lease - time.Millisecond)
	} else {
		f.pass(req.Lease)
	}
	if sw, ok := f.s.(once.Sweeper); ok {
		f.sweepAll(sw)
	}
	f.acquire(req, t, 1)
}

// testShortClaimKeepsTombstone: a claim with a short lease and retention
// over a deleted record whose holder had a long lease must not shorten the
// tombstone: until that holder's lease would have passed, no token it could
// hold is handed out again.
func testShortClaimKeepsTombstone(f *fixture) {
	u := f.h.unit
	long := f.req("short-after-delete", "fp")
	long.Lease = 20 * u
	t1 := f.acquire(long, 0, 1)
	f.wantNil(f.s.Delete(f.ctx, long.Key), "Delete while in progress")
	short := long
	short.Lease, short.Retention = u, u
	t2 := f.acquire(short, t1, 1)
	if c := f.clock(); c != nil {
		c.Advance(3 * u)
	} else {
		f.pass(2 * u)
	}
	if sw, ok := f.s.(once.Sweeper); ok {
		f.sweepAll(sw)
	}
	f.acquire(short, t2, 1)
}

// testRetentionExpiry: past its retention a record behaves as absent, but its
// tombstone keeps the token counter until retention + lease.
func testRetentionExpiry(f *fixture) {
	u := f.h.unit
	done := f.req("retention-completed", "fp")
	held := f.req("retention-held", "fp")
	for _, r := range []*once.ClaimRequest{&done, &held} {
		// A long lease leaves a wide window between expiry and purge.
		r.Lease, r.Retention = 3*u, 3*u
	}
	t := f.acquire(done, 0, 1)
	f.complete(done.Key, t, result("r"))
	th := f.acquire(held, 0, 1)
	if c := f.clock(); c != nil {
		c.Advance(3*u - time.Millisecond)
		f.claimWant(done, once.Completed)
		c.Advance(time.Millisecond)
	} else {
		f.pass(3 * u)
	}
	_, err := f.s.Get(f.ctx, done.Key)
	f.wantErr(err, once.ErrNotFound, "Get past retention")
	f.acquire(done, t, 1)
	f.checkExpired(held.Key, th)
}

// checkExpired checks that every operation finds the record of k absent.
func (f *fixture) checkExpired(k once.Key, token uint64) {
	f.Helper()
	_, err := f.s.Get(f.ctx, k)
	f.wantErr(err, once.ErrNotFound, "Get past retention")
	f.wantErr(f.s.Complete(f.ctx, k, token, result("r")), once.ErrFenced, "Complete past retention")
	f.wantErr(f.s.Release(f.ctx, k, token), once.ErrFenced, "Release past retention")
	f.wantErr(f.s.Extend(f.ctx, k, token, f.h.long), once.ErrFenced, "Extend past retention")
	f.wantErr(f.s.Delete(f.ctx, k), once.ErrNotFound, "Delete past retention")
}

// testScopesIndependent: the same ID in two scopes, and keys whose scope and
// ID concatenate alike, are distinct records.
func testScopesIndependent(f *fixture) {
	id := randomID(f, "shared-id")
	keys := []once.Key{
		{Scope: f.scope + "-1", ID: id},
		{Scope: f.scope + "-2", ID: id},
		{Scope: "", ID: id},
		{Scope: f.scope + ":a", ID: "b"},
		{Scope: f.scope, ID: "a:b"},
		{Scope: f.scope + "/a", ID: "b"},
		{Scope: f.scope, ID: "a/b"},
		{Scope: f.scope + " é ✓", ID: "x"},
		// Scopes are opaque bytes: not necessarily UTF-8, NUL included.
		{Scope: f.scope + "\x00\xff\xfe", ID: "x"},
		{Scope: f.scope + "\x00", ID: "x"},
		{Scope: f.scope, ID: "x"},
	}
	tokens := make([]uint64, len(keys))
	for i, k := range keys {
		tokens[i] = f.acquire(f.reqKey(k, "fp"), 0, 1)
		f.complete(k, tokens[i], result(fmt.Sprint(i)))
	}
	for i, k := range keys {
		r := f.get(k)
		f.checkCompleted(r, tokens[i], result(fmt.Sprint(i)))
		if r.Key != k {
			f.Errorf("Get(%+v) returned the record of %+v", k, r.Key)
		}
	}
}

func testLargeResult(f *fixture) {
	k := f.key("large")
	t := f.acquire(f.reqKey(k, "fp"), 0, 1)
	res := largeResult()
	f.complete(k, t, res)
	sameResult(f, "Get", f.get(k).Result, res)
	sameResult(f, "Claim", f.claimWant(f.reqKey(k, "fp"), once.Completed).Record.Result, res)
	f.wantNil(f.s.Complete(f.ctx, k, t, res.Clone()), "Complete repeated with the large result")
}

// testResultMetaBytes: metadata that is not valid UTF-8 or holds NUL bytes
// (a Latin-1 header value, say) is either kept exactly or refused with
// ErrInvalidArgument, leaving the key held; it is never altered silently.
func testResultMetaBytes(f *fixture) {
	metas := map[string]map[string]string{
		"Latin-1 value": {"Content-Disposition": "caf\xe9"},
		"NUL in value":  {"X": "a\x00b"},
		"key not UTF-8": {"\xff": "v"},
	}
	for name, meta := range metas {
		k := f.key("meta-" + name)
		t := f.acquire(f.reqKey(k, ""), 0, 1)
		res := once.Result{Data: []byte("d"), Meta: meta}
		err := f.s.Complete(f.ctx, k, t, res)
		switch {
		case err == nil:
			sameResult(f, name, f.get(k).Result, res)
		case errors.Is(err, once.ErrInvalidArgument):
			f.checkHeld(f.get(k), k, t, 1)
		default:
			f.Errorf("Complete with meta %s = %v, want nil or ErrInvalidArgument", name, err)
		}
	}
}

// largeResult returns 1 MiB of every byte value plus metadata that looks
// like HTTP headers.
func largeResult() once.Result {
	data := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		if i < 512 {
			data[i] = byte(i)
		} else {
			data[i] = byte(rng.Uint32())
		}
	}
	meta := map[string]string{"Content-Type": "application/json; charset=utf-8", "Empty": "", "Unicode": "héllo ✓ 日本"}
	for i := range 50 {
		meta[fmt.Sprintf("X-Header-%d", i)] = strings.Repeat(fmt.Sprint(i), i)
	}
	return once.Result{Data: data, Meta: meta}
}

func sameResult(f *fixture, via string, got, want once.Result) {
	f.Helper()
	if !bytes.Equal(got.Data, want.Data) {
		f.Errorf("%s: result data differs: %d bytes, want %d", via, len(got.Data), len(want.Data))
	}
	switch {
	case maps.Equal(got.Meta, want.Meta):
	case len(want.Meta) <= 4:
		f.Errorf("%s: result meta %q, want %q", via, got.Meta, want.Meta)
	default:
		f.Errorf("%s: result meta differs: %d entries, want %d", via, len(got.Meta), len(want.Meta))
	}
}

// testResultsCopied: neither the caller's slices and maps nor the returned
// ones alias what the store keeps.
func testResultsCopied(f *fixture) {
	req := f.req("copied", "fp-orig")
	k := req.Key
	t := f.acquire(req, 0, 1)
	req.Fingerprint[0] = 'X'
	res := result("orig")
	f.complete(k, t, res)
	res.Data[0] = 'X'
	res.Meta["v"] = "changed"
	res.Meta["new"] = "added"
	r := f.get(k)
	r.Result.Data[0] = 'Y'
	r.Result.Meta["v"] = "changed"
	r.Fingerprint[0] = 'Y'
	cr := f.claimWant(f.req("copied", "fp-orig"), once.Completed)
	cr.Record.Result.Data[1] = 'Z'
	cr.Record.Result.Meta["w"] = "added"
	f.checkCompleted(f.get(k), t, result("orig"))
	checkFingerprint(f, k, "fp-orig")
}
