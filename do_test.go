package once_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
)

// countingStore counts the calls that reach the store, and can make some of
// them fail.
type countingStore struct {
	once.Store
	claims, completes, releases, extends atomic.Int64

	// failComplete and failExtend, if set, are asked before each call;
	// a non-nil answer is returned instead of calling the store.
	failComplete func() error
	failExtend   func() error
	failClaim    func() error
}

func (s *countingStore) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	s.claims.Add(1)
	if s.failClaim != nil {
		if err := s.failClaim(); err != nil {
			return once.ClaimResult{}, err
		}
	}
	return s.Store.Claim(ctx, req)
}

func (s *countingStore) Complete(ctx context.Context, key once.Key, token uint64, res once.Result) error {
	s.completes.Add(1)
	if s.failComplete != nil {
		if err := s.failComplete(); err != nil {
			return err
		}
	}
	return s.Store.Complete(ctx, key, token, res)
}

func (s *countingStore) Release(ctx context.Context, key once.Key, token uint64) error {
	s.releases.Add(1)
	return s.Store.Release(ctx, key, token)
}

func (s *countingStore) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	s.extends.Add(1)
	if s.failExtend != nil {
		if err := s.failExtend(); err != nil {
			return err
		}
	}
	return s.Store.Extend(ctx, key, token, lease)
}

func (s *countingStore) calls() int64 {
	return s.claims.Load() + s.completes.Load() + s.releases.Load() + s.extends.Load()
}

func (s *countingStore) reset() {
	s.claims.Store(0)
	s.completes.Store(0)
	s.releases.Store(0)
	s.extends.Store(0)
}

// fakeClock is a store clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newCounting() *countingStore {
	return &countingStore{Store: memstore.New(memstore.Config{})}
}

func newExecutor(tb testing.TB, st once.Store, cfg once.Config) *once.Executor {
	tb.Helper()
	ex := once.New(st, cfg)
	tb.Cleanup(func() { ex.Close() })
	return ex
}

func result(s string) once.Result { return once.Result{Data: []byte(s)} }

func returns(s string) once.Func {
	return func(context.Context) (once.Result, error) { return result(s), nil }
}

func mustNotRun(tb testing.TB) once.Func {
	return func(context.Context) (once.Result, error) {
		tb.Error("fn ran, want it not to")
		return once.Result{}, errors.New("must not run")
	}
}

func mustDo(tb testing.TB, ex *once.Executor, key once.Key, fp []byte, fn once.Func) once.Execution {
	tb.Helper()
	x, err := ex.Do(context.Background(), key, fp, fn)
	if err != nil {
		tb.Fatalf("Do(%v): %v", key, err)
	}
	return x
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func claimErr(tb testing.TB, err, want error) *once.ClaimError {
	tb.Helper()
	var ce *once.ClaimError
	if !errors.As(err, &ce) || !errors.Is(err, want) {
		tb.Fatalf("err = %v, want a *ClaimError wrapping %v", err, want)
	}
	return ce
}

// blocker is a Func that signals when it starts and returns when released.
type blocker struct {
	started, release chan struct{}
	runs             atomic.Int64
	res              once.Result
}

func newBlocker(res string) *blocker {
	return &blocker{started: make(chan struct{}), release: make(chan struct{}), res: result(res)}
}

func (b *blocker) fn(ctx context.Context) (once.Result, error) {
	if b.runs.Add(1) == 1 {
		close(b.started)
	}
	<-b.release
	return b.res, nil
}

// doAsync runs Do in a goroutine and delivers its answer on the channel.
type answer struct {
	x   once.Execution
	err error
}

func doAsync(ctx context.Context, ex *once.Executor, key once.Key, fp []byte, fn once.Func) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		x, err := ex.Do(ctx, key, fp, fn)
		ch <- answer{x, err}
	}()
	return ch
}

