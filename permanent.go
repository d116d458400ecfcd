package once

import (
	"errors"
	"maps"
)

// MetaError is the Result.Meta key under which Executor.Do records the message
// of a permanent error (see Permanent). Meta keys that start with "once." are
// reserved for the package: a result that fn returns with a MetaError entry
// replays as a permanent error.
const MetaError = "once.error"

// ErrPermanent matches, with errors.Is, every error that Permanent wrapped:
// the one fn returned and the one a replay of its key returns.
var ErrPermanent = errors.New("once: permanent failure")

// PermanentError is an error recorded as the outcome of a key. When fn returns
// one, Executor.Do stores its message and later calls with the key return a
// PermanentError whose message is the same, without running fn. Check for it
// with errors.Is(err, ErrPermanent) or errors.As.
type PermanentError struct {
	// Err is the error fn returned, or on a replay an error carrying only
	// its message: the error's type and wrapped chain are not stored.
	Err error
}

// Permanent wraps err so that Executor.Do records it as the key's outcome
// instead of releasing the key: retries of the key get the same error and do
// not run fn again. Use it for failures that a retry cannot change (a declined
// card, a rejected request). Its message is stored and replayed verbatim, so it
// must not hold secrets. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// Error returns the wrapped error's message unchanged, so that a replay reads
// exactly like the first answer.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *PermanentError) Unwrap() error { return e.Err }

// Is reports whether target is ErrPermanent.
func (e *PermanentError) Is(target error) bool { return target == ErrPermanent }

// permanentResult returns the result to store for fn's permanent error err:
// fn's own result with the message added under MetaError.
func permanentResult(res Result, err error) Result {
	out := Result{Data: res.Data, Meta: maps.Clone(res.Meta)}
	if out.Meta == nil {
		out.Meta = make(map[string]string, 1)
	}
	out.Meta[MetaError] = err.Error()
	return out
}

// replayError returns the permanent error a stored result records, or nil.
func replayError(res Result) error {
	msg, ok := res.Meta[MetaError]
	if !ok {
		return nil
	}
	return &PermanentError{Err: errors.New(msg)}
}
