package boltstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// TestGroupCommitIndependentResults releases 64 goroutines at once, each
// claiming and completing a key of its own: every one gets its own token
// and result back, and the commits carry more than one operation each.
func TestGroupCommitIndependentResults(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	const n = 64
	var (
		start sync.WaitGroup
		wg    sync.WaitGroup
		ok    atomic.Int32
	)
	start.Add(1)
	for g := range n {
		wg.Go(func() {
			start.Wait()
			req := claimReq(fmt.Sprint("g-", g))
			res, err := s.Claim(ctx, req)
			if err != nil || res.Outcome != once.Acquired || res.Token != 1 || res.Record.Key != req.Key {
				t.Errorf("goroutine %d: Claim = %+v, %v", g, res, err)
				return
			}
			want := once.Result{Data: []byte(fmt.Sprint("result-", g))}
			if err := s.Complete(ctx, req.Key, res.Token, want); err != nil {
				t.Errorf("goroutine %d: Complete: %v", g, err)
				return
			}
			got, err := s.Get(ctx, req.Key)
			if err != nil || !got.Result.Equal(want) || got.State != once.StateCompleted {
				t.Errorf("goroutine %d: Get = %+v, %v", g, got, err)
				return
			}
			ok.Add(1)
		})
	}
	start.Done()
	wg.Wait()
	if ok.Load() != n {
		t.Fatalf("%d of %d goroutines got their own results", ok.Load(), n)
	}
	if c := s.commits.Load(); c >= 2*n {
		t.Errorf("%d commits for %d operations: no grouping", c, 2*n)
	}
	t.Logf("%d operations in %d commits", s.committed.Load(), s.commits.Load())
}

// holdWriter keeps the writer blocked in a batch of its own until release
// is called, so that everything queued meanwhile is committed as one batch.
// It wraps s.testHook, which must be set before.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	next := s.testHook
	s.testHook = func(o *op) error {
		if o.kind == opAdvance && o.key.ID == "sentinel" {
			close(in)
			<-out
			return nil
		}
		if next != nil {
			return next(o)
		}
		return nil
	}
	sentinel := make(chan error, 1)
	go func() {
		_, _, err := s.Advance(context.Background(), "", "sentinel", 1)
		sentinel <- err
	}()
	<-in
	return func() {
		t.Helper()
		close(out)
		if err := <-sentinel; err != nil {
			t.Fatalf("sentinel: %v", err)
		}
	}
}

// waitFor polls cond until it holds, failing after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// batchCall is one operation of a batch test and the error it must get.
type batchCall struct {
	name string
	call func() error
	want error
}

// runBatch holds the writer, queues calls, checks they are all queued,
// releases the writer and returns each call's error.
func runBatch(t *testing.T, s *Store, calls []batchCall) []error {
	t.Helper()
	release := holdWriter(t, s)
	commits := s.commits.Load()
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() { errs[i] = c.call() })
	}
	waitFor(t, "the calls to queue", func() bool { return len(s.queue) == len(calls) })
	release()
	wg.Wait()
	if got := s.commits.Load() - commits; got != 1 {
		t.Errorf("the calls took %d commits, want 1", got)
	}
	return errs
}

// TestGroupCommitFencedDoesNotDisturb commits good operations, fenced ones
// and a conflicting pair in one transaction: each gets its own outcome.
func TestGroupCommitFencedDoesNotDisturb(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	var calls []batchCall
	for i := range 8 {
		req := claimReq(fmt.Sprint("held-", i))
		tok := MustClaim(t, s, req, once.Acquired).Token
		calls = append(calls,
			batchCall{fmt.Sprint("good complete ", i), func() error {
				return s.Complete(ctx, req.Key, tok, once.Result{Data: []byte(req.Key.ID)})
			}, nil},
			batchCall{fmt.Sprint("stale complete ", i), func() error {
				return s.Complete(ctx, once.Key{Scope: "s", ID: fmt.Sprint("held-", (i+1)%8)}, tok+1, once.Result{})
			}, once.ErrFenced},
			batchCall{fmt.Sprint("fresh claim ", i), func() error {
				res, err := s.Claim(ctx, claimReq(fmt.Sprint("fresh-", i)))
				if err == nil && (res.Outcome != once.Acquired || res.Token != 1) {
					err = fmt.Errorf("claim = %v token %d", res.Outcome, res.Token)
				}
				return err
			}, nil},
		)
	}
	errs := runBatch(t, s, calls)
	for i, c := range calls {
		if !errors.Is(errs[i], c.want) || (c.want == nil && errs[i] != nil) {
			t.Errorf("%s: %v, want %v", c.name, errs[i], c.want)
		}
	}
	for i := range 8 {
		got, err := s.Get(ctx, once.Key{Scope: "s", ID: fmt.Sprint("held-", i)})
		if err != nil || got.State != once.StateCompleted || string(got.Result.Data) != got.Key.ID {
			t.Errorf("held-%d after the batch: %+v, %v", i, got, err)
		}
	}
	checkIndex(t, s)
}

// TestGroupCommitSameKeyInOrder puts two completions of one token with
// different results in one batch: the first applied wins, the second is
// fenced, exactly as if they had been committed one after the other.
func TestGroupCommitSameKeyInOrder(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	req := claimReq("contested")
	tok := MustClaim(t, s, req, once.Acquired).Token
	var calls []batchCall
	for _, r := range []string{"a", "b"} {
		calls = append(calls, batchCall{r, func() error {
			return s.Complete(ctx, req.Key, tok, once.Result{Data: []byte(r)})
		}, nil})
	}
	errs := runBatch(t, s, calls)
	got, err := s.Get(ctx, req.Key)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		won := string(got.Result.Data) == c.name
		if won && errs[i] != nil || !won && !errors.Is(errs[i], once.ErrFenced) {
			t.Errorf("complete %s (stored result %q): %v", c.name, got.Result.Data, errs[i])
		}
	}
}

// TestGroupCommitFailedTransaction fails a batch's transaction: every
// operation in it gets ErrUnavailable, none is stored, and the store goes on.
func TestGroupCommitFailedTransaction(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	s.testHook = func(o *op) error {
		if o.key.ID == "poison" {
			return errors.New("injected failure")
		}
		return nil
	}
	var calls []batchCall
	for _, id := range []string{"a", "b", "poison", "c"} {
		calls = append(calls, batchCall{id, func() error {
			_, err := s.Claim(ctx, claimReq(id))
			return err
		}, once.ErrUnavailable})
	}
	errs := runBatch(t, s, calls)
	for i, c := range calls {
		if !errors.Is(errs[i], c.want) {
			t.Errorf("claim %s: %v, want ErrUnavailable", c.name, errs[i])
		}
	}
	if n := recordCount(t, s); n != 0 {
		t.Fatalf("%d records stored by a failed transaction", n)
	}
	MustClaim(t, s, claimReq("a"), once.Acquired)
}