func TestDoDupSuppress(t *testing.T) {
	st := newCounting()
	ex := newExecutor(t, st, once.Config{})
	key := once.Key{Scope: "tenant", ID: "dup"}
	const n = 200
	var runs atomic.Int64
	fn := func(context.Context) (once.Result, error) {
		runs.Add(1)
		// Hold the execution until every caller has attached to it.
		eventually(t, "all callers attached", func() bool { return ex.Callers(key) == n })
		return result("bar"), nil
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	var shared, replayed atomic.Int64
	for range n {
		wg.Go(func() {
			<-start
			x, err := ex.Do(context.Background(), key, []byte("fp"), fn)
			if err != nil {
				t.Errorf("Do: %v", err)
				return
			}
			if string(x.Data) != "bar" || x.Token != 1 || x.Attempts != 1 {
				t.Errorf("Do = %+v, want bar with token 1, attempt 1", x)
			}
			if x.Shared {
				shared.Add(1)
			}
			if x.Replayed {
				replayed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := runs.Load(); got != 1 {
		t.Errorf("fn ran %d times, want 1", got)
	}
	if got := st.claims.Load(); got != 1 {
		t.Errorf("%d Claims reached the store, want 1", got)
	}
	if got := st.completes.Load(); got != 1 {
		t.Errorf("%d Completes reached the store, want 1", got)
	}
	if shared.Load() != n-1 || replayed.Load() != 0 {
		t.Errorf("shared = %d, replayed = %d, want %d and 0", shared.Load(), replayed.Load(), n-1)
	}
}

func TestDoSharedResultIsACopy(t *testing.T) {
	ex := newExecutor(t, memstore.New(memstore.Config{}), once.Config{})
	key := once.Key{ID: "copy"}
	b := newBlocker("original")
	owner := doAsync(context.Background(), ex, key, nil, b.fn)
	<-b.started
	waiter := doAsync(context.Background(), ex, key, nil, mustNotRun(t))
	eventually(t, "waiter attached", func() bool { return ex.Callers(key) == 2 })
	close(b.release)
	a, w := <-owner, <-waiter
	if a.err != nil || w.err != nil {
		t.Fatalf("errors: %v, %v", a.err, w.err)
	}
	w.x.Data[0] = 'X'
	if string(a.x.Data) != "original" {
		t.Errorf("owner's result changed to %q by a waiter", a.x.Data)
	}
}

// The caller that ran fn gets its own copy of fn's result too, joined or not:
// fn may return a slice or map it keeps, and callers of two keys must not
// share it.
func TestDoOwnResultIsACopy(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context // Background: fn on the caller's goroutine; cancellable: on a worker
		err  error
	}{
		{"caller's goroutine", context.Background(), nil},
		{"worker", cancelled, nil},
		{"permanent error", context.Background(), once.Permanent(errors.New("declined"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := newExecutor(t, memstore.New(memstore.Config{}), once.Config{})
			cached := once.Result{Data: []byte("cached"), Meta: map[string]string{"k": "v"}}
			fn := func(context.Context) (once.Result, error) { return cached, tc.err }
			var xs []once.Execution
			for _, id := range []string{"a", "b"} {
				x, err := ex.Do(tc.ctx, once.Key{ID: id}, nil, fn)
				if !errors.Is(err, tc.err) {
					t.Fatalf("Do(%s): %v, want %v", id, err, tc.err)
				}
				xs = append(xs, x)
			}
			xs[0].Data[0] = 'X'
			xs[0].Meta["k"] = "changed"
			if string(cached.Data) != "cached" || cached.Meta["k"] != "v" {
				t.Errorf("fn's own result changed to %q %v through a caller's", cached.Data, cached.Meta)
			}
			if string(xs[1].Data) != "cached" || xs[1].Meta["k"] != "v" {
				t.Errorf("another key's caller got %q %v, changed by the first", xs[1].Data, xs[1].Meta)
			}
		})
	}
}

func TestDoReplayIsOneClaim(t *testing.T) {
	st := newCounting()
	ex := newExecutor(t, st, once.Config{})
	key := once.Key{ID: "replay"}
	first := mustDo(t, ex, key, []byte("fp"), returns("r1"))
	if first.Replayed || first.Shared || first.Token != 1 {
		t.Fatalf("first Do = %+v, want fresh with token 1", first)
	}
	st.reset()
	x := mustDo(t, ex, key, []byte("fp"), mustNotRun(t))
	if !x.Replayed || x.Shared || string(x.Data) != "r1" || x.Token != 1 || x.Attempts != 1 {
		t.Errorf("replay = %+v, want Replayed r1 with token 1", x)
	}
	if st.claims.Load() != 1 || st.calls() != 1 {
		t.Errorf("replay made %d store calls (%d claims), want exactly 1 Claim", st.calls(), st.claims.Load())
	}
	// An empty fingerprint opts out of the check and replays too.
	if x := mustDo(t, ex, key, nil, mustNotRun(t)); !x.Replayed {
		t.Errorf("replay without fingerprint = %+v, want Replayed", x)
	}
}

func TestDoErrorReleases(t *testing.T) {
	st := newCounting()
	ex := newExecutor(t, st, once.Config{})
	key := once.Key{ID: "err"}
	boom := errors.New("boom")
	_, err := ex.Do(context.Background(), key, nil, func(context.Context) (once.Result, error) {
		return once.Result{}, boom
	})
	if err != boom { // passed through as it is
		t.Fatalf("err = %v, want boom", err)
	}
	if st.releases.Load() != 1 || st.completes.Load() != 0 {
		t.Errorf("releases = %d, completes = %d, want 1 and 0", st.releases.Load(), st.completes.Load())
	}
	x := mustDo(t, ex, key, nil, returns("second"))
	if x.Replayed || string(x.Data) != "second" || x.Token != 2 || x.Attempts != 2 {
		t.Errorf("retry = %+v, want a fresh run with token 2, attempt 2", x)
	}
}

func TestDoPermanent(t *testing.T) {
	ex := newExecutor(t, memstore.New(memstore.Config{}), once.Config{})
	key := once.Key{ID: "declined"}
	declined := errors.New("card declined")
	x, err := ex.Do(context.Background(), key, nil, func(context.Context) (once.Result, error) {
		return result("partial"), fmt.Errorf("charge: %w", once.Permanent(declined))
	})
	if !errors.Is(err, once.ErrPermanent) || !errors.Is(err, declined) {
		t.Fatalf("err = %v, want ErrPermanent wrapping the original", err)
	}
	if x.Token != 1 || x.Meta[once.MetaError] != "charge: card declined" {
		t.Errorf("fresh execution = %+v, want token 1 and the message recorded", x)
	}
	x, err = ex.Do(context.Background(), key, nil, mustNotRun(t))
	if !errors.Is(err, once.ErrPermanent) || err.Error() != "charge: card declined" {
		t.Fatalf("replay err = %v, want ErrPermanent with the original message", err)
	}
	var pe *once.PermanentError
	if !errors.As(err, &pe) {
		t.Errorf("replay err %T is not a *PermanentError", err)
	}
	if !x.Replayed || string(x.Data) != "partial" || x.Meta[once.MetaError] != "charge: card declined" {
		t.Errorf("replay = %+v, want the stored result", x)
	}
	if once.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
}

func TestDoAbandon(t *testing.T) {
	clock := newFakeClock()
	st := &countingStore{Store: memstore.New(memstore.Config{Clock: clock.Now})}
	const lease = time.Minute
	ex := newExecutor(t, st, once.Config{Lease: lease})
	key := once.Key{ID: "unknown"}
	cut := errors.New("connection reset after the request was sent")
	x, err := ex.Do(context.Background(), key, nil, func(context.Context) (once.Result, error) {
		return once.Result{}, once.Abandon(cut)
	})
	if !errors.Is(err, once.ErrOutcomeUnknown) || !errors.Is(err, cut) || x.Token != 1 {
		t.Fatalf("Do = %+v, %v; want ErrOutcomeUnknown wrapping the cause, token 1", x, err)
	}
	if st.completes.Load() != 0 || st.releases.Load() != 0 {
		t.Errorf("completes = %d, releases = %d, want neither", st.completes.Load(), st.releases.Load())
	}
	rec, err := st.Get(context.Background(), key)
	if err != nil || rec.State != once.StateInProgress {
		t.Fatalf("record = %+v, %v; want it left in progress", rec, err)
	}
	clock.Advance(lease)
	_, err = ex.Do(context.Background(), key, nil, mustNotRun(t))
	claimErr(t, err, once.ErrAbandoned)
}

func TestDoGoexit(t *testing.T) {
	goexit := func(context.Context) (once.Result, error) {
		runtime.Goexit()
		return once.Result{}, nil
	}
	t.Run("CallerThatCanLeave", func(t *testing.T) { // fn ran on a goroutine of its own
		st := newCounting()
		ex := newExecutor(t, st, once.Config{})
		key := once.Key{ID: "goexit"}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := ex.Do(ctx, key, nil, goexit)
		if err == nil || st.releases.Load() != 1 {
			t.Fatalf("err = %v, releases = %d; want an error and the key released", err, st.releases.Load())
		}
		if x := mustDo(t, ex, key, nil, returns("ok")); x.Attempts != 2 {
			t.Errorf("after Goexit = %+v, want a second attempt", x)
		}
	})
	t.Run("CallerThatCannotLeave", func(t *testing.T) { // fn ran on the caller's goroutine
		st := newCounting()
		ex := newExecutor(t, st, once.Config{})
		key := once.Key{ID: "goexit-inline"}
		exited := make(chan bool)
		go func() {
			returned := false
			defer func() { exited <- returned }()
			ex.Do(context.Background(), key, nil, goexit)
			returned = true
		}()
		if <-exited || st.releases.Load() != 1 {
			t.Fatalf("Do returned, or releases = %d; want the caller's goroutine to exit and the key released", st.releases.Load())
		}
		if x := mustDo(t, ex, key, nil, returns("ok")); x.Attempts != 2 {
			t.Errorf("after Goexit = %+v, want a second attempt", x)
		}
	})
}

func TestDoPanic(t *testing.T) {
	st := newCounting()
	ex := newExecutor(t, st, once.Config{})
	key := once.Key{ID: "panic"}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		ex.Do(context.Background(), key, nil, func(context.Context) (once.Result, error) { panic("boom") })
		t.Error("Do returned, want a panic")
	}()
	if st.releases.Load() != 1 {
		t.Errorf("releases = %d, want 1", st.releases.Load())
	}
	if x := mustDo(t, ex, key, nil, returns("ok")); x.Attempts != 2 || x.Replayed {
		t.Errorf("after panic = %+v, want a fresh second attempt", x)
	}
}

func TestDoPanicWaitersGetError(t *testing.T) {
	ex := newExecutor(t, memstore.New(memstore.Config{}), once.Config{})
	key := once.Key{ID: "panic-shared"}
	const waiters = 5
	fn := func(context.Context) (once.Result, error) {
		eventually(t, "waiters attached", func() bool { return ex.Callers(key) == waiters+1 })
		panic("boom")
	}
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		ex.Do(context.Background(), key, nil, fn)
	}()
	eventually(t, "flight started", func() bool { return ex.Callers(key) == 1 })
	var answers []<-chan answer
	for range waiters {
		answers = append(answers, doAsync(context.Background(), ex, key, nil, mustNotRun(t)))
	}
	if r := <-panicked; r != "boom" {
		t.Errorf("owner recovered %v, want boom", r)
	}
	for _, a := range answers {
		if got := <-a; !errors.Is(got.err, once.ErrPanicked) {
			t.Errorf("waiter err = %v, want ErrPanicked", got.err)
		}
	}
}

// panickyStore panics in one call of one method: the Claim or Complete
// numbered at (from 1), once hold is closed.
type panickyStore struct {
	once.Store
	method string
	at     int64
	hold   chan struct{}
	calls  atomic.Int64
}

func (s *panickyStore) maybePanic(method string) {
	if method == s.method && s.calls.Add(1) == s.at {
		<-s.hold
		panic("store boom")
	}
}

func (s *panickyStore) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	s.maybePanic("Claim")
	return s.Store.Claim(ctx, req)
}

func (s *panickyStore) Complete(ctx context.Context, key once.Key, token uint64, res once.Result) error {
	s.maybePanic("Complete")
	return s.Store.Complete(ctx, key, token, res)
}

// A store call that panics ends the execution: the caller that started it
// panics, a caller that joined it gets ErrPanicked, the key takes new
// callers (who get the store's answer) and Close returns. Without that, net/http
// recovering the caller's panic would leave the key and Close wedged.
func TestDoStorePanics(t *testing.T) {
	cancellable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name   string
		method string
		at     int64
		ctx    context.Context // Background: fn on the caller's goroutine; cancellable: on a worker
		held   bool            // the key is held by another process at first: the panic is a re-claim's
		// attempts of the later Do that works: 1 if the key was never
		// acquired, 2 if it was (taken over once its lease passed)
		attempts uint32
	}{
		{"FirstClaim", "Claim", 1, context.Background(), false, 1},
		{"ReClaimOnCallersGoroutine", "Claim", 2, context.Background(), true, 2},
		{"ReClaimOnWorker", "Claim", 2, cancellable, true, 2},
		{"CompleteOnCallersGoroutine", "Complete", 1, context.Background(), false, 2},
		{"CompleteOnWorker", "Complete", 1, cancellable, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			mem := memstore.New(memstore.Config{Clock: clock.Now})
			st := &panickyStore{Store: mem, method: tc.method, at: tc.at, hold: make(chan struct{})}
			const lease = time.Minute
			ex := once.New(st, once.Config{Lease: lease, Abandoned: once.AbandonRetry})
			key := once.Key{ID: "store-panic"}
			if tc.held {
				other := newExecutor(t, mem, once.Config{Lease: lease})
				b := newBlocker("other")
				got := doAsync(context.Background(), other, key, nil, func(ctx context.Context) (once.Result, error) {
					b.fn(ctx)
					return once.Result{}, once.Abandon(errors.New("died"))
				})
				<-b.started
				defer func() { close(b.release); <-got }()
			}
			panicked := make(chan any, 1)
			go func() {
				defer func() { panicked <- recover() }()
				ex.Do(tc.ctx, key, nil, returns("first"))
			}()
			eventually(t, "flight started", func() bool { return ex.Callers(key) == 1 })
			joined := doAsync(context.Background(), ex, key, nil, mustNotRun(t))
			eventually(t, "a caller joined", func() bool { return ex.Callers(key) == 2 })
			close(st.hold)
			if r := <-panicked; r != "store boom" {
				t.Errorf("caller recovered %v, want the store's panic", r)
			}
			if a := <-joined; !errors.Is(a.err, once.ErrPanicked) {
				t.Errorf("joined caller got %+v, %v; want ErrPanicked", a.x, a.err)
			}
			if n := ex.Callers(key); n != 0 {
				t.Errorf("%d callers still on the key's execution, want it ended", n)
			}
			clock.Advance(lease)
			ctx, cancelDo := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancelDo()
			x, err := ex.Do(ctx, key, nil, returns("later"))
			if err != nil || string(x.Data) != "later" || x.Attempts != tc.attempts {
				t.Errorf("later Do = %+v, %v; want a fresh run, attempt %d", x, err, tc.attempts)
			}
			closed := make(chan struct{})
			go func() { ex.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not return")
			}
		})
	}
}

