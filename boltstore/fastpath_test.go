package boltstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// hookClock reads a fake time; the next read after arm() first runs hook.
type hookClock struct {
	mu   sync.Mutex
	t    time.Time
	hook func()
}

func (c *hookClock) Now() time.Time {
	c.mu.Lock()
	h := c.hook
	c.hook = nil
	c.mu.Unlock()
	if h != nil {
		h()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *hookClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// grow prefills the file so that the writes made while the test holds a read
// transaction open need no remap (bbolt's remap waits for readers).
func grow(t *testing.T, s *Store) {
	ctx := context.Background()
	big := make([]byte, 4096)
	for i := range 500 {
		req := once.ClaimRequest{Key: once.Key{ID: "fill-" + time.Duration(i).String()}, Lease: time.Hour, Retention: time.Hour}
		r, err := s.Claim(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, req.Key, r.Token, once.Result{Data: big}); err != nil {
			t.Fatal(err)
		}
	}
}

// Claim (reject policy) answers Abandoned though the holder's lease was live at
// every instant of the Claim call: the read-only fast path evaluates a stale
// snapshot at a later "now".
func TestFastPathSnapshotNotJudgedLate(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &hookClock{t: t0}
	s := MustOpen(t, Config{Clock: c.Now, SweepInterval: -1, NoSync: true})
	grow(t, s)
	req := once.ClaimRequest{Key: once.Key{ID: "k"}, Lease: 10 * time.Second, Retention: time.Hour}
	res, err := s.Claim(ctx, req)
	if err != nil || res.Outcome != once.Acquired {
		t.Fatal(res, err)
	}
	c.set(t0.Add(9 * time.Second)) // lease still live (passes at t0+10s)
	c.mu.Lock()
	c.hook = func() {
		// Runs inside the peek's read tx, before it reads "now": the holder
		// renews its lease (committed, fsynced) at t0+9s ...
		done := make(chan error)
		go func() { done <- s.Extend(ctx, req.Key, res.Token, 10*time.Second) }()
		if err := <-done; err != nil {
			t.Errorf("Extend: %v", err)
		}
		// ... and a little time passes before the peek reads the clock.
		c.set(t0.Add(10*time.Second + time.Millisecond))
	}
	c.mu.Unlock()
	got, err := s.Claim(ctx, req) // AbandonReject
	if err != nil {
		t.Fatal(err)
	}
	// At every instant during this Claim the lease was live (until t0+10s
	// before the Extend, until t0+19s after): the only linearizable answer is
	// InProgress.
	if got.Outcome != once.InProgress {
		t.Errorf("Claim = %v (record lease until %v), want in_progress; store now says lease until %v",
			got.Outcome, got.Record.LeaseExpiresAt, mustGet(t, s, req.Key).LeaseExpiresAt)
	}
}

// Get answers ErrNotFound for a record that was live throughout the call.
func TestFastPathGetNotJudgedLate(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &hookClock{t: t0}
	s := MustOpen(t, Config{Clock: c.Now, SweepInterval: -1, NoSync: true})
	grow(t, s)
	req := once.ClaimRequest{Key: once.Key{ID: "k"}, Lease: time.Second, Retention: 10 * time.Second}
	res, _ := s.Claim(ctx, req)
	if err := s.Release(ctx, req.Key, res.Token); err != nil {
		t.Fatal(err)
	}
	c.set(t0.Add(9 * time.Second)) // released record live until t0+10s
	c.mu.Lock()
	c.hook = func() {
		done := make(chan error)
		go func() { _, err := s.Claim(ctx, req); done <- err }() // re-acquires: retention to t0+19s
		if err := <-done; err != nil {
			t.Errorf("Claim: %v", err)
		}
		c.set(t0.Add(10*time.Second + time.Millisecond))
	}
	c.mu.Unlock()
	if _, err := s.Get(ctx, req.Key); err != nil {
		t.Errorf("Get = %v, want the record (live at every instant of the call)", err)
	}
}

func mustGet(t *testing.T, s *Store, k once.Key) once.Record {
	r, err := s.Get(context.Background(), k)
	if err != nil && !errors.Is(err, once.ErrNotFound) {
		t.Fatal(err)
	}
	return r
}

// TestReadPathSeesOnlyDurable: while a batch's change is applied but its
// frame not yet written and synced, readers see the state before it.
func TestReadPathSeesOnlyDurable(t *testing.T) {
	s := MustOpen(t, Config{SweepInterval: -1})
	ctx := context.Background()
	k := once.Key{ID: "durable"}
	res, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: time.Hour, Retention: time.Hour})
	if err != nil || s.Complete(ctx, k, res.Token, once.Result{Data: []byte("r")}) != nil {
		t.Fatal(err)
	}
	in, release := make(chan struct{}), make(chan struct{})
	s.testHook = func(o *op) error {
		if o.kind == opAdvance && o.key.ID == "block" {
			close(in)
			<-release
		}
		return nil
	}
	// One batch: the Delete is applied, then the hook holds the batch
	// before its frame is written.
	deleted := make(chan error, 1)
	hold := holdWriter(t, s)
	go func() { deleted <- s.Delete(ctx, k) }()
	waitFor(t, "the Delete to queue", func() bool { return len(s.queue) == 1 })
	go func() { s.Advance(ctx, "", "block", 1) }()
	waitFor(t, "the Advance to queue", func() bool { return len(s.queue) == 2 })
	hold()
	<-in
	cr, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: time.Hour, Retention: time.Hour})
	if err != nil || cr.Outcome != once.Completed {
		t.Errorf("Claim while the Delete is not yet durable = %v, %v; want completed", cr.Outcome, err)
	}
	if _, err := s.Get(ctx, k); err != nil {
		t.Errorf("Get while the Delete is not yet durable: %v", err)
	}
	close(release)
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k); !errors.Is(err, once.ErrNotFound) {
		t.Errorf("Get after the Delete: %v, want ErrNotFound", err)
	}
}
