package oncenats_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/oncenats"
)

type env struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string
	cons    jetstream.Consumer
}

// newEnv creates a stream and a durable pull consumer with a short ack wait
// on the real JetStream server, deleted at the end of the test.
func newEnv(t *testing.T, ackWait time.Duration) *env {
	t.Helper()
	nc, err := nats.Connect(testenv.NATSURL(t))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "ONCETEST_" + hex.EncodeToString(b)
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	t.Cleanup(func() { js.DeleteStream(context.Background(), name) })
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "worker", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: 20,
	})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	return &env{js: js, stream: stream, subject: name + ".orders", cons: cons}
}

func (e *env) publish(t *testing.T, key, data string, hdr map[string]string) {
	t.Helper()
	msg := nats.NewMsg(e.subject)
	msg.Data = []byte(data)
	msg.Header.Set("Order-Key", key)
	for k, v := range hdr {
		msg.Header.Set(k, v)
	}
	if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func (e *env) consume(t *testing.T, h jetstream.MessageHandler) {
	t.Helper()
	cc, err := e.cons.Consume(h)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	t.Cleanup(cc.Stop)
}

func orderKey(msg jetstream.Msg) (string, error) { return msg.Headers().Get("Order-Key"), nil }

// settled collects outcomes.
type settled struct {
	mu  sync.Mutex
	out map[oncenats.Outcome]int
	ch  chan oncenats.Outcome
}

func newSettled() *settled {
	return &settled{out: map[oncenats.Outcome]int{}, ch: make(chan oncenats.Outcome, 1000)}
}

func (s *settled) record(_ jetstream.Msg, o oncenats.Outcome, _ error) {
	s.mu.Lock()
	s.out[o]++
	s.mu.Unlock()
	s.ch <- o
}

func (s *settled) count(o oncenats.Outcome) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out[o]
}

// waitFor waits until outcome o has been seen n times.
func (s *settled) waitFor(t *testing.T, o oncenats.Outcome, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for s.count(o) < n {
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("waited for %d %q outcomes; have %v", n, o, s.snapshot())
		}
	}
}

func (s *settled) snapshot() map[oncenats.Outcome]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := map[oncenats.Outcome]int{}
	for k, v := range s.out {
		c[k] = v
	}
	return c
}