func TestDoHeartbeatKeepsLease(t *testing.T) {
	st := memstore.New(memstore.Config{})
	const lease = 150 * time.Millisecond
	ex := newExecutor(t, st, once.Config{Lease: lease})
	other := newExecutor(t, st, once.Config{Wait: once.NoWait, Abandoned: once.AbandonRetry})
	key := once.Key{ID: "slow"}
	started, done := make(chan struct{}), make(chan struct{})
	var closeDone sync.Once
	defer closeDone.Do(func() { close(done) })
	got := doAsync(context.Background(), ex, key, nil, func(ctx context.Context) (once.Result, error) {
		close(started)
		<-done
		return result("slow"), ctx.Err()
	})
	<-started
	// Another process that would take the key over as soon as the lease
	// lapsed must keep finding it in progress, well past one lease.
	for end := time.Now().Add(4 * lease); time.Now().Before(end); time.Sleep(lease / 5) {
		_, err := other.Do(context.Background(), key, nil, mustNotRun(t))
		claimErr(t, err, once.ErrInProgress)
	}
	closeDone.Do(func() { close(done) })
	a := <-got
	if a.err != nil || string(a.x.Data) != "slow" || a.x.Token != 1 {
		t.Fatalf("slow Do = %+v, %v; want slow with token 1", a.x, a.err)
	}
}

