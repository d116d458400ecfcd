package boltstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// The Executor's re-claim while waiting on another holder runs under the
// callers' (cancellable) context. If every caller leaves while that Claim is
// queued, boltstore returns ctx.Err() but still commits the acquisition: the
// key is left IN_PROGRESS under a token nobody holds, fn never ran, and with
// AbandonReject every later Do gets ErrAbandoned until retention passes.
func TestExecutorCancelledReclaimDoesNotWedge(t *testing.T) {
	var armed atomic.Bool
	inHook, unblock := make(chan struct{}), make(chan struct{})
	s := MustOpen(t, Config{SweepInterval: -1})
	s.testHook = func(o *op) error {
		if o.kind == opClaim && armed.CompareAndSwap(true, false) {
			close(inHook)
			<-unblock
		}
		return nil
	}
	k := once.Key{ID: "wedge"}
	lease := 300 * time.Millisecond
	other, err := s.Claim(context.Background(), once.ClaimRequest{Key: k, Lease: time.Hour, Retention: time.Hour})
	if err != nil || other.Outcome != once.Acquired {
		t.Fatal(other, err)
	}
	e := once.New(s, once.Config{Lease: lease, Wait: 5 * time.Second})
	var runs atomic.Int32
	fn := func(context.Context) (once.Result, error) { runs.Add(1); return once.Result{Data: []byte("ok")}, nil }

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := e.Do(ctx, k, nil, fn); errc <- err }()
	time.Sleep(50 * time.Millisecond) // Do is now polling (waitOther)
	armed.Store(true)
	if err := s.Release(context.Background(), k, other.Token); err != nil {
		t.Fatal(err)
	}
	<-inHook // the waiter's re-claim is in the writer
	cancel() // the only caller leaves
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	close(unblock) // the claim commits: acquired, token 2
	e.Close()

	time.Sleep(2 * lease)
	_, err = once.New(s, once.Config{Lease: lease, Wait: -1}).Do(context.Background(), k, nil, fn)
	r, _ := s.Get(context.Background(), k)
	t.Logf("record: state %v token %d attempts %d; fn runs %d; Do = %v", r.State, r.Token, r.Attempts, runs.Load(), err)
	if runs.Load() == 0 && errors.Is(err, once.ErrAbandoned) {
		t.Errorf("key wedged as abandoned though fn never ran: Do = %v", err)
	}
}
