// Package oncenats processes NATS JetStream messages once per key.
//
// JetStream deduplicates publishes (Nats-Msg-Id within a window) but its
// consumers are at-least-once: a message is redelivered when its ack wait
// passes, when the handler naks, or when a consumer dies mid-message. Handler
// wraps a consumer's handler so that each key's effect happens once:
//
//   - a message whose key is already completed is acked without running the
//     handler (a duplicate publish or a redelivery after a lost ack);
//   - the handler's success completes the key and acks;
//   - a once.Permanent error completes the key with the error and terms the
//     message (no redelivery can change it);
//   - any other error releases the key and naks with backoff, so the
//     redelivery runs the handler again;
//   - while the handler runs, the key's lease is renewed and the message's ack
//     timer is reset with InProgress pings;
//   - a message whose key another consumer holds is nak'd until that holder
//     finishes; one whose holder died (abandoned) is termed under the default
//     policy (at most once), or run again under AbandonRetry (at least once,
//     the dead holder fenced off).
//
// The key is the Nats-Msg-Id header by default. The fingerprint is a SHA-256
// of the message data, so a key reused for other data is termed as a mismatch
// rather than silently acked.
//
// With Config.Version set, Handler is also a stale-event guard: each message
// names an entity and a version, a message whose version is not greater than
// the entity's current one is acked without running the handler, and a
// handled message advances the entity's version. A delayed "renew" can then
// not undo a later "cancel".
package oncenats

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/oncehq/once"
)

// Config configures Handler. Zero values are documented defaults.
type Config struct {
	// Scope namespaces the keys (e.g. the stream or the service's name).
	Scope string
	// Key returns a message's idempotency key. If nil, the Nats-Msg-Id
	// header is used, and a message without one gets the stream name and
	// the SHA-256 of its subject and data (so identical republished payloads
	// count as one).
	Key func(msg jetstream.Msg) (string, error)
	// Version, if set, returns the entity and version a message applies; ok
	// false means the message is not versioned.
	Version func(msg jetstream.Msg) (entity string, version uint64, ok bool)
	// Lease, Retention and Abandoned configure the claims (see once.Config).
	// Lease defaults to 30s; keep it longer than the consumer's AckWait is
	// not needed: the lease is renewed while the handler runs.
	Lease     time.Duration
	Retention time.Duration
	Abandoned once.AbandonPolicy
	// Heartbeat is how often the message's ack timer is reset with
	// InProgress while the handler runs (default 5s; keep it well under the
	// consumer's AckWait).
	Heartbeat time.Duration
	// Backoff is the delay of the nak after a handler failure, by delivery
	// count (default: 1s doubling up to 1m).
	Backoff func(numDelivered uint64) time.Duration
	// Logger receives one line per message that is not simply handled. Nil
	// discards.
	Logger *slog.Logger
	// OnSettle, if set, is called after each message is acked, nak'd or
	// termed (for metrics and tests).
	OnSettle func(msg jetstream.Msg, out Outcome, err error)
}

// HandlerFunc processes one message. Its context is cancelled if the key's
// lease is lost.
type HandlerFunc func(ctx context.Context, msg jetstream.Msg) error

// Handler returns a jetstream.MessageHandler that runs fn once per key over
// store. ctx bounds every call (cancel it when the consumer stops). The
// returned handler is safe for concurrent use.
func Handler(ctx context.Context, store once.Store, cfg Config, fn HandlerFunc) jetstream.MessageHandler {
	p := newProcessor(store, cfg, fn)
	return func(msg jetstream.Msg) { p.handle(ctx, msg) }
}

type processor struct {
	store once.Store
	exec  *once.Executor
	cfg   Config
	fn    HandlerFunc
	log   *slog.Logger
}

