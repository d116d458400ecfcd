package once

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults used by New for the zero values of Config.
const (
	// DefaultLease is the lease used when Config.Lease is zero.
	DefaultLease = 30 * time.Second
	// DefaultRetention is the retention used when Config.Retention is zero.
	DefaultRetention = 24 * time.Hour
	// DefaultWait is the wait used when Config.Wait is zero.
	DefaultWait = 10 * time.Second
	// NoWait, as Config.Wait (any negative value does), makes a caller whose
	// key is held by someone else get ErrInProgress at once.
	NoWait time.Duration = -1
)

// ErrPanicked is returned to callers that were coalesced onto an execution
// whose function, or one of whose store calls, panicked; the caller that
// started the execution gets the panic itself.
var ErrPanicked = errors.New("once: function panicked")

var (
	// errCallersGone is the cause of fn's cancellation when every caller left.
	errCallersGone = errors.New("once: every caller went away")
	// errGoexit is what the callers get when fn called runtime.Goexit.
	errGoexit = errors.New("once: function called runtime.Goexit")
)

// finishTimeout bounds the Complete or Release that ends an execution, retries
// included. It is not the caller's deadline: the key must not stay wedged
// because the caller went away.
const finishTimeout = 10 * time.Second

// Poll intervals while waiting on another process's execution. They grow
// exponentially (with jitter) from min to max; with a Watcher they start and
// end higher, since a notification is expected first.
const (
	pollMin      = 10 * time.Millisecond
	pollMax      = 500 * time.Millisecond
	watchPollMin = 100 * time.Millisecond
	watchPollMax = 2 * time.Second
)

const flightShards = 64

