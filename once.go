// Package once makes an action take effect exactly once per idempotency key.
//
// The heart of the package is a small state machine kept in a Store. A record is
// identified by a Key: an opaque Scope (a tenant or principal; may be empty) and
// an ID of 1 to 255 bytes of printable ASCII (0x20-0x7E). Every Store operation
// is atomic (linearizable), in every store.
//
// # States
//
//	                         Claim
//	absent, RELEASED ─────────────────▶ IN_PROGRESS (token t, lease deadline)
//	      ▲                              │   │   │
//	      │ Release(t)                   │   │   └─ Extend(t): lease renewed
//	      └──────────────────────────────┘   │
//	                                         ├─ Complete(t, result) ─▶ COMPLETED
//	                                         │     (result fixed; Claim replays it)
//	                                         │
//	                                         └─ lease passes ─▶ ABANDONED (outcome unknown)
//	                                               Claim, policy reject → Abandoned
//	                                               Claim, policy retry  → IN_PROGRESS (t+1)
//
//	any state ── retention passes ──▶ absent
//	      (a tombstone keeps the token counter until retention + lease)
//
// ABANDONED is not stored: it is an IN_PROGRESS record whose lease deadline has
// passed. Nothing about the effect is known then, so the default policy
// (AbandonReject) refuses to run it again: at most once. AbandonRetry takes the
// key over with a larger fencing token, and the old holder is fenced off.
//
// # Claim
//
// Claim(req) looks at the live record for req.Key (one whose retention deadline
// has not passed) and returns exactly one Outcome, checked in this order:
//
//   - Mismatch: a live IN_PROGRESS or COMPLETED record whose fingerprint differs
//     from req.Fingerprint, both being non-empty. An empty fingerprint on either
//     side opts out of the check. Nothing changes.
//   - Completed: the record is COMPLETED; ClaimResult.Record carries its result.
//   - InProgress: another holder's lease is live; RetryAfter is the time left on it.
//   - Abandoned: the record is IN_PROGRESS and its lease has passed (policy reject).
//   - Acquired: no live record existed, the record was RELEASED, or the record
//     was abandoned and the policy is AbandonRetry. The new token is strictly
//     greater than every token handed out for the key while its record or
//     tombstone was retained; a fresh key starts at 1 in the stores of this
//     module. Attempts counts the claims that acquired the key since it was
//     last absent. A takeover of an abandoned record keeps its CreatedAt, and
//     its fingerprint when the claim brings none.
//
// ClaimResult.Token is set only for Acquired and RetryAfter only for
// InProgress. Each operation reads the store's clock once, so the times it
// writes agree (LeaseExpiresAt - UpdatedAt is the lease just granted).
//
// # Complete, Release, Extend
//
// Only the current token may change a record. A token that does not hold the
// key (an older one, one whose record was taken over, released or has expired)
// gets ErrFenced. A holder whose lease passed but whom nobody took over still
// holds the key: its Complete, Release and Extend succeed.
//
//   - Complete(t, result) fixes the result. Repeating it with the same token and
//     an equal result is a no-op success; any other result gets ErrFenced.
//   - Release(t) gives the key up: the effect certainly did not happen, and the
//     next Claim acquires it. Releasing twice with the same token is a no-op.
//   - Extend(t, lease) renews the lease from now and, if needed, pushes the
//     retention deadline out to the lease deadline.
//
// # Time and retention
//
// A store takes every lease and retention decision with one clock: the process
// clock (monotonic) for the embedded stores, the server's clock for Redis and
// PostgreSQL. Retention counts from the Claim that acquired the key. A record
// past its retention deadline behaves as absent for every operation, but the
// store keeps its tombstone (the token counter) until retention + lease, so a
// zombie holder can never see its token handed out again. Stores reclaim space
// incrementally (see Sweeper).
//
// # Versions
//
// Besides records, every store keeps a monotonic version per (scope, entity):
// Advance applies a version only if it is strictly greater than the current
// one. It guards against stale events, such as a delayed "renew" arriving
// after a later "cancel".
//
// # Executing work
//
// Most programs do not call a Store directly: New returns an Executor whose Do
// runs a function once per key, coalesces callers in one process, renews the
// lease while the function runs and replays the stored result afterwards.
package once