func TestDoFencedHeartbeatCancels(t *testing.T) {
	st := memstore.New(memstore.Config{})
	ex := newExecutor(t, st, once.Config{Lease: 150 * time.Millisecond})
	key := once.Key{ID: "fenced"}
	started := make(chan struct{})
	var cause error
	got := doAsync(context.Background(), ex, key, nil, func(ctx context.Context) (once.Result, error) {
		close(started)
		<-ctx.Done()
		cause = context.Cause(ctx)
		return once.Result{}, cause
	})
	<-started
	// An operator deletes the key: the holder's token no longer holds it.
	if err := st.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	a := <-got
	if !errors.Is(a.err, once.ErrFenced) {
		t.Fatalf("Do err = %v, want ErrFenced", a.err)
	}
	if !errors.Is(cause, once.ErrFenced) {
		t.Errorf("fn's context cause = %v, want ErrFenced", cause)
	}
	if _, err := st.Get(context.Background(), key); !errors.Is(err, once.ErrNotFound) {
		t.Errorf("Get after fenced run: %v, want ErrNotFound (nothing stored)", err)
	}
}

func TestDoFencedComplete(t *testing.T) {
	st := memstore.New(memstore.Config{})
	ex := newExecutor(t, st, once.Config{})
	key := once.Key{ID: "fenced-complete"}
	x, err := ex.Do(context.Background(), key, nil, func(ctx context.Context) (once.Result, error) {
		if err := st.Delete(ctx, key); err != nil {
			t.Error(err)
		}
		return result("done"), nil
	})
	if !errors.Is(err, once.ErrFenced) {
		t.Fatalf("err = %v, want ErrFenced", err)
	}
	if string(x.Data) != "done" || x.Replayed {
		t.Errorf("Execution = %+v, want fn's unstored result", x)
	}
}