// Config configures an Executor. The zero value uses the defaults.
type Config struct {
	// Lease is how long an execution holds its key before it counts as
	// abandoned. It is renewed every Heartbeat while fn runs. Zero or
	// negative means DefaultLease.
	Lease time.Duration
	// Retention is how long a key's record is kept after its claim. Zero or
	// negative means DefaultRetention.
	Retention time.Duration
	// Wait is how long a caller waits for an execution of its key held by
	// someone else (another caller in this process or another process)
	// before it gets ErrInProgress. Zero means DefaultWait; negative means
	// NoWait.
	Wait time.Duration
	// Heartbeat is the interval between lease renewals. Zero, negative, or
	// not shorter than Lease means Lease/3.
	Heartbeat time.Duration
	// Abandoned says what to do with a key whose holder stopped renewing
	// its lease without completing. The zero value is AbandonReject.
	Abandoned AbandonPolicy
	// Logger receives warnings (lost leases, failed releases, panics). Keys
	// are logged redacted. Nil means discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.Wait == 0 {
		c.Wait = DefaultWait
	} else if c.Wait < 0 {
		c.Wait = NoWait
	}
	if c.Heartbeat <= 0 || c.Heartbeat >= c.Lease {
		c.Heartbeat = c.Lease / 3
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Func is the work that Executor.Do runs at most once per key (at least once
// with AbandonRetry). Its context is described on Do.
type Func func(ctx context.Context) (Result, error)

// Execution is what Executor.Do returns: the result of the key's execution and
// how this caller got it. A caller that did not run fn itself has Replayed or
// Shared set (the gateway's Idempotent-Replayed).
type Execution struct {
	// Result is the fresh or stored result. It is the caller's own copy.
	Result
	// Replayed reports that the result was stored by an earlier execution.
	Replayed bool
	// Shared reports that this caller did not run fn itself but waited on an
	// execution (in this process or another) and got its result.
	Shared bool
	// Token is the fencing token of the execution that produced Result.
	Token uint64
	// Attempts counts the claims that acquired the key, this one included.
	Attempts uint32
}

// Executor runs functions once per key over a Store. Callers of one key in one
// process are coalesced onto a single execution and a single store round trip;
// callers in other processes wait for it through the store. Functions run on
// their caller's goroutine or on worker goroutines that the Executor reuses
// from one execution to the next (see Do for what that means for fn). An
// Executor is safe for concurrent use.
type Executor struct {
	store   Store
	cfg     Config
	log     *slog.Logger
	watcher Watcher
	seed    maphash.Seed
	epoch   time.Time
	closed  atomic.Bool
	running sync.WaitGroup
	quit    sync.Once
	shards  [flightShards]flightShard
	workers workers
	renew   renewals
	bounds  bounds // of store calls: each Executor its own (see bounds)
}

type flightShard struct {
	mu      sync.Mutex
	flights map[Key]*flight
}

// New returns an Executor that runs functions once per key over store. The
// Executor does not own store: closing it leaves store open. New panics if
// store is nil.
func New(store Store, cfg Config) *Executor {
	if store == nil {
		panic("once: New called with a nil Store")
	}
	cfg = cfg.withDefaults()
	e := &Executor{store: store, cfg: cfg, log: cfg.Logger, seed: maphash.MakeSeed(), epoch: time.Now()}
	e.workers = workers{work: make(chan *flight), quit: make(chan struct{})}
	e.watcher, _ = store.(Watcher)
	for i := range e.shards {
		e.shards[i].flights = make(map[Key]*flight)
	}
	return e
}

// Store returns the store the Executor runs over.
func (e *Executor) Store() Store { return e.store }

// Close stops the Executor: it waits for the executions in flight to end
// (their functions run to completion and their outcomes are stored), after
// which Do returns ErrClosed. It does not close the store. Close is safe to
// call more than once.
func (e *Executor) Close() error {
	e.closed.Store(true)
	// Every flight is added under its shard's lock after checking closed:
	// passing through each lock orders those adds before the Wait.
	for i := range e.shards {
		e.shards[i].mu.Lock()
		e.shards[i].mu.Unlock()
	}
	e.running.Wait()
	e.quit.Do(func() { close(e.workers.quit) })
	return nil
}

// Do runs fn once for key, like sync.Once.Do across callers, processes and
// restarts, and returns its result; later calls replay the stored result.
//
// Callers of one key in this process share one execution and one Claim: the
// first claims the key, the others wait for its outcome up to Config.Wait, then
// get ErrInProgress (with NoWait, at once if fn is running); they do not poll
// the store. A caller whose fingerprint differs from the execution's does not
// share it: the store decides, usually ErrMismatch. If another process holds
// the key, Do re-claims with jittered exponential backoff (woken early by a
// Watcher store) for up to Config.Wait, then returns a *ClaimError wrapping
// ErrInProgress with RetryAfter; with NoWait it returns that at once.
//
// fn runs with a context that keeps ctx's values but not its cancellation: it
// is cancelled only when every caller waiting for the execution has gone
// (their contexts are done), or when the lease is lost (context.Cause wraps
// ErrFenced), or when the lease could not be renewed before it passed. A
// caller whose ctx ends while it waits for the execution leaves at once with
// ctx.Err(), so fn runs on a worker goroutine; but when ctx can never be
// cancelled (ctx.Done() is nil, as for context.Background or
// context.WithoutCancel) the caller waits for fn in any case, and fn runs on
// the caller's goroutine. The first store call of a key (the Claim that
// decides whether fn runs) is made on the caller's goroutine and is not cut
// short, because a Claim abandoned half-way may still have acquired the key.
// It is bounded by the store's own timeouts.
//
// A worker is a goroutine of the Executor's that has run other functions
// before and runs others after, for other callers and keys, and what fn
// leaves on it stays for them. An fn that calls runtime.LockOSThread must
// call runtime.UnlockOSThread before it returns, or the thread stays locked
// to the worker, under later functions. A worker has the pprof labels of the
// caller it was started for (or that an earlier fn set), not those of the
// caller whose fn it runs: an fn profiled by label sets its own, e.g. with
// pprof.Do(ctx, …), since its ctx has its caller's values and so its labels.
//
// The outcome of fn decides the key's state:
//   - nil error: the result is stored (Complete) and returned.
//   - an error from Permanent: the error's message is stored as the outcome
//     (see MetaError) and the error is returned, now and on every replay.
//   - an error from Abandon (outcome unknown): the key is neither completed
//     nor released; its lease passes and it becomes abandoned (see
//     Config.Abandoned). The error is returned.
//   - any other error: the key is released, so a later call runs fn again,
//     and the error is returned.
//   - a panic: the key is released and the caller that started the execution
//     panics with the same value; the other callers get ErrPanicked.
//   - runtime.Goexit: the key is released and the other callers get an
//     error; so does the caller that started the execution, unless fn ran on
//     its goroutine, which then exits too.
//
// A store call (Claim, Complete, Release) that panics ends the execution as
// a panic of fn does, except that the key is left as the store left it (a
// lease it holds passes): the caller that started the execution panics with
// the value, the other callers get ErrPanicked, and later callers of the key
// start a new execution.
//
// Claim outcomes that do not run fn are errors of type *ClaimError wrapping
// ErrInProgress, ErrAbandoned or ErrMismatch. A lost lease gives an error
// wrapping ErrFenced and the result is not stored; store errors are returned
// as the store gave them (wrapping ErrUnavailable for backend failures).
//
// On error, Execution carries the Token and Attempts of the execution if fn
// ran, and its Result in two cases: a permanent error (the stored result), and
// a result fn returned without error that could not be stored (the effect
// happened; the caller may still want to answer with it).
// Do returns an error wrapping ErrInvalidKey without touching the store if
// key is malformed, and ErrClosed after Close.
func (e *Executor) Do(ctx context.Context, key Key, fingerprint []byte, fn Func) (Execution, error) {
	if err := key.Validate(); err != nil {
		return Execution{}, err
	}
	if fn == nil {
		return Execution{}, fmt.Errorf("%w: nil Func", ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return Execution{}, err
	}
	f, owner, err := e.attach(ctx, key, fingerprint, fn)
	if err != nil {
		return Execution{}, err
	}
	if owner {
		e.lead(f)
		select {
		case <-f.done: // a replay or a refusal, answered by the first Claim
			return f.result(true)
		default:
		}
	}
	// A caller that leaves returns only once it is detached, so that a
	// caller coming after it never joins an execution nobody wants any more.
	// A context that can never be cancelled (Done is nil) never leaves.
	stop, detached := noStop, (chan struct{})(nil)
	if ctx.Done() != nil {
		detached = make(chan struct{})
		stop = context.AfterFunc(ctx, func() { defer close(detached); e.detach(f) })
	}
	if owner {
		return f.awaitOwn(ctx, stop, detached)
	}
	return f.awaitShared(ctx, stop, detached)
}

func noStop() bool { return false }

// async is what a flight that goes on after its first Claim needs, apart
// from the flight, so that a replay does not carry it.
type async struct {
	first ClaimResult
	hb    heartbeat
}

// flight is one execution of a key in this process and the callers waiting
// for it. The goroutine that drives it (the first caller, then the goroutine
// lead starts) is the only writer of its unguarded fields.
type flight struct {
	e        *Executor
	sh       *flightShard
	key      Key
	fp       []byte
	fn       Func
	values   context.Context         // the caller's, without its cancellation
	leavable bool                    // the first caller's context can be cancelled
	ctx      context.Context         // fn's context (values, then cancellable)
	cancel   context.CancelCauseFunc // set by goAsync, under the shard's mu
	prev     *flight                 // an orphaned flight of the key still running, if any
	decided  chan struct{}
	done     chan struct{}

	// Guarded by the shard's mu.
	refs     int  // callers whose context is not done
	joined   bool // another caller joined: the owner's result must be a copy
	finished bool
	orphaned bool // every caller left: new callers start a new flight

	// Driver only.
	isDecided bool
	waited    bool      // the flight waited on another process's execution
	start     time.Time // when the first Claim began
	async     *async    // set when the first Claim runs fn or waits

	rec     *Record      // written before decided is closed
	retryAt atomic.Int64 // when the holder's lease passes, as time since e.epoch

	// Written before done is closed.
	exec     Execution
	err      error
	ran      bool // exec.Result, if any, is fn's own: nobody copied it
	panicked bool
	panicVal any
}

func (e *Executor) shard(key Key) *flightShard {
	return &e.shards[maphash.Comparable(e.seed, key)%flightShards]
}

// attach joins the flight of key or starts one. A caller whose fingerprint
// differs from the flight's gets a flight of its own, not registered, so that
// the store answers it rather than the flight's result.
func (e *Executor) attach(ctx context.Context, key Key, fp []byte, fn Func) (*flight, bool, error) {
	sh := e.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e.closed.Load() {
		return nil, false, ErrClosed
	}
	cur := sh.flights[key]
	if cur != nil && !cur.orphaned && bytes.Equal(cur.fp, fp) {
		cur.refs++
		cur.joined = true
		return cur, false, nil
	}
	f := e.newFlight(ctx, sh, key, fp, fn)
	f.prev = cur
	if cur == nil || cur.orphaned {
		sh.flights[key] = f
	}
	e.running.Add(1)
	return f, true, nil
}

func (e *Executor) newFlight(ctx context.Context, sh *flightShard, key Key, fp []byte, fn Func) *flight {
	leavable := ctx.Done() != nil
	if leavable {
		ctx = context.WithoutCancel(ctx)
	}
	return &flight{
		e: e, sh: sh, key: key, fp: bytes.Clone(fp), fn: fn, values: ctx, ctx: ctx, leavable: leavable,
		refs: 1, decided: make(chan struct{}), done: make(chan struct{}),
	}
}

// goAsync makes the flight's context cancellable (by the callers leaving, or
// a lost lease) before the flight goes on in a goroutine of its own. The first
// Claim does without: it is one round trip, bounded by the store.
func (f *flight) goAsync() {
	ctx, cancel := context.WithCancelCause(f.ctx)
	sh := f.sh
	sh.mu.Lock()
	f.ctx, f.cancel = ctx, cancel
	gone := f.orphaned
	sh.mu.Unlock()
	if gone {
		cancel(errCallersGone)
	}
}

// detach runs when a caller's context is done. When no caller is left, fn is
// cancelled and the flight stops taking callers: a newcomer would otherwise
// inherit a cancelled execution.
func (e *Executor) detach(f *flight) {
	sh := f.sh
	sh.mu.Lock()
	f.refs--
	orphan := f.refs == 0 && !f.finished
	if orphan {
		f.orphaned = true
	}
	cancel := f.cancel
	sh.mu.Unlock()
	if orphan && cancel != nil {
		cancel(errCallersGone)
	}
}

// lead makes the flight's first Claim in the caller's goroutine, so that a
// replay costs no goroutine, and hands longer work to a worker, unless the
// caller cannot leave: then handing it over would only cost two goroutine
// switches.
func (e *Executor) lead(f *flight) {
	defer f.endOnPanic(true)
	f.start = time.Now()
	cr, err := e.claim(f)
	if err != nil {
		f.finish(Execution{}, err)
		return
	}
	switch {
	case cr.Outcome == Acquired:
		f.async = &async{first: cr}
		f.decide(&f.async.first.Record, f.start.Add(e.cfg.Lease))
	case cr.Outcome == InProgress && e.cfg.Wait > 0:
		f.async = &async{first: cr}
		f.decide(&f.async.first.Record, time.Now().Add(cr.RetryAfter))
	default:
		e.settle(f, cr)
		return
	}
	f.goAsync()
	if !f.leavable {
		e.drive(f)
		return
	}
	e.workers.run(f)
}

// drive goes on with a flight whose first Claim acquired the key or found it
// held by another process, on a worker or on the goroutine of a caller that
// cannot leave.
func (e *Executor) drive(f *flight) {
	if cr := f.async.first; cr.Outcome == Acquired {
		e.execute(f, cr, f.start)
	} else {
		e.waitOther(f, cr, f.start)
	}
}

// workerIdle is how long a worker waits for another flight before it exits.
const workerIdle = 5 * time.Second

// workers drive flights on goroutines that are reused. A new goroutine's
// stack starts small and is copied each time it grows, and fn's call path
// (an HTTP proxy's, say) is deep enough to make it grow on every execution;
// a reused goroutine's stack has grown already.
type workers struct {
	work chan *flight  // unbuffered: a send succeeds only if a worker is idle
	quit chan struct{} // closed by Close: idle workers exit
}

// run drives f on an idle worker, or on a new one if none is idle.
func (p *workers) run(f *flight) {
	select {
	case p.work <- f:
	default:
		go p.loop(f)
	}
}

// loop drives f, then the flights it is handed, until it has been idle for
// workerIdle or the Executor is closed. If fn calls runtime.Goexit, the
// worker ends with it (execute's deferred cleanup finishes the flight).
func (p *workers) loop(f *flight) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for f != nil {
		p.drive(f)
		f = nil // an idle worker must not keep the flight's result alive
		idle.Reset(workerIdle)
		select {
		case f = <-p.work:
		case <-idle.C:
		case <-p.quit:
		}
	}
}

// drive drives f on the worker. A panic (of a store call: fn's are
// recovered by call) goes to the caller that started f, as fn's would, rather
// than ending the process; if that caller has left, it is only logged.
func (p *workers) drive(f *flight) {
	defer f.endOnPanic(false)
	f.e.drive(f)
}

// endOnPanic, deferred by the goroutine that drives f, ends f if that
// goroutine is panicking (a store call panicked): otherwise the flight would
// stay registered, every later caller of its key would join it and never
// hear back, and Close would wait for it forever. The caller that started f
// gets the panic, the others ErrPanicked. With repanic (on the caller's own
// goroutine) the panic goes on from here. The key is not released: fn may
// have run, and the store is in no state to be trusted with it; its lease
// passes. A runtime.Goexit is no panic (recover returns nil): execute
// ends the flight then.
func (f *flight) endOnPanic(repanic bool) {
	r := recover()
	if r == nil {
		return
	}
	f.e.log.Error("once: store call panicked", "key", f.key.String(), "panic", r, "stack", string(debug.Stack()))
	f.sh.mu.Lock()
	finished := f.finished
	f.sh.mu.Unlock()
	if !finished {
		f.panicked, f.panicVal = true, r
		f.finish(Execution{}, nil)
	}
	if repanic {
		panic(r)
	}
}

// claim makes the flight's Claim. It does not depend on the callers: a Claim
// cut short by a cancelled context may still have acquired the key in the
// store (a commit already under way, a request already sent), and a token
// that nobody holds would leave the key to be abandoned although fn never
// ran. It is bounded by finishTimeout instead.
func (e *Executor) claim(f *flight) (ClaimResult, error) {
	return e.store.Claim(f.opContext(), ClaimRequest{
		Key: f.key, Fingerprint: f.fp, Lease: e.cfg.Lease, Retention: e.cfg.Retention, Policy: e.cfg.Abandoned,
	})
}

// settle ends the flight with a Claim outcome that does not run fn.
func (e *Executor) settle(f *flight, cr ClaimResult) {
	if cr.Outcome != Completed {
		f.finish(Execution{}, claimError(cr))
		return
	}
	rec := cr.Record
	x := Execution{Result: rec.Result, Replayed: true, Shared: f.waited, Token: rec.Token, Attempts: rec.Attempts}
	f.finish(x, replayError(rec.Result))
}

func claimError(cr ClaimResult) error {
	ce := &ClaimError{Record: cr.Record}
	switch cr.Outcome {
	case InProgress:
		ce.Err, ce.RetryAfter = ErrInProgress, max(cr.RetryAfter, time.Millisecond)
	case Abandoned:
		ce.Err = ErrAbandoned
	case Mismatch:
		ce.Err = ErrMismatch
	default:
		return fmt.Errorf("%w: claim answered %v", ErrUnavailable, cr.Outcome)
	}
	return ce
}

// waitOther re-claims a key held by another process until it is released or
// completed, or until Config.Wait has passed since start.
func (e *Executor) waitOther(f *flight, cr ClaimResult, start time.Time) {
	f.waited = true
	w := e.watch(f)
	cr, at, err := e.pollOther(f, w, cr, start.Add(e.cfg.Wait))
	// The watch ends before any caller hears back, so that nothing of this
	// flight outlives its answer.
	w.stop()
	switch {
	case err != nil:
		f.finish(Execution{}, err)
	case cr.Outcome == Acquired && f.ctx.Err() != nil:
		// Every caller left while the claim was under way: give the key
		// back rather than run fn for nobody.
		_ = e.release(f, cr.Token) // logged by release
		f.finish(Execution{}, context.Cause(f.ctx))
	case cr.Outcome == Acquired:
		e.execute(f, cr, at)
	default:
		e.settle(f, cr)
	}
}

// pollOther claims again, woken by w or after a jittered backoff, until the
// claim is not InProgress or deadline passes, and returns the last claim's
// result and when it was made. It returns an error if the claim fails or
// every caller leaves.
func (e *Executor) pollOther(f *flight, w *waker, cr ClaimResult, deadline time.Time) (ClaimResult, time.Time, error) {
	for delay := w.min; ; delay = min(2*delay, w.max) {
		d := min(jitter(delay), max(cr.RetryAfter, time.Millisecond), time.Until(deadline))
		if !w.sleep(d) {
			return ClaimResult{}, time.Time{}, context.Cause(f.ctx)
		}
		at := time.Now()
		var err error
		if cr, err = e.claim(f); err != nil {
			return cr, at, err
		}
		if cr.Outcome != InProgress || !time.Now().Before(deadline) {
			return cr, at, nil
		}
		f.setRetryAt(time.Now().Add(cr.RetryAfter))
	}
}

// waker is what wakes waitOther early: a store notification or the end of an
// orphaned flight of the same key in this process.
type waker struct {
	f        *flight
	changed  <-chan struct{}
	prev     <-chan struct{}
	stop     func()
	min, max time.Duration
}

func (e *Executor) watch(f *flight) *waker {
	w := &waker{f: f, stop: func() {}, min: pollMin, max: pollMax}
	if f.prev != nil {
		w.prev = f.prev.done
	}
	if e.watcher == nil {
		return w
	}
	ch, stop, err := e.watcher.Watch(f.ctx, f.key)
	if err != nil {
		e.log.Debug("once: watch failed, polling", "key", f.key.String(), "err", err)
		return w
	}
	w.changed, w.stop, w.min, w.max = ch, stop, watchPollMin, watchPollMax
	return w
}

// sleep waits d or until woken. It reports false if fn's context (every
// caller) is gone.
func (w *waker) sleep(d time.Duration) bool {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-t.C:
	case _, ok := <-w.changed:
		if !ok {
			w.changed = nil
		}
	case <-w.prev:
		w.prev = nil
	case <-w.f.ctx.Done():
		return false
	}
	return true
}

// jitter returns a duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// outcome is how fn ended.
type outcome struct {
	res      Result
	err      error
	panicked bool
	panicVal any
	stack    []byte
}

// call runs fn, turning a panic into an outcome. If fn calls runtime.Goexit,
// call does not return.
func call(ctx context.Context, fn Func) (o outcome) {
	normal := false
	defer func() {
		if !normal {
			if r := recover(); r != nil {
				o = outcome{panicked: true, panicVal: r, stack: debug.Stack()}
			}
		}
	}()
	o.res, o.err = fn(ctx)
	normal = true
	return o
}

// execute runs fn for the claim cr (acquired at start) while renewing its
// lease, then stores or releases the outcome.
func (e *Executor) execute(f *flight, cr ClaimResult, start time.Time) {
	hb := e.startHeartbeat(f, cr.Token, start)
	returned := false
	defer func() {
		if !returned { // runtime.Goexit in fn
			hb.stop()
			f.finish(Execution{}, join(errGoexit, e.release(f, cr.Token)))
		}
	}()
	o := call(f.ctx, f.fn)
	returned = true
	f.ran = true
	lost := hb.stop()
	x := Execution{Result: o.res, Token: cr.Token, Attempts: cr.Record.Attempts}
	var pe *PermanentError
	switch {
	case o.panicked:
		e.onPanic(f, cr.Token, o)
	case errors.Is(lost, ErrFenced):
		f.finish(unstored(x, o.err == nil), lost)
	case errors.Is(o.err, ErrOutcomeUnknown):
		// Neither complete nor release: the lease, no longer renewed, passes
		// and the key is abandoned, as if this process had died mid-effect.
		e.log.Warn("once: outcome unknown, key left to be abandoned", "key", f.key.String(), "token", cr.Token)
		f.finish(unstored(x, false), join(o.err, lost))
	case o.err == nil:
		e.complete(f, x, nil)
	case errors.As(o.err, &pe):
		x.Result = permanentResult(o.res, o.err)
		e.complete(f, x, o.err)
	default:
		f.finish(unstored(x, false), join(o.err, lost, e.release(f, cr.Token)))
	}
}

// join is errors.Join, except that a single error is returned as it is.
func join(errs ...error) error {
	var one error
	for _, err := range errs {
		switch {
		case err == nil:
		case one == nil:
			one = err
		default:
			return errors.Join(errs...)
		}
	}
	return one
}

// unstored is what a caller gets of an execution whose outcome is not stored:
// its token, and fn's result if fn succeeded (the effect happened).
func unstored(x Execution, keepResult bool) Execution {
	u := Execution{Token: x.Token, Attempts: x.Attempts}
	if keepResult {
		u.Result = x.Result
	}
	return u
}

// complete stores x.Result and ends the flight with fnErr (nil, or the
// permanent error the result records).
func (e *Executor) complete(f *flight, x Execution, fnErr error) {
	err := e.finishOp(f, func(ctx context.Context) error {
		return e.store.Complete(ctx, f.key, x.Token, x.Result)
	})
	if err != nil {
		e.log.Warn("once: result not stored", "key", f.key.String(), "token", x.Token, "err", err)
		err = fmt.Errorf("once: complete key %s: %w", f.key, err)
		x = unstored(x, fnErr == nil)
	}
	f.finish(x, join(fnErr, err))
}

// release gives the key up after fn failed, so that a retry runs it again.
func (e *Executor) release(f *flight, token uint64) error {
	err := e.finishOp(f, func(ctx context.Context) error {
		return e.store.Release(ctx, f.key, token)
	})
	if err != nil {
		e.log.Warn("once: key not released", "key", f.key.String(), "token", token, "err", err)
		return fmt.Errorf("once: release key %s: %w", f.key, err)
	}
	return nil
}

func (e *Executor) onPanic(f *flight, token uint64, o outcome) {
	e.log.Error("once: function panicked", "key", f.key.String(), "panic", o.panicVal, "stack", string(o.stack))
	_ = e.release(f, token) // logged by release
	f.panicked, f.panicVal = true, o.panicVal
	f.finish(Execution{}, nil)
}

// finishOp runs Complete or Release. They must not depend on the callers,
// who may be gone, and are retried while the store is unavailable: a key
// left in progress would be abandoned, refused until its retention passes.
func (e *Executor) finishOp(f *flight, op func(context.Context) error) error {
	ctx := f.opContext()
	for delay := pollMin; ; delay = min(2*delay, time.Second) {
		err := op(ctx)
		if err == nil || !errors.Is(err, ErrUnavailable) {
			return err
		}
		t := time.NewTimer(jitter(delay))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// opContext returns the context of a Claim, Complete or Release: the
// flight's values, and a deadline finishTimeout (to finishTimeout + opGrain)
// away as its only cancellation.
func (f *flight) opContext() context.Context {
	return opContext{Context: f.values, bound: f.e.bounds.get(time.Now())}
}

// opGrain is how long the store calls that start one after another share a
// deadline.
const opGrain = finishTimeout / 100

// bounds hands out the deadlines of an Executor's store calls. A
// context.WithTimeout per call would cost a timer per call; calls made within
// the same opGrain share one instead, which is enough for a bound that only
// keeps a key from being wedged. They are not shared across Executors, which
// stay independent: under testing/synctest, where every bubble starts at the
// same fake time, a bound shared by Executors in two bubbles would be
// handed out in the second, whose store would then wait on the first's
// channel.
type bounds struct {
	cur atomic.Pointer[bound]
	mu  sync.Mutex
}

type bound struct {
	ctx    context.Context // ends finishTimeout + opGrain after it was made
	cancel context.CancelFunc
	until  time.Time // handed out until then
}

func (b *bounds) get(now time.Time) context.Context {
	if c := b.cur.Load(); c != nil && now.Before(c.until) {
		return c.ctx
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.cur.Load(); c != nil && now.Before(c.until) {
		return c.ctx
	}
	// Never cancelled early: its timer frees it at the deadline.
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(finishTimeout+opGrain))
	b.cur.Store(&bound{ctx: ctx, cancel: cancel, until: now.Add(opGrain)})
	return ctx
}

// opContext has the values of one context and the deadline of another.
type opContext struct {
	context.Context                 // values only: it is never cancelled
	bound           context.Context // deadline and cancellation
}

func (c opContext) Deadline() (time.Time, bool) { return c.bound.Deadline() }
func (c opContext) Done() <-chan struct{}       { return c.bound.Done() }
func (c opContext) Err() error                  { return c.bound.Err() }

// AfterFunc lets a context derived from c wait on the bound without a
// goroutine of its own (see context.AfterFunc).
func (c opContext) AfterFunc(f func()) (stop func() bool) { return context.AfterFunc(c.bound, f) }

func (f *flight) setRetryAt(t time.Time) { f.retryAt.Store(int64(t.Sub(f.e.epoch))) }

func (f *flight) retryAfter() time.Duration {
	d := time.Duration(f.retryAt.Load()) - time.Since(f.e.epoch)
	return max(d, time.Millisecond)
}

// decide publishes that the first Claim went on to run fn or to wait on
// another process. rec must not change afterwards.
func (f *flight) decide(rec *Record, retryAt time.Time) {
	f.rec = rec
	f.setRetryAt(retryAt)
	f.isDecided = true
	close(f.decided)
}

// finish publishes the flight's outcome and lets the key start a new flight.
func (f *flight) finish(x Execution, err error) {
	f.exec, f.err = x, err
	sh := f.sh
	sh.mu.Lock()
	f.finished = true
	if sh.flights[f.key] == f {
		delete(sh.flights, f.key)
	}
	sh.mu.Unlock()
	f.prev = nil
	if !f.isDecided {
		f.isDecided = true
		close(f.decided)
	}
	close(f.done)
	if f.cancel != nil {
		f.cancel(context.Canceled) // frees the context
	}
	f.e.running.Done()
}

// awaitOwn waits for the flight the caller started. The wait is not bounded by
// Config.Wait: it is the caller's own execution.
func (f *flight) awaitOwn(ctx context.Context, stop func() bool, detached <-chan struct{}) (Execution, error) {
	select {
	case <-f.done:
		stop()
		return f.result(true)
	case <-ctx.Done():
		<-detached
		return Execution{}, ctx.Err()
	}
}

// awaitShared waits for another caller's flight, up to Config.Wait: a
// duplicate gets the same answer whether the execution runs in this process or
// in another.
func (f *flight) awaitShared(ctx context.Context, stop func() bool, detached <-chan struct{}) (Execution, error) {
	if f.e.cfg.Wait < 0 {
		return f.awaitNoWait(ctx, stop, detached)
	}
	t := time.NewTimer(f.e.cfg.Wait)
	defer t.Stop()
	select {
	case <-f.done:
		stop()
		return f.result(false)
	case <-ctx.Done():
		<-detached
		return Execution{}, ctx.Err()
	case <-t.C:
		// The caller's interest lasts as long as its ctx: stop is not called,
		// so fn is not cancelled on its account before then.
		return Execution{}, f.inProgress()
	}
}

// awaitNoWait waits only for the flight's first Claim: a replay or a refusal is
// answered, a running fn is ErrInProgress.
func (f *flight) awaitNoWait(ctx context.Context, stop func() bool, detached <-chan struct{}) (Execution, error) {
	select {
	case <-f.decided:
	case <-ctx.Done():
		<-detached
		return Execution{}, ctx.Err()
	}
	select {
	case <-f.done:
		stop()
		return f.result(false)
	default:
		return Execution{}, f.inProgress()
	}
}

func (f *flight) inProgress() error {
	ce := &ClaimError{Err: ErrInProgress, RetryAfter: f.retryAfter()}
	select {
	case <-f.decided:
		if f.rec != nil { // nil if the flight finished without deciding
			ce.Record = f.rec.Clone()
		}
	default:
	}
	return ce
}

// result is the flight's outcome as one caller sees it.
func (f *flight) result(owner bool) (Execution, error) {
	if f.panicked {
		if owner {
			panic(f.panicVal)
		}
		return Execution{}, fmt.Errorf("%w: %v", ErrPanicked, f.panicVal)
	}
	x := f.exec
	// Every caller gets its own copy, the one that ran fn included: the
	// others clone f.exec concurrently, so nobody may write to it, and fn
	// may have returned a slice or map it keeps (a cache). Only a replay
	// that nobody joined (joined is written before finish, which happens
	// before done is closed) goes without: the store's copy is the caller's.
	if !owner || f.joined || f.ran {
		x.Result = x.Result.Clone()
	}
	if !owner {
		x.Shared = true
	}
	return x, f.err
}

// heartbeat renews an execution's lease every Config.Heartbeat while fn runs.
// Heartbeats wait in the Executor's renewals rather than on a timer or a
// goroutine of their own, so that a short fn costs neither.
type heartbeat struct {
	e        *Executor
	f        *flight
	token    uint64
	mu       sync.Mutex // held across Extend, so that stop waits for it
	retry    *time.Timer
	leaseEnd time.Time // when the lease passes, by this process's clock
	stopped  bool
	lost     error

	// Guarded by the renewals' mu.
	due        time.Time
	prev, next *heartbeat
	queued     bool
}

func (e *Executor) startHeartbeat(f *flight, token uint64, start time.Time) *heartbeat {
	h := &f.async.hb
	h.e, h.f, h.token, h.leaseEnd = e, f, token, start.Add(e.cfg.Lease)
	e.renew.add(h, e.cfg.Heartbeat)
	return h
}

// tick renews the lease once it is due. Only one tick of a heartbeat runs at
// a time: it is off the queue (or its retry timer fired) until it is done.
func (h *heartbeat) tick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	retryIn, lost := h.renew()
	switch {
	case lost != nil:
		h.lost = lost
		h.e.log.Warn("once: lease lost, cancelling function", "key", h.f.key.String(), "token", h.token, "err", lost)
		h.f.cancel(lost)
	case retryIn == 0:
		h.e.renew.add(h, h.e.cfg.Heartbeat)
	case h.retry == nil: // sooner than the queue's order allows
		h.retry = time.AfterFunc(retryIn, h.tick)
	default:
		h.retry.Reset(retryIn)
	}
}

// renew extends the lease. A transient error is retried after retryIn
// (sooner than the heartbeat) until the lease would pass; then, or when
// fenced, the lease is lost and renew returns why.
func (h *heartbeat) renew() (retryIn time.Duration, lost error) {
	at := time.Now()
	ctx, cancel := context.WithDeadline(h.f.values, h.leaseEnd)
	err := h.e.store.Extend(ctx, h.f.key, h.token, h.e.cfg.Lease)
	cancel()
	switch {
	case err == nil:
		h.leaseEnd = at.Add(h.e.cfg.Lease)
		h.f.setRetryAt(h.leaseEnd)
		return 0, nil
	case errors.Is(err, ErrFenced):
		return 0, fmt.Errorf("%w while running: key %s: %w", ErrLeaseLost, h.f.key, err)
	}
	left := time.Until(h.leaseEnd)
	if left <= 0 {
		return 0, fmt.Errorf("%w: key %s: not renewed before it passed: %w", ErrLeaseLost, h.f.key, err)
	}
	return min(max(h.e.cfg.Heartbeat/4, time.Millisecond), left), nil
}

// stop ends the renewals, waiting for one under way, and returns why the lease
// was lost, if it was.
func (h *heartbeat) stop() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	h.e.renew.remove(h)
	if h.retry != nil {
		h.retry.Stop()
	}
	return h.lost
}

// renewals is the queue of an Executor's heartbeats, on one timer. Every
// heartbeat waits the same Config.Heartbeat from when it is queued, so the
// queue, in the order heartbeats were queued, is also in the order they are
// due. Queuing and unqueuing are a few pointer writes under a lock; the timer
// is reset when it fires, not per execution.
type renewals struct {
	mu         sync.Mutex
	head, tail *heartbeat
	timer      *time.Timer
	armed      bool // the timer will fire
}

// add queues h to be renewed after d, which must be the same for every
// heartbeat of the Executor.
func (r *renewals) add(h *heartbeat, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h.due, h.prev, h.next, h.queued = time.Now().Add(d), r.tail, nil, true
	if r.tail != nil {
		r.tail.next = h
	} else {
		r.head = h
	}
	r.tail = h
	switch {
	case r.armed:
	case r.timer == nil:
		r.armed, r.timer = true, time.AfterFunc(d, r.fire)
	default:
		r.armed = true
		r.timer.Reset(d)
	}
}

// remove unqueues h if it is queued.
func (r *renewals) remove(h *heartbeat) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unlink(h)
}

func (r *renewals) unlink(h *heartbeat) {
	if !h.queued {
		return
	}
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		r.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		r.tail = h.prev
	}
	h.prev, h.next, h.queued = nil, nil, false
}

// fire starts the ticks that are due, each in a goroutine of its own (Extend
// may block), and sets the timer for the next one. The head may have left
// the queue since the timer was set: then the timer fires early, once.
func (r *renewals) fire() {
	r.mu.Lock()
	now := time.Now()
	var due []*heartbeat
	for r.head != nil && !r.head.due.After(now) {
		h := r.head
		r.unlink(h)
		due = append(due, h)
	}
	r.armed = r.head != nil
	if r.armed {
		r.timer.Reset(r.head.due.Sub(now))
	}
	r.mu.Unlock()
	for _, h := range due {
		go h.tick()
	}
}