import (
	"bytes"
	"fmt"
	"maps"
	"time"
)

// MaxKeyLen is the longest key ID accepted, in bytes.
const MaxKeyLen = 255

// MaxScopeLen is the longest scope accepted, in bytes.
const MaxScopeLen = 1024

// Key identifies a record: an idempotency key within a scope.
type Key struct {
	// Scope namespaces the key, typically by tenant or principal, so that one
	// client can never receive another's result. It may be empty.
	Scope string
	// ID is the idempotency key: 1 to 255 bytes of printable ASCII.
	ID string
}

// String returns the key in a form safe for messages: the scope is omitted and
// long IDs are truncated.
func (k Key) String() string { return Redact(k.ID) }

// Validate returns an error wrapping ErrInvalidKey if the key is malformed.
func (k Key) Validate() error {
	if err := ValidateID(k.ID); err != nil {
		return err
	}
	if len(k.Scope) > MaxScopeLen {
		return fmt.Errorf("%w: scope is %d bytes, more than %d", ErrInvalidKey, len(k.Scope), MaxScopeLen)
	}
	return nil
}

// ValidateID returns an error wrapping ErrInvalidKey unless id is 1 to 255
// bytes of printable ASCII (0x20-0x7E). Entity names given to Advance follow
// the same rule.
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(id) > MaxKeyLen {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidKey, len(id), MaxKeyLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: byte %d is 0x%02x, not printable ASCII", ErrInvalidKey, i, c)
		}
	}
	return nil
}

// Redact shortens an ID for logs and messages: IDs longer than 12 bytes keep
// their first 8 bytes followed by "…".
func Redact(id string) string {
	if len(id) <= 12 {
		return id
	}
	return id[:8] + "…"
}

// State is the stored state of a record.
type State uint8

// The stored states. Abandoned is not a stored state: see Record.Abandoned.
const (
	StateInProgress State = 1
	StateCompleted  State = 2
	StateReleased   State = 3
)