func TestDoExtendTransientErrors(t *testing.T) {
	st := newCounting()
	var n atomic.Int64
	st.failExtend = func() error {
		if n.Add(1)%2 == 1 { // every other renewal fails
			return fmt.Errorf("%w: flaky", once.ErrUnavailable)
		}
		return nil
	}
	ex := newExecutor(t, st, once.Config{Lease: 200 * time.Millisecond})
	x, err := ex.Do(context.Background(), once.Key{ID: "flaky"}, nil, func(ctx context.Context) (once.Result, error) {
		select {
		case <-time.After(500 * time.Millisecond):
			return result("ok"), nil
		case <-ctx.Done():
			return once.Result{}, context.Cause(ctx)
		}
	})
	if err != nil || string(x.Data) != "ok" {
		t.Fatalf("Do = %+v, %v; want ok", x, err)
	}
	if st.extends.Load() < 4 {
		t.Errorf("extends = %d, want renewals retried", st.extends.Load())
	}
}

func TestDoExtendUnavailableCancels(t *testing.T) {
	st := newCounting()
	st.failExtend = func() error { return fmt.Errorf("%w: down", once.ErrUnavailable) }
	ex := newExecutor(t, st, once.Config{Lease: 150 * time.Millisecond})
	key := once.Key{ID: "down"}
	var cause error
	_, err := ex.Do(context.Background(), key, nil, func(ctx context.Context) (once.Result, error) {
		<-ctx.Done()
		cause = context.Cause(ctx)
		return once.Result{}, cause
	})
	if !errors.Is(err, once.ErrUnavailable) || !errors.Is(cause, once.ErrUnavailable) {
		t.Fatalf("err = %v, cause = %v; want both wrapping ErrUnavailable", err, cause)
	}
	// Nobody took the key over, so the release went through.
	st.failExtend = nil
	if x := mustDo(t, ex, key, nil, returns("again")); x.Attempts != 2 {
		t.Errorf("after lost lease = %+v, want a second attempt", x)
	}
}

func TestDoCompleteRetried(t *testing.T) {
	st := newCounting()
	var n atomic.Int64
	st.failComplete = func() error {
		if n.Add(1) == 1 {
			return fmt.Errorf("%w: blip", once.ErrUnavailable)
		}
		return nil
	}
	ex := newExecutor(t, st, once.Config{})
	key := once.Key{ID: "blip"}
	mustDo(t, ex, key, nil, returns("ok"))
	if st.completes.Load() != 2 {
		t.Errorf("completes = %d, want 2 (one retry)", st.completes.Load())
	}
	if x := mustDo(t, ex, key, nil, mustNotRun(t)); !x.Replayed {
		t.Errorf("after retried Complete = %+v, want Replayed", x)
	}
}

func TestDoStoreError(t *testing.T) {
	st := newCounting()
	st.failClaim = func() error { return fmt.Errorf("%w: connection refused", once.ErrUnavailable) }
	ex := newExecutor(t, st, once.Config{})
	_, err := ex.Do(context.Background(), once.Key{ID: "down"}, nil, mustNotRun(t))
	if !errors.Is(err, once.ErrUnavailable) {
		t.Errorf("err = %v, want ErrUnavailable", err)
	}
}

func TestDoCrossExecutor(t *testing.T) {
	key := once.Key{ID: "cross"}
	// holding starts an execution of key in process A that runs until the
	// returned blocker is released.
	holding := func(t *testing.T, st once.Store) (*blocker, <-chan answer) {
		a := newExecutor(t, st, once.Config{Lease: 5 * time.Second})
		b := newBlocker("from A")
		got := doAsync(context.Background(), a, key, []byte("fp"), b.fn)
		<-b.started
		return b, got
	}
	t.Run("WaitThenReplay", func(t *testing.T) {
		st := memstore.New(memstore.Config{})
		blk, fromA := holding(t, st)
		cs := &countingStore{Store: st}
		b := newExecutor(t, cs, once.Config{Wait: 10 * time.Second})
		fromB := doAsync(context.Background(), b, key, []byte("fp"), mustNotRun(t))
		eventually(t, "B to poll", func() bool { return cs.claims.Load() >= 2 })
		close(blk.release)
		if a := <-fromA; a.err != nil || a.x.Replayed || a.x.Shared {
			t.Fatalf("A = %+v, %v; want a fresh run", a.x, a.err)
		}
		got := <-fromB
		if got.err != nil || !got.x.Replayed || !got.x.Shared || string(got.x.Data) != "from A" || got.x.Token != 1 {
			t.Errorf("B = %+v, %v; want A's result, Replayed and Shared", got.x, got.err)
		}
	})
	t.Run("NoWait", func(t *testing.T) {
		st := memstore.New(memstore.Config{})
		blk, fromA := holding(t, st)
		defer func() { close(blk.release); <-fromA }()
		cs := &countingStore{Store: st}
		b := newExecutor(t, cs, once.Config{Wait: once.NoWait})
		_, err := b.Do(context.Background(), key, []byte("fp"), mustNotRun(t))
		ce := claimErr(t, err, once.ErrInProgress)
		if ce.RetryAfter <= 0 || ce.RetryAfter > 5*time.Second || ce.Record.Token != 1 {
			t.Errorf("ClaimError = %+v, want RetryAfter in (0, 5s] and the holder's record", ce)
		}
		if cs.calls() != 1 {
			t.Errorf("store calls = %d, want 1", cs.calls())
		}
	})
	t.Run("WaitTimesOut", func(t *testing.T) {
		st := memstore.New(memstore.Config{})
		blk, fromA := holding(t, st)
		defer func() { close(blk.release); <-fromA }()
		cs := &countingStore{Store: st}
		const wait = 80 * time.Millisecond
		b := newExecutor(t, cs, once.Config{Wait: wait})
		start := time.Now()
		_, err := b.Do(context.Background(), key, []byte("fp"), mustNotRun(t))
		if ce := claimErr(t, err, once.ErrInProgress); ce.RetryAfter <= 0 {
			t.Errorf("RetryAfter = %v, want positive", ce.RetryAfter)
		}
		if elapsed := time.Since(start); elapsed < wait {
			t.Errorf("gave up after %v, before the wait of %v", elapsed, wait)
		}
		if cs.claims.Load() < 2 {
			t.Errorf("claims = %d, want polling", cs.claims.Load())
		}
	})
	t.Run("HolderReleases", func(t *testing.T) {
		st := memstore.New(memstore.Config{})
		a := newExecutor(t, st, once.Config{})
		started, release := make(chan struct{}), make(chan struct{})
		fromA := doAsync(context.Background(), a, key, nil, func(context.Context) (once.Result, error) {
			close(started)
			<-release
			return once.Result{}, errors.New("transient")
		})
		<-started
		cs := &countingStore{Store: st}
		b := newExecutor(t, cs, once.Config{})
		fromB := doAsync(context.Background(), b, key, nil, returns("from B"))
		eventually(t, "B to poll", func() bool { return cs.claims.Load() >= 2 })
		close(release)
		<-fromA
		got := <-fromB
		if got.err != nil || got.x.Replayed || got.x.Shared || string(got.x.Data) != "from B" || got.x.Token != 2 {
			t.Errorf("B = %+v, %v; want its own fresh run with token 2", got.x, got.err)
		}
	})
}

