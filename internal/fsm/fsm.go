// Package fsm holds the transitions of once's state machine, shared by the
// stores that keep records in Go (memstore, boltstore) so that they cannot
// drift apart. Each function takes the stored record (nil when absent) and the
// store's current time, and returns the record to store (nil when nothing
// changes). Callers hold whatever lock or transaction makes the
// read-modify-write atomic. The Into variants write the record to store into
// a record of the caller's (which may be r) and report whether there is one,
// so that a store keeping records in its own form allocates nothing.
package fsm

import (
	"bytes"
	"time"

	"github.com/oncehq/once"
)

// Claim applies a claim to r.
func Claim(r *once.Record, req once.ClaimRequest, now time.Time) (next *once.Record, res once.ClaimResult) {
	var n once.Record
	changed, res := ClaimInto(&n, r, req, now)
	return boxed(&n, changed), res
}

// ClaimInto is Claim writing the record to store into *n instead of a new
// allocation. It reports whether there is one; if not, *n is left alone.
func ClaimInto(n, r *once.Record, req once.ClaimRequest, now time.Time) (changed bool, res once.ClaimResult) {
	if r != nil && r.Live(now) && r.State != once.StateReleased {
		if len(req.Fingerprint) > 0 && len(r.Fingerprint) > 0 && !bytes.Equal(req.Fingerprint, r.Fingerprint) {
			return false, once.ClaimResult{Outcome: once.Mismatch, Record: *r}
		}
		switch {
		case r.State == once.StateCompleted:
			return false, once.ClaimResult{Outcome: once.Completed, Record: *r}
		case !r.Abandoned(now):
			return false, once.ClaimResult{Outcome: once.InProgress, Record: *r, RetryAfter: r.LeaseExpiresAt.Sub(now)}
		case req.Policy != once.AbandonRetry:
			return false, once.ClaimResult{Outcome: once.Abandoned, Record: *r}
		}
	}
	fresh := once.Record{
		Key:            req.Key,
		Fingerprint:    req.Fingerprint,
		State:          once.StateInProgress,
		Token:          1,
		Attempts:       1,
		Lease:          req.Lease,
		LeaseExpiresAt: now.Add(req.Lease),
		ExpiresAt:      now.Add(max(req.Retention, req.Lease)),
		CreatedAt:      now,
		UpdatedAt:      now,
	}
	if r != nil {
		keepPurge(&fresh, r)
		fresh.Token = r.Token + 1
		if r.Live(now) {
			// Released or abandoned: the same key lives on.
			fresh.Attempts = r.Attempts + 1
			fresh.CreatedAt = r.CreatedAt
			if r.State == once.StateInProgress && len(fresh.Fingerprint) == 0 {
				fresh.Fingerprint = r.Fingerprint
			}
		}
	}
	*n = fresh
	return true, once.ClaimResult{Outcome: once.Acquired, Token: fresh.Token, Record: fresh}
}

// boxed returns a copy of *n on the heap if changed, else nil. The copy is
// made only when needed, so that the Into functions allocate nothing.
func boxed(n *once.Record, changed bool) *once.Record {
	if !changed {
		return nil
	}
	c := *n
	return &c
}

// holds reports whether token currently holds r.
func holds(r *once.Record, token uint64, now time.Time) bool {
	return r != nil && r.Live(now) && r.Token == token
}

// Complete applies a completion to r.
func Complete(r *once.Record, token uint64, result once.Result, now time.Time) (*once.Record, error) {
	var n once.Record
	changed, err := CompleteInto(&n, r, token, result, now)
	return boxed(&n, changed), err
}

// CompleteInto is Complete writing the record to store into *n. It reports
// whether there is one; if not, *n is left alone.
func CompleteInto(n, r *once.Record, token uint64, result once.Result, now time.Time) (bool, error) {
	if !holds(r, token, now) {
		return false, once.ErrFenced
	}
	switch r.State {
	case once.StateCompleted:
		if r.Result.Equal(result) {
			return false, nil
		}
		return false, once.ErrFenced
	case once.StateInProgress:
		*n = *r
		n.State = once.StateCompleted
		n.Result = result
		n.CompletedAt = now
		n.UpdatedAt = now
		return true, nil
	}
	return false, once.ErrFenced
}

