package once

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Stores translate their native errors into these; check them
// with errors.Is.
var (
	// ErrInvalidKey: the key ID is empty, too long or not printable ASCII, or
	// the scope is too long.
	ErrInvalidKey = errors.New("once: invalid key")
	// ErrInvalidArgument: a lease, retention or policy is out of range.
	ErrInvalidArgument = errors.New("once: invalid argument")
	// ErrMismatch: the key was used before with a different fingerprint.
	ErrMismatch = errors.New("once: key reused with a different request")
	// ErrInProgress: another holder is working on the key.
	ErrInProgress = errors.New("once: key is in progress")
	// ErrAbandoned: the key's holder stopped renewing its lease without
	// completing; whether the effect happened is unknown.
	ErrAbandoned = errors.New("once: key abandoned, outcome unknown")
	// ErrFenced: the token no longer holds the key.
	ErrFenced = errors.New("once: token no longer holds the key")
	// ErrNotFound: no live record for the key.
	ErrNotFound = errors.New("once: key not found")
	// ErrClosed: the store or executor is closed.
	ErrClosed = errors.New("once: closed")
	// ErrUnavailable: the store could not be reached or answered with an
	// error; nothing can be said about the key.
	ErrUnavailable = errors.New("once: store unavailable")
	// ErrLeaseLost: the lease of an execution in progress could not be
	// renewed before it passed (the store was unreachable, or the process
	// stalled), or the key was taken over. Executor.Do then cancels fn's
	// context with a cause that wraps it (context.Cause), and returns an
	// error that wraps it. Whether fn's effect happened is for fn to say.
	ErrLeaseLost = errors.New("once: lease lost")
)

// ClaimError is the one typed error: it carries what a claim that did not
// acquire the key found. It wraps ErrInProgress, ErrAbandoned or ErrMismatch.
type ClaimError struct {
	Err error
	// RetryAfter is the time left on the holder's lease (ErrInProgress).
	RetryAfter time.Duration
	// Record is the stored record, when there is one.
	Record Record
}

func (e *ClaimError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v (retry after %v)", e.Err, e.RetryAfter.Round(time.Millisecond))
	}
	return e.Err.Error()
}

func (e *ClaimError) Unwrap() error { return e.Err }

// RetryAfter returns the retry-after duration carried by err, if any.
func RetryAfter(err error) (time.Duration, bool) {
	var ce *ClaimError
	if errors.As(err, &ce) && ce.RetryAfter > 0 {
		return ce.RetryAfter, true
	}
	return 0, false
}