// watchStore adds a Watcher to a store: Complete, Release and Delete notify.
type watchStore struct {
	once.Store
	mu       sync.Mutex
	watchers map[once.Key][]chan struct{}
	watches  atomic.Int64
	stops    atomic.Int64
}

func (s *watchStore) Watch(ctx context.Context, key once.Key) (<-chan struct{}, func(), error) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.watchers[key] = append(s.watchers[key], ch)
	s.mu.Unlock()
	s.watches.Add(1)
	var stopOnce sync.Once
	return ch, func() { stopOnce.Do(func() { s.stops.Add(1) }) }, nil
}

func (s *watchStore) notify(key once.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.watchers[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	delete(s.watchers, key)
}

func (s *watchStore) Complete(ctx context.Context, key once.Key, token uint64, res once.Result) error {
	err := s.Store.Complete(ctx, key, token, res)
	s.notify(key)
	return err
}

func TestDoWatcher(t *testing.T) {
	st := &watchStore{Store: memstore.New(memstore.Config{}), watchers: map[once.Key][]chan struct{}{}}
	key := once.Key{ID: "watched"}
	a := newExecutor(t, st, once.Config{})
	b := newExecutor(t, st, once.Config{Wait: time.Minute})
	blk := newBlocker("watched")
	fromA := doAsync(context.Background(), a, key, nil, blk.fn)
	<-blk.started
	fromB := doAsync(context.Background(), b, key, nil, mustNotRun(t))
	eventually(t, "B to watch", func() bool { return st.watches.Load() == 1 })
	close(blk.release)
	<-fromA
	got := <-fromB
	if got.err != nil || !got.x.Replayed || string(got.x.Data) != "watched" {
		t.Errorf("B = %+v, %v; want the replay", got.x, got.err)
	}
	if st.stops.Load() != 1 {
		t.Errorf("watch stopped %d times, want 1", st.stops.Load())
	}
}

func TestDoInProcessWaitBound(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait time.Duration
	}{{"NoWait", once.NoWait}, {"ShortWait", 30 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			ex := newExecutor(t, memstore.New(memstore.Config{}), once.Config{Wait: tc.wait})
			key := once.Key{ID: "busy"}
			started, release := make(chan struct{}), make(chan struct{})
			owner := doAsync(context.Background(), ex, key, nil, func(ctx context.Context) (once.Result, error) {
				close(started)
				<-release
				return result("done"), ctx.Err() // fn's context must still be live
			})
			<-started
			_, err := ex.Do(context.Background(), key, nil, mustNotRun(t))
			if ce := claimErr(t, err, once.ErrInProgress); ce.RetryAfter <= 0 || ce.Record.Token != 1 {
				t.Errorf("ClaimError = %+v, want RetryAfter and the record", ce)
			}
			close(release)
			if a := <-owner; a.err != nil || string(a.x.Data) != "done" {
				t.Errorf("owner = %+v, %v; want done", a.x, a.err)
			}
		})
	}
}

func TestDoAbandoned(t *testing.T) {
	clock := newFakeClock()
	st := memstore.New(memstore.Config{Clock: clock.Now})
	key := once.Key{ID: "crashed"}
	// A process claims the key and dies without completing it.
	cr, err := st.Claim(context.Background(), once.ClaimRequest{Key: key, Lease: time.Second, Retention: time.Hour})
	if err != nil || cr.Outcome != once.Acquired {
		t.Fatalf("Claim = %+v, %v", cr, err)
	}
	clock.Advance(2 * time.Second)

	reject := newExecutor(t, st, once.Config{})
	_, err = reject.Do(context.Background(), key, nil, mustNotRun(t))
	if ce := claimErr(t, err, once.ErrAbandoned); ce.Record.Token != 1 {
		t.Errorf("abandoned record token = %d, want 1", ce.Record.Token)
	}

	retry := newExecutor(t, st, once.Config{Abandoned: once.AbandonRetry})
	x := mustDo(t, retry, key, nil, returns("rerun"))
	if x.Token != 2 || x.Attempts != 2 || x.Replayed {
		t.Errorf("takeover = %+v, want a fresh run with token 2, attempt 2", x)
	}
	if err := st.Complete(context.Background(), key, 1, result("zombie")); !errors.Is(err, once.ErrFenced) {
		t.Errorf("zombie Complete: %v, want ErrFenced", err)
	}
}

