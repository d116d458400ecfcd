package once

import (
	"context"
	"time"
)

// Store keeps records and versions. Every method is atomic (linearizable) and
// safe for concurrent use. Methods validate their keys and return an error
// wrapping ErrInvalidKey before touching storage. Errors from the backing
// system are returned wrapping ErrUnavailable. After Close every method
// returns ErrClosed.
type Store interface {
	// Claim tries to acquire req.Key; see the package documentation for the
	// outcomes and their order. An error is returned only when nothing could be
	// decided: the outcomes that do not acquire the key are not errors.
	Claim(ctx context.Context, req ClaimRequest) (ClaimResult, error)

	// Complete fixes the result of the key held by token. Returns ErrFenced if
	// token no longer holds the key, or if the key is already completed by token
	// with another result; a repeat with an equal result succeeds.
	Complete(ctx context.Context, key Key, token uint64, result Result) error

	// Release gives up the key held by token so that the next Claim acquires
	// it. Returns ErrFenced if token no longer holds the key.
	Release(ctx context.Context, key Key, token uint64) error

	// Extend renews the lease of the key held by token to lease from now.
	// Returns ErrFenced if token no longer holds the key (stale, released,
	// completed, or taken over after the lease passed).
	Extend(ctx context.Context, key Key, token uint64, lease time.Duration) error

	// Get returns the live record of key. Returns ErrNotFound if there is none.
	Get(ctx context.Context, key Key) (Record, error)

	// Delete makes the record of key absent, for operators. Its tombstone keeps
	// the token counter, so tokens never go backwards. Returns ErrNotFound if
	// there is no live record.
	Delete(ctx context.Context, key Key) error

	// Advance sets the version of (scope, entity) to version if version is
	// strictly greater than the current one (0 when never set). It returns
	// whether it applied and the version current after the call. entity
	// follows the rules of ValidateID.
	Advance(ctx context.Context, scope, entity string, version uint64) (applied bool, current uint64, err error)

	// Close releases the store's resources.
	Close() error
}

// Sweeper is implemented by stores that reclaim the space of expired records
// on request rather than by themselves. Sweep deletes at most limit records
// whose purge time (Record.PurgeAt) has passed and returns how many it
// deleted; it never scans the whole store.
type Sweeper interface {
	Sweep(ctx context.Context, limit int) (int, error)
}

// Pinger is implemented by stores that can check that their backing system is
// reachable.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Clock returns the current time. A nil Clock means SystemClock.
type Clock func() time.Time

// SystemClock returns a clock that reads the wall clock once and then
// advances with the monotonic clock, so that a wall-clock step (NTP, an
// operator) cannot shorten or lengthen a lease within the process.
func SystemClock() Clock {
	start := time.Now()
	wall := start.Round(0)
	return func() time.Time { return wall.Add(time.Since(start)) }
}

// Watcher is implemented by stores that can tell other processes when a key
// changes, so that a caller waiting on another process's execution need not
// poll. Notifications may be lost (a dropped connection, a full buffer):
// callers must still poll, only more slowly.
type Watcher interface {
	// Watch returns a channel that receives a value (or is closed) after the
	// record of key is completed, released or deleted, some time after Watch
	// was called. stop releases what Watch holds; it is safe to call twice.
	Watch(ctx context.Context, key Key) (changed <-chan struct{}, stop func(), err error)
}

// Lister is implemented by stores that can enumerate their live records, for
// operators (once keys list). It is not meant for hot paths.
type Lister interface {
	// List calls fn with each live record of scope, in no particular order,
	// until fn returns false or the records run out.
	List(ctx context.Context, scope string, fn func(Record) bool) error
}