func (s State) String() string {
	switch s {
	case StateInProgress:
		return "in_progress"
	case StateCompleted:
		return "completed"
	case StateReleased:
		return "released"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Result is what a completed record holds: opaque bytes and a small map of
// metadata. Stores copy results in and out; callers may keep or modify them.
// Data may hold any bytes. Meta keys and values should be valid UTF-8: a
// store either keeps them exactly or refuses them with ErrInvalidArgument
// (PostgreSQL's jsonb and the HTTP key API cannot carry other strings).
// Keys that start with "once." are reserved for this package.
type Result struct {
	Data []byte
	Meta map[string]string
}

// Equal reports whether r and o hold the same bytes and metadata. A nil and an
// empty slice or map are equal.
func (r Result) Equal(o Result) bool {
	return bytes.Equal(r.Data, o.Data) && maps.Equal(r.Meta, o.Meta)
}

// Clone returns a deep copy of r.
func (r Result) Clone() Result {
	c := Result{}
	if r.Data != nil {
		c.Data = bytes.Clone(r.Data)
	}
	if r.Meta != nil {
		c.Meta = maps.Clone(r.Meta)
	}
	return c
}

// Record is the stored form of a key. Times are the store's clock.
type Record struct {
	Key         Key
	Fingerprint []byte
	State       State
	// Token is the fencing token of the latest claim that acquired the key.
	Token uint64
	// Attempts counts the claims that acquired the key since it was last absent.
	Attempts uint32
	// Lease is the duration of the latest lease granted (by Claim or Extend),
	// or longer: a store lengthens it when needed so that the record's purge
	// time (PurgeAt) never moves earlier. LeaseExpiresAt is the lease's end.
	Lease time.Duration
	// LeaseExpiresAt is when the current holder's lease passes.
	LeaseExpiresAt time.Time
	// ExpiresAt is the retention deadline: past it the record behaves as absent.
	ExpiresAt   time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time
	CompletedAt time.Time
	// Result is set once the record is completed.
	Result Result
}

// Abandoned reports whether r is in progress with its lease passed at now:
// its holder may have died mid-effect, so the outcome is unknown.
func (r *Record) Abandoned(now time.Time) bool {
	return r.State == StateInProgress && !now.Before(r.LeaseExpiresAt)
}

// Live reports whether r is retained at now (its retention deadline has not
// passed). A record that is not live behaves as absent.
func (r *Record) Live(now time.Time) bool { return now.Before(r.ExpiresAt) }

// PurgeAt is when a store may forget r entirely, tombstone included: its
// retention deadline plus its lease, so that no zombie holder can outlive the
// token counter.
func (r *Record) PurgeAt() time.Time { return r.ExpiresAt.Add(r.Lease) }

// Clone returns a deep copy of r.
func (r Record) Clone() Record {
	r.Fingerprint = bytes.Clone(r.Fingerprint)
	r.Result = r.Result.Clone()
	return r
}

// AbandonPolicy says what Claim does with an abandoned record.
type AbandonPolicy uint8

const (
	// AbandonReject (the default) returns Abandoned: the effect may have
	// happened, so it is not run again. At most once.
	AbandonReject AbandonPolicy = iota
	// AbandonRetry takes the key over with a larger fencing token and runs the
	// effect again. At least once, with the old holder fenced off.
	AbandonRetry
)

func (p AbandonPolicy) String() string {
	if p == AbandonRetry {
		return "retry"
	}
	return "reject"
}

// ParseAbandonPolicy parses "reject" or "retry".
func ParseAbandonPolicy(s string) (AbandonPolicy, error) {
	switch s {
	case "reject", "":
		return AbandonReject, nil
	case "retry":
		return AbandonRetry, nil
	}
	return 0, fmt.Errorf("once: abandoned policy %q: want reject or retry", s)
}

// ClaimRequest is the argument of Store.Claim.
type ClaimRequest struct {
	Key Key
	// Fingerprint identifies the request's content (opaque bytes; may be empty,
	// which opts out of the mismatch check).
	Fingerprint []byte
	// Lease is how long the holder has before the key counts as abandoned.
	// It must be positive.
	Lease time.Duration
	// Retention is how long the record is kept after this claim. It must be
	// positive; a retention shorter than the lease is raised to the lease.
	Retention time.Duration
	// Policy says what to do with an abandoned record.
	Policy AbandonPolicy
}

// Validate returns an error wrapping ErrInvalidKey or ErrInvalidArgument.
func (c *ClaimRequest) Validate() error {
	if err := c.Key.Validate(); err != nil {
		return err
	}
	if c.Lease <= 0 {
		return fmt.Errorf("%w: lease must be positive, got %v", ErrInvalidArgument, c.Lease)
	}
	if c.Retention <= 0 {
		return fmt.Errorf("%w: retention must be positive, got %v", ErrInvalidArgument, c.Retention)
	}
	if c.Policy > AbandonRetry {
		return fmt.Errorf("%w: unknown abandon policy %d", ErrInvalidArgument, c.Policy)
	}
	return nil
}

// Outcome is what a Claim found.
type Outcome uint8

// The outcomes of Claim; see the package documentation for their order.
const (
	Acquired Outcome = iota + 1
	Completed
	InProgress
	Abandoned
	Mismatch
)

func (o Outcome) String() string {
	switch o {
	case Acquired:
		return "acquired"
	case Completed:
		return "completed"
	case InProgress:
		return "in_progress"
	case Abandoned:
		return "abandoned"
	case Mismatch:
		return "mismatch"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// ClaimResult is what Store.Claim returns.
type ClaimResult struct {
	Outcome Outcome
	// Token is the fencing token to pass to Complete, Release and Extend
	// (Acquired only).
	Token uint64
	// Record is the record as it stands after the claim: the new in-progress
	// record for Acquired, the stored one otherwise.
	Record Record
	// RetryAfter is the time left on the holder's lease (InProgress only).
	RetryAfter time.Duration
}