func TestDoMismatch(t *testing.T) {
	ex := newExecutor(t, memstore.New(memstore.Config{}), once.Config{})
	t.Run("Completed", func(t *testing.T) {
		key := once.Key{ID: "mismatch"}
		mustDo(t, ex, key, []byte("A"), returns("a"))
		x, err := ex.Do(context.Background(), key, []byte("B"), mustNotRun(t))
		ce := claimErr(t, err, once.ErrMismatch)
		if !bytes.Equal(ce.Record.Fingerprint, []byte("A")) || ce.Record.State != once.StateCompleted || x.Data != nil {
			t.Errorf("ClaimError record = %+v, Execution %+v; want the completed A record and no result", ce.Record, x)
		}
	})
	t.Run("Coalesced", func(t *testing.T) {
		key := once.Key{ID: "mismatch-inflight"}
		b := newBlocker("a")
		owner := doAsync(context.Background(), ex, key, []byte("A"), b.fn)
		<-b.started
		_, err := ex.Do(context.Background(), key, []byte("B"), mustNotRun(t))
		claimErr(t, err, once.ErrMismatch)
		close(b.release)
		if a := <-owner; a.err != nil {
			t.Fatal(a.err)
		}
	})
}

func TestDoCallerCancel(t *testing.T) {
	t.Run("LastCallerCancelsFn", func(t *testing.T) {
		st := newCounting()
		ex := newExecutor(t, st, once.Config{})
		key := once.Key{ID: "cancel"}
		ctx, cancel := context.WithCancel(context.Background())
		started, proceed := make(chan struct{}), make(chan struct{})
		var cause error
		first := doAsync(ctx, ex, key, nil, func(ctx context.Context) (once.Result, error) {
			close(started)
			<-ctx.Done()
			cause = context.Cause(ctx)
			<-proceed // still holding the key when the next caller comes
			return once.Result{}, ctx.Err()
		})
		<-started
		cancel()
		if a := <-first; !errors.Is(a.err, context.Canceled) {
			t.Fatalf("cancelled caller err = %v, want context.Canceled", a.err)
		}
		// A new caller does not inherit the cancelled execution: it waits for
		// it to release the key, then runs fn itself.
		second := doAsync(context.Background(), ex, key, nil, returns("second"))
		eventually(t, "second caller to claim", func() bool { return st.claims.Load() == 2 })
		close(proceed)
		a := <-second
		if a.err != nil || string(a.x.Data) != "second" || a.x.Attempts != 2 || a.x.Shared {
			t.Errorf("second = %+v, %v; want its own fresh run, attempt 2", a.x, a.err)
		}
		if cause == nil || !strings.Contains(cause.Error(), "caller") {
			t.Errorf("fn's cancel cause = %v, want every caller gone", cause)
		}
	})
	t.Run("OthersKeepFnAlive", func(t *testing.T) {
		ex := newExecutor(t, memstore.New(memstore.Config{}), once.Config{})
		key := once.Key{ID: "cancel-shared"}
		ctx, cancel := context.WithCancel(context.Background())
		started, release := make(chan struct{}), make(chan struct{})
		first := doAsync(ctx, ex, key, nil, func(ctx context.Context) (once.Result, error) {
			close(started)
			<-release
			return result("kept"), ctx.Err()
		})
		<-started
		waiter := doAsync(context.Background(), ex, key, nil, mustNotRun(t))
		eventually(t, "waiter attached", func() bool { return ex.Callers(key) == 2 })
		cancel()
		if a := <-first; !errors.Is(a.err, context.Canceled) {
			t.Fatalf("cancelled caller err = %v, want context.Canceled", a.err)
		}
		close(release)
		a := <-waiter
		if a.err != nil || string(a.x.Data) != "kept" || !a.x.Shared {
			t.Errorf("waiter = %+v, %v; want the shared result", a.x, a.err)
		}
	})
	t.Run("CancelledBeforeDo", func(t *testing.T) {
		st := newCounting()
		ex := newExecutor(t, st, once.Config{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := ex.Do(ctx, once.Key{ID: "x"}, nil, mustNotRun(t)); !errors.Is(err, context.Canceled) || st.calls() != 0 {
			t.Errorf("err = %v after %d store calls, want context.Canceled and none", err, st.calls())
		}
	})
}

func TestDoCloseWaits(t *testing.T) {
	ex := once.New(memstore.New(memstore.Config{}), once.Config{})
	b := newBlocker("finished")
	got := doAsync(context.Background(), ex, once.Key{ID: "inflight"}, nil, b.fn)
	<-b.started
	closed := make(chan struct{})
	go func() {
		ex.Close()
		close(closed)
	}()
	eventually(t, "Do to refuse", func() bool {
		_, err := ex.Do(context.Background(), once.Key{ID: "late"}, nil, returns("late"))
		return errors.Is(err, once.ErrClosed)
	})
	select {
	case <-closed:
		t.Fatal("Close returned while an execution was in flight")
	default:
	}
	close(b.release)
	<-closed
	if a := <-got; a.err != nil || string(a.x.Data) != "finished" {
		t.Errorf("in-flight Do = %+v, %v; want it to finish", a.x, a.err)
	}
	if err := ex.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDoCloseRace(t *testing.T) {
	ex := once.New(memstore.New(memstore.Config{}), once.Config{})
	var active, ran atomic.Int64
	var closed atomic.Bool
	fn := func(context.Context) (once.Result, error) {
		if closed.Load() {
			t.Error("fn started after Close returned")
		}
		active.Add(1)
		defer active.Add(-1)
		time.Sleep(time.Millisecond)
		ran.Add(1)
		return result("ok"), nil
	}
	const n = 200
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := ex.Do(context.Background(), once.Key{ID: strconv.Itoa(i % 50)}, nil, fn)
			if err != nil && !errors.Is(err, once.ErrClosed) {
				t.Errorf("Do: %v, want success or ErrClosed", err)
			}
		})
	}
	close(start)
	ex.Close()
	closed.Store(true)
	if got := active.Load(); got != 0 {
		t.Errorf("%d functions still running after Close returned", got)
	}
	wg.Wait()
	if ran.Load() > 50 {
		t.Errorf("fn ran %d times for 50 keys", ran.Load())
	}
}

