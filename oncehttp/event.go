package oncehttp

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/oncehq/once"
)

// Outcome says how a keyed request was answered. It is the "outcome" label
// of the gateway's request counter and field of its log lines.
type Outcome string

// The outcomes of a keyed request.
const (
	// OutcomeExecuted: the handler ran and its response was stored.
	OutcomeExecuted Outcome = "executed"
	// OutcomeReplayed: a stored response was replayed.
	OutcomeReplayed Outcome = "replayed"
	// OutcomeWaited: a concurrent duplicate waited for the first request
	// and got its response.
	OutcomeWaited Outcome = "waited"
	// OutcomeConflict: the key was still in progress when the wait ran out
	// (409 request-in-progress).
	OutcomeConflict Outcome = "conflict"
	// OutcomeMismatch: the key was reused with another request (422).
	OutcomeMismatch Outcome = "mismatch"
	// OutcomeMissingKey: no key where one is required (400).
	OutcomeMissingKey Outcome = "missing_key"
	// OutcomeInvalidKey: a malformed key (400).
	OutcomeInvalidKey Outcome = "invalid_key"
	// OutcomeBadRequest: the body was too large or unreadable (413, 400).
	OutcomeBadRequest Outcome = "bad_request"
	// OutcomeReleased: the key was released so that a retry runs: the
	// handler answered 429, the upstream was unreachable, or it panicked.
	OutcomeReleased Outcome = "released"
	// OutcomeAbandoned: the outcome is unknown, either found so (409
	// outcome-unknown) or made so (the upstream broke mid-request).
	OutcomeAbandoned Outcome = "abandoned"
	// OutcomeStoreError: the store failed (503).
	OutcomeStoreError Outcome = "store_error"
	// OutcomePassthrough: no key, which is optional: passed through.
	OutcomePassthrough Outcome = "passthrough"
	// OutcomeError: any other error (500).
	OutcomeError Outcome = "error"
)

// Outcomes lists every Outcome, for pre-declaring metric labels.
var Outcomes = []Outcome{
	OutcomeExecuted, OutcomeReplayed, OutcomeWaited, OutcomeConflict, OutcomeMismatch,
	OutcomeMissingKey, OutcomeInvalidKey, OutcomeBadRequest, OutcomeReleased,
	OutcomeAbandoned, OutcomeStoreError, OutcomePassthrough, OutcomeError,
}

// outcomeFor classifies the error that answered a request.
func outcomeFor(err error) Outcome {
	switch {
	case errors.Is(err, ErrMissingKey):
		return OutcomeMissingKey
	case errors.Is(err, once.ErrInvalidKey):
		return OutcomeInvalidKey
	case errors.Is(err, ErrRequestTooLarge), errors.Is(err, ErrBadRequestBody):
		return OutcomeBadRequest
	case errors.Is(err, once.ErrMismatch):
		return OutcomeMismatch
	case errors.Is(err, once.ErrInProgress):
		return OutcomeConflict
	case errors.Is(err, once.ErrAbandoned), errors.Is(err, once.ErrOutcomeUnknown),
		errors.Is(err, ErrUpstreamTimeout), errors.Is(err, ErrUpstreamFailed):
		return OutcomeAbandoned
	case errors.Is(err, ErrUpstreamUnreachable):
		return OutcomeReleased
	case errors.Is(err, once.ErrUnavailable), errors.Is(err, once.ErrClosed), errors.Is(err, once.ErrFenced):
		return OutcomeStoreError
	case errors.Is(err, ErrResponseNotStored):
		return OutcomeReplayed
	}
	return OutcomeError
}

// Event describes one keyed request once it is answered. It holds no body,
// no raw key beyond a redacted prefix, and no scope header: only a prefix of
// its hash.
type Event struct {
	RequestID string
	Method    string
	Path      string
	// Scope is the first 8 hex digits of the scope hash ("" when unscoped).
	Scope string
	// Key is the key, redacted by once.Redact.
	Key     string
	Outcome Outcome
	Status  int
	// Token and Attempts are those of the execution answered (0 if none).
	Token    uint64
	Attempts uint32
	// Duration is the whole request's; HandlerTime the wrapped handler's
	// (the upstream's, in the gateway), zero when it did not run.
	Duration    time.Duration
	HandlerTime time.Duration
	// Err is why the request was not executed or replayed, if it was not.
	Err   error
	start time.Time
}

// LogAttrs returns the event as log attributes.
func (e *Event) LogAttrs() []slog.Attr { return e.appendAttrs(nil) }

// appendAttrs appends the event's log attributes to attrs.
func (e *Event) appendAttrs(attrs []slog.Attr) []slog.Attr {
	attrs = append(attrs,
		slog.String("request_id", e.RequestID),
		slog.String("method", e.Method),
		slog.String("path", e.Path),
		slog.String("scope", e.Scope),
		slog.String("key", e.Key),
		slog.String("outcome", string(e.Outcome)),
		slog.Int("status", e.Status),
		slog.Uint64("token", e.Token),
		slog.Uint64("attempt", uint64(e.Attempts)),
		slog.Float64("duration_ms", ms(e.Duration)),
	)
	if e.HandlerTime > 0 {
		attrs = append(attrs, slog.Float64("upstream_ms", ms(e.HandlerTime)))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	return attrs
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// level is the log level of the event: warnings are what an operator acts on.
func (e *Event) level() slog.Level {
	switch e.Outcome {
	case OutcomeAbandoned, OutcomeStoreError, OutcomeError:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// emit logs and reports the event. The line goes to the logger's handler
// directly, as a record built on the stack: Logger.LogAttrs would also look
// up the caller's frame, which a request log line has no use for.
func (h *handler) emit(ctx context.Context, ev *Event) {
	now := time.Now()
	ev.Duration = now.Sub(ev.start)
	if h.log != nil {
		if lh, level := h.log.Handler(), ev.level(); lh.Enabled(ctx, level) {
			var buf [12]slog.Attr
			r := slog.NewRecord(now, level, "once request", 0)
			r.AddAttrs(ev.appendAttrs(buf[:0])...)
			_ = lh.Handle(ctx, r)
		}
	}
	if h.observe != nil {
		h.observe(ev)
	}
}

// maxRequestIDLen bounds an X-Request-Id taken from a client.
const maxRequestIDLen = 128

// requestID returns the client's request ID (the first of the header's
// values) if it is 1 to 128 visible ASCII characters, else a new random one.
func requestID(values []string) string {
	given := ""
	if len(values) > 0 {
		given = values[0]
	}
	if len(given) > 0 && len(given) <= maxRequestIDLen {
		ok := true
		for i := 0; i < len(given) && ok; i++ {
			ok = given[i] > 0x20 && given[i] < 0x7f
		}
		if ok {
			return given
		}
	}
	// 128 bits from the runtime's per-thread ChaCha8 generator, without the
	// system call crypto/rand may make: a request ID is unique, not secret.
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}