func TestDuplicatesRunOnce(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	store := memstore.New(memstore.Config{})
	var runs sync.Map
	var total atomic.Int32
	s := newSettled()
	ctx := t.Context()
	h := oncenats.Handler(ctx, store, oncenats.Config{Key: orderKey, OnSettle: s.record},
		func(ctx context.Context, msg jetstream.Msg) error {
			n, _ := runs.LoadOrStore(string(msg.Data()), new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			total.Add(1)
			return nil
		})
	e.consume(t, h)
	e.consume(t, h) // two workers on one durable consumer
	for i := range 10 {
		for range 3 { // every order published three times, as a retrying producer would
			e.publish(t, "order-"+strconv.Itoa(i), "order-"+strconv.Itoa(i), nil)
		}
	}
	s.waitFor(t, oncenats.Handled, 10)
	s.waitFor(t, oncenats.Duplicate, 20)
	if total.Load() != 10 {
		t.Fatalf("handler ran %d times for 10 orders", total.Load())
	}
}

func TestFailureNaksAndRetries(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	store := memstore.New(memstore.Config{})
	var calls atomic.Int32
	s := newSettled()
	h := oncenats.Handler(t.Context(), store, oncenats.Config{Key: orderKey, OnSettle: s.record,
		Backoff: func(uint64) time.Duration { return 50 * time.Millisecond }},
		func(ctx context.Context, msg jetstream.Msg) error {
			if calls.Add(1) < 3 {
				return context.DeadlineExceeded // transient: released, nak'd, redelivered
			}
			return nil
		})
	e.consume(t, h)
	e.publish(t, "flaky", "x", nil)
	s.waitFor(t, oncenats.Handled, 1)
	if calls.Load() != 3 || s.count(oncenats.Failed) != 2 {
		t.Fatalf("calls %d, outcomes %v", calls.Load(), s.snapshot())
	}
}

func TestPermanentTerms(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	store := memstore.New(memstore.Config{})
	var calls atomic.Int32
	s := newSettled()
	h := oncenats.Handler(t.Context(), store, oncenats.Config{Key: orderKey, OnSettle: s.record},
		func(ctx context.Context, msg jetstream.Msg) error {
			calls.Add(1)
			return once.Permanent(errDeclined)
		})
	e.consume(t, h)
	e.publish(t, "card", "x", nil)
	e.publish(t, "card", "x", nil)
	s.waitFor(t, oncenats.Permanent, 2)
	if calls.Load() != 1 {
		t.Fatalf("handler ran %d times; a permanent failure must be recorded once", calls.Load())
	}
	e.publish(t, "card", "other data", nil)
	s.waitFor(t, oncenats.Mismatch, 1)
}

type declined struct{}

func (declined) Error() string { return "card declined" }

var errDeclined = declined{}

// TestAckWaitRedelivery: the handler is slower than the consumer's ack wait
// and sends no InProgress pings, so JetStream redelivers the message to the
// other worker while the first is still working. The redelivery must not run
// the handler again: it is nak'd while the key is held (and then either acked
// as a duplicate or settled by the first worker's late ack).
func TestAckWaitRedelivery(t *testing.T) {
	e := newEnv(t, 300*time.Millisecond)
	store := memstore.New(memstore.Config{})
	var calls atomic.Int32
	s := newSettled()
	cfg := oncenats.Config{Key: orderKey, OnSettle: s.record, Heartbeat: time.Hour, Lease: 5 * time.Second}
	h := oncenats.Handler(t.Context(), store, cfg, func(ctx context.Context, msg jetstream.Msg) error {
		calls.Add(1)
		time.Sleep(1200 * time.Millisecond)
		return nil
	})
	e.consume(t, h)
	e.consume(t, h)
	e.publish(t, "slow", "x", nil)
	s.waitFor(t, oncenats.Handled, 1)
	time.Sleep(1500 * time.Millisecond) // room for any further redelivery
	if calls.Load() != 1 || s.count(oncenats.Busy) == 0 {
		t.Fatalf("calls %d, outcomes %v: want 1 call and at least one busy nak", calls.Load(), s.snapshot())
	}
}

// deadStore stands in for a worker process that died after claiming: every
// write after the claim fails, so its lease is never renewed and its key
// never completed. (A fault injected on purpose: the real store cannot be
// made to lose one worker on demand.)
type deadStore struct{ once.Store }

func (deadStore) Extend(context.Context, once.Key, uint64, time.Duration) error {
	return once.ErrUnavailable
}
func (deadStore) Complete(context.Context, once.Key, uint64, once.Result) error {
	return once.ErrUnavailable
}
func (deadStore) Release(context.Context, once.Key, uint64) error { return once.ErrUnavailable }

func TestCrashedWorker(t *testing.T) {
	for _, policy := range []once.AbandonPolicy{once.AbandonReject, once.AbandonRetry} {
		t.Run(policy.String(), func(t *testing.T) {
			e := newEnv(t, 400*time.Millisecond)
			store := memstore.New(memstore.Config{})
			var calls atomic.Int32
			crashed := make(chan struct{})
			t.Cleanup(func() { close(crashed) })
			s := newSettled()
			cfg := oncenats.Config{Key: orderKey, OnSettle: s.record, Heartbeat: time.Hour, Lease: 200 * time.Millisecond, Abandoned: policy}
			dead := oncenats.Handler(t.Context(), deadStore{store}, cfg, func(ctx context.Context, msg jetstream.Msg) error {
				calls.Add(1)
				<-crashed // never returns while the test runs
				return nil
			})
			e.consume(t, dead)
			e.publish(t, "crash", "x", nil)
			for calls.Load() == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			alive := oncenats.Handler(t.Context(), store, cfg, func(ctx context.Context, msg jetstream.Msg) error {
				calls.Add(1)
				return nil
			})
			e.consume(t, alive)
			if policy == once.AbandonReject {
				s.waitFor(t, oncenats.Unknown, 1)
				if calls.Load() != 1 {
					t.Fatalf("reject: handler ran %d times", calls.Load())
				}
				return
			}
			s.waitFor(t, oncenats.Handled, 1)
			if calls.Load() != 2 {
				t.Fatalf("retry: handler ran %d times, want 2 (the dead worker's and the takeover)", calls.Load())
			}
		})
	}
}

// TestStaleEventGuard is seed 001's subscription example: "cancel" (version
// 2) is handled before a delayed "renew" (version 1) arrives; the renew must
// not be applied.
func TestStaleEventGuard(t *testing.T) {
	e := newEnv(t, 5*time.Second)
	store := memstore.New(memstore.Config{})
	var mu sync.Mutex
	var applied []string
	s := newSettled()
	cfg := oncenats.Config{Key: orderKey, OnSettle: s.record,
		Version: func(msg jetstream.Msg) (string, uint64, bool) {
			v, err := strconv.ParseUint(msg.Headers().Get("Version"), 10, 64)
			return "subscription-42", v, err == nil
		}}
	e.consume(t, oncenats.Handler(t.Context(), store, cfg, func(ctx context.Context, msg jetstream.Msg) error {
		mu.Lock()
		applied = append(applied, string(msg.Data()))
		mu.Unlock()
		return nil
	}))
	e.publish(t, "evt-2", "cancel", map[string]string{"Version": "2"})
	s.waitFor(t, oncenats.Handled, 1)
	e.publish(t, "evt-1", "renew", map[string]string{"Version": "1"})
	s.waitFor(t, oncenats.Stale, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 1 || applied[0] != "cancel" {
		t.Fatalf("applied %v, want only the cancel", applied)
	}
}