func TestDoInvalid(t *testing.T) {
	st := newCounting()
	ex := newExecutor(t, st, once.Config{})
	for _, key := range []once.Key{{}, {ID: strings.Repeat("k", 256)}, {ID: "tab\there"}, {Scope: strings.Repeat("s", 1025), ID: "k"}} {
		if _, err := ex.Do(context.Background(), key, nil, mustNotRun(t)); !errors.Is(err, once.ErrInvalidKey) {
			t.Errorf("Do(%q): %v, want ErrInvalidKey", key.ID, err)
		}
	}
	if _, err := ex.Do(context.Background(), once.Key{ID: "k"}, nil, nil); !errors.Is(err, once.ErrInvalidArgument) {
		t.Errorf("Do(nil fn): %v, want ErrInvalidArgument", err)
	}
	if st.calls() != 0 {
		t.Errorf("invalid input made %d store calls, want 0", st.calls())
	}
	if ex.Store() != st {
		t.Error("Store() is not the store given to New")
	}
}

func BenchmarkDoReplay(b *testing.B) {
	ctx := context.Background()
	st := memstore.New(memstore.Config{})
	key := once.Key{Scope: "bench", ID: "replay"}
	fp := []byte("fingerprint")
	ex := newExecutor(b, st, once.Config{})
	mustDo(b, ex, key, fp, returns("stored result"))
	b.Run("Store.Claim", func(b *testing.B) { // the baseline: a bare Claim
		req := once.ClaimRequest{Key: key, Fingerprint: fp, Lease: once.DefaultLease, Retention: once.DefaultRetention}
		for b.Loop() {
			if cr, err := st.Claim(ctx, req); err != nil || cr.Outcome != once.Completed {
				b.Fatal(cr.Outcome, err)
			}
		}
	})
	b.Run("Executor.Do", func(b *testing.B) {
		fn := mustNotRun(b)
		for b.Loop() {
			if x, err := ex.Do(ctx, key, fp, fn); err != nil || !x.Replayed {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDoFresh(b *testing.B) {
	ctx := context.Background()
	fp := []byte("fingerprint")
	res := result("fresh result")
	b.Run("Store.Claim+Complete", func(b *testing.B) { // the baseline
		st := memstore.New(memstore.Config{})
		i := 0
		for b.Loop() {
			i++
			key := once.Key{Scope: "bench", ID: strconv.Itoa(i)}
			req := once.ClaimRequest{Key: key, Fingerprint: fp, Lease: once.DefaultLease, Retention: once.DefaultRetention}
			cr, err := st.Claim(ctx, req)
			if err != nil || cr.Outcome != once.Acquired {
				b.Fatal(cr.Outcome, err)
			}
			if err := st.Complete(ctx, key, cr.Token, res); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Executor.Do", func(b *testing.B) {
		ex := newExecutor(b, memstore.New(memstore.Config{}), once.Config{})
		fn := func(context.Context) (once.Result, error) { return res, nil }
		i := 0
		for b.Loop() {
			i++
			if _, err := ex.Do(ctx, once.Key{Scope: "bench", ID: strconv.Itoa(i)}, fp, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The goroutines that ran functions are reused while the Executor is busy and
// exit when it is closed.
func TestDoWorkersExitOnClose(t *testing.T) {
	before := runtime.NumGoroutine()
	ex := once.New(memstore.New(memstore.Config{}), once.Config{})
	ctx, cancel := context.WithCancel(context.Background()) // callers that can leave: fn runs on a worker
	defer cancel()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, err := ex.Do(ctx, once.Key{ID: strconv.Itoa(i)}, nil, returns("ok")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ex.Close()
	eventually(t, "workers to exit", func() bool { return runtime.NumGoroutine() <= before })
}

// ctxStore makes its Claims select on ctx.Done(), as a store that waits for
// a lock or a connection does.
type ctxStore struct{ once.Store }

func (s ctxStore) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	select {
	case <-ctx.Done():
		return once.ClaimResult{}, ctx.Err()
	default:
	}
	return s.Store.Claim(ctx, req)
}

// Executors share no deadline of store calls. Under testing/synctest every
// bubble starts at the same fake time, so one shared across Executors (a
// package-level one) was reused by the next bubble, and a store that
// selected on its Done channel crashed the test binary (receive on a
// synctest channel from outside its bubble).
func TestDoExecutorsInSyncTestBubbles(t *testing.T) {
	for i := range 2 {
		synctest.Test(t, func(t *testing.T) {
			ex := once.New(ctxStore{memstore.New(memstore.Config{})}, once.Config{})
			defer ex.Close()
			x, err := ex.Do(context.Background(), once.Key{ID: "bubble"}, nil, returns(strconv.Itoa(i)))
			if err != nil || string(x.Data) != strconv.Itoa(i) {
				t.Errorf("bubble %d: Do = %+v, %v", i, x, err)
			}
		})
	}
}
