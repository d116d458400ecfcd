package once

import "errors"

// ErrOutcomeUnknown matches, with errors.Is, every error that Abandon wrapped.
var ErrOutcomeUnknown = errors.New("once: outcome unknown")

// AbandonError is an error after which nothing is known about the effect: the
// work may or may not have happened (a connection broke after the request was
// sent, a response could not be read). When fn returns one, Executor.Do
// neither completes nor releases the key: it stops renewing the lease, so the
// key becomes abandoned when the lease passes, exactly as if this process had
// died mid-effect. A later Claim then gets ErrAbandoned (AbandonReject, at
// most once) or takes the key over with a larger token (AbandonRetry).
// Check for it with errors.Is(err, ErrOutcomeUnknown) or errors.As.
type AbandonError struct {
	// Err is what went wrong.
	Err error
}

// Abandon wraps err so that Executor.Do leaves the key to become abandoned
// instead of releasing it: use it when a retry must not assume the effect did
// not happen. Abandon(nil) is nil.
func Abandon(err error) error {
	if err == nil {
		return nil
	}
	return &AbandonError{Err: err}
}

func (e *AbandonError) Error() string { return "once: outcome unknown: " + e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *AbandonError) Unwrap() error { return e.Err }

// Is reports whether target is ErrOutcomeUnknown.
func (e *AbandonError) Is(target error) bool { return target == ErrOutcomeUnknown }