func newProcessor(store once.Store, cfg Config, fn HandlerFunc) *processor {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.Backoff == nil {
		cfg.Backoff = defaultBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	exec := once.New(store, once.Config{
		Lease: cfg.Lease, Retention: cfg.Retention, Abandoned: cfg.Abandoned,
		Wait:   -1, // a busy key is nak'd, not waited on: the consumer moves on
		Logger: cfg.Logger,
	})
	return &processor{store: store, exec: exec, cfg: cfg, fn: fn, log: cfg.Logger}
}

func defaultBackoff(n uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < n && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// Outcome says what Handler did with a message. Config.OnSettle receives it.
type Outcome string

// The outcomes of a message.
const (
	Handled   Outcome = "handled"   // fn ran and succeeded: acked
	Duplicate Outcome = "duplicate" // key already completed: acked, fn not run
	Stale     Outcome = "stale"     // version not newer than the entity's: acked, fn not run
	Failed    Outcome = "failed"    // fn failed: key released, nak'd with backoff
	Permanent Outcome = "permanent" // fn failed permanently (now or before): termed
	Busy      Outcome = "busy"      // another consumer holds the key: nak'd after its lease
	Unknown   Outcome = "unknown"   // the key was abandoned mid-effect: termed (outcome unknown)
	Mismatch  Outcome = "mismatch"  // key reused with other data: termed
	Invalid   Outcome = "invalid"   // no usable key: termed
	Error     Outcome = "error"     // the store failed: nak'd with backoff
)

func (p *processor) handle(ctx context.Context, msg jetstream.Msg) {
	out, err := p.process(ctx, msg)
	p.settle(msg, out, err)
}

// settle acks, naks or terms msg according to the outcome.
func (p *processor) settle(msg jetstream.Msg, out Outcome, err error) {
	var ackErr error
	switch out {
	case Handled, Duplicate, Stale:
		ackErr = msg.Ack()
	case Failed, Error:
		ackErr = msg.NakWithDelay(p.cfg.Backoff(delivered(msg)))
	case Busy:
		// The holder may finish long before its lease passes: come back at
		// the backoff's pace, but no later than the lease.
		d := p.cfg.Backoff(delivered(msg))
		if left, ok := once.RetryAfter(err); ok {
			d = min(d, left)
		}
		ackErr = msg.NakWithDelay(max(d, 50*time.Millisecond))
	default:
		ackErr = msg.TermWithReason(string(out))
	}
	if p.cfg.OnSettle != nil {
		p.cfg.OnSettle(msg, out, err)
	}
	if out != Handled || ackErr != nil {
		p.log.Info("oncenats: message settled", "subject", msg.Subject(), "outcome", string(out),
			"delivered", delivered(msg), "err", errString(err), "ack_err", errString(ackErr))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func delivered(msg jetstream.Msg) uint64 {
	if md, err := msg.Metadata(); err == nil {
		return md.NumDelivered
	}
	return 1
}

// process runs fn once for msg's key and says what to do with msg.
func (p *processor) process(ctx context.Context, msg jetstream.Msg) (Outcome, error) {
	id, err := p.key(msg)
	if err == nil {
		err = once.ValidateID(id)
	}
	if err != nil {
		return Invalid, err
	}
	key := once.Key{Scope: p.cfg.Scope, ID: id}
	entity, version, versioned := "", uint64(0), false
	if p.cfg.Version != nil {
		entity, version, versioned = p.cfg.Version(msg)
	}
	if versioned {
		// Advance to 0 never applies: it reads the current version.
		if _, cur, err := p.store.Advance(ctx, p.cfg.Scope, entity, 0); err != nil {
			return Error, err
		} else if version <= cur {
			return Stale, nil
		}
	}
	sum := sha256.Sum256(msg.Data())
	x, err := p.exec.Do(ctx, key, sum[:], func(ctx context.Context) (once.Result, error) {
		stop := p.keepAlive(msg)
		defer stop()
		return once.Result{}, p.fn(ctx, msg)
	})
	if err != nil {
		return classify(err), err
	}
	if x.Replayed || x.Shared {
		return Duplicate, nil
	}
	if versioned {
		if applied, cur, err := p.store.Advance(ctx, p.cfg.Scope, entity, version); err != nil || !applied {
			// The effect happened; a newer version got in meanwhile. Nothing
			// to undo, but say so.
			p.log.Warn("oncenats: version not advanced after handling", "entity", once.Redact(entity),
				"version", version, "current", cur, "err", errString(err))
		}
	}
	return Handled, nil
}

func classify(err error) Outcome {
	switch {
	case errors.Is(err, once.ErrPermanent):
		return Permanent
	case errors.Is(err, once.ErrInProgress):
		return Busy
	case errors.Is(err, once.ErrAbandoned):
		return Unknown
	case errors.Is(err, once.ErrMismatch):
		return Mismatch
	case errors.Is(err, once.ErrInvalidKey):
		return Invalid
	case errors.Is(err, once.ErrUnavailable), errors.Is(err, once.ErrClosed), errors.Is(err, once.ErrFenced):
		return Error
	}
	return Failed
}

// keepAlive resets msg's ack timer every Heartbeat until stop is called.
func (p *processor) keepAlive(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(p.cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

func (p *processor) key(msg jetstream.Msg) (string, error) {
	if p.cfg.Key != nil {
		return p.cfg.Key(msg)
	}
	if id := msg.Headers().Get(jetstream.MsgIDHeader); id != "" {
		return id, nil
	}
	stream := ""
	if md, err := msg.Metadata(); err == nil {
		stream = md.Stream
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", msg.Subject())
	h.Write(msg.Data())
	return stream + ":" + hex.EncodeToString(h.Sum(nil)), nil
}