// Release applies a release to r.
func Release(r *once.Record, token uint64, now time.Time) (*once.Record, error) {
	var n once.Record
	changed, err := ReleaseInto(&n, r, token, now)
	return boxed(&n, changed), err
}

// ReleaseInto is Release writing the record to store into *n. It reports
// whether there is one; if not, *n is left alone.
func ReleaseInto(n, r *once.Record, token uint64, now time.Time) (bool, error) {
	if !holds(r, token, now) {
		return false, once.ErrFenced
	}
	switch r.State {
	case once.StateReleased:
		return false, nil
	case once.StateInProgress:
		*n = *r
		n.State = once.StateReleased
		n.UpdatedAt = now
		return true, nil
	}
	return false, once.ErrFenced
}

// Extend applies a lease renewal to r.
func Extend(r *once.Record, token uint64, lease time.Duration, now time.Time) (*once.Record, error) {
	var n once.Record
	changed, err := ExtendInto(&n, r, token, lease, now)
	return boxed(&n, changed), err
}

// ExtendInto is Extend writing the record to store into *n. It reports
// whether there is one; if not, *n is left alone.
func ExtendInto(n, r *once.Record, token uint64, lease time.Duration, now time.Time) (bool, error) {
	if !holds(r, token, now) || r.State != once.StateInProgress {
		return false, once.ErrFenced
	}
	e := *r
	e.Lease = lease
	e.LeaseExpiresAt = now.Add(lease)
	if e.ExpiresAt.Before(e.LeaseExpiresAt) {
		e.ExpiresAt = e.LeaseExpiresAt
	}
	e.UpdatedAt = now
	keepPurge(&e, r)
	*n = e
	return true, nil
}

// keepPurge makes sure that n, which replaces r, is not purged before r would
// have been: a tombstone's (or a longer earlier lease's) protection against
// zombie holders must not shrink because a later claim asks for a shorter
// lease. It lengthens n.Lease, which then is the purge slack rather than the
// lease just granted (LeaseExpiresAt is unchanged).
func keepPurge(n, r *once.Record) {
	if d := r.PurgeAt().Sub(n.ExpiresAt); d > n.Lease {
		n.Lease = d
	}
}

// Delete makes r absent while keeping its tombstone: the record expires now
// and is purged a lease later.
func Delete(r *once.Record, now time.Time) (*once.Record, error) {
	var n once.Record
	changed, err := DeleteInto(&n, r, now)
	return boxed(&n, changed), err
}

// DeleteInto is Delete writing the record to store into *n. It reports
// whether there is one; if not, *n is left alone.
func DeleteInto(n, r *once.Record, now time.Time) (bool, error) {
	if r == nil || !r.Live(now) {
		return false, once.ErrNotFound
	}
	*n = *r
	n.ExpiresAt = now
	if n.LeaseExpiresAt.After(now) {
		// A holder may still be at work: keep the counter until its lease
		// would have passed, plus a lease of slack.
		n.Lease += n.LeaseExpiresAt.Sub(now)
	}
	n.UpdatedAt = now
	return true, nil
}

// Get returns r if it is live, else ErrNotFound.
func Get(r *once.Record, now time.Time) (*once.Record, error) {
	if r == nil || !r.Live(now) {
		return nil, once.ErrNotFound
	}
	return r, nil
}

// Purgeable reports whether r may be forgotten entirely at now.
func Purgeable(r *once.Record, now time.Time) bool {
	return !now.Before(r.PurgeAt())
}

// Advance applies a version to the current one.
func Advance(current, version uint64) (applied bool, next uint64) {
	if version > current {
		return true, version
	}
	return false, current
}
