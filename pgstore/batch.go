package pgstore

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/oncehq/once"
)

// Claims and completions are group-committed: each kind runs at most
// maxInFlight statements at a time, and the calls that arrive while those
// run go out together, as one statement (and one commit) for up to maxBatch
// keys, as soon as one of them finishes. A lone call is sent at once: there
// is no timer. A statement costs the server a round trip, an executor
// start-up and a commit whatever the number of keys it carries, and these
// are most of the cost of one key; under load a batch pays them once for
// many. Two statements at a time keep the server busy while the other
// waits for its commit to be flushed; more make smaller batches (bench/pg,
// 64 goroutines on 2 cores: 2 in flight spent 50 µs of server CPU per
// Claim+Complete pair, 4 spent 75, 8 spent 150, for no more pairs per
// second).
const (
	maxBatch    = 64
	maxInFlight = 2
	// maxBatchBytes bounds the result data of one batch of completions (its
	// first call goes whatever its size), far below PostgreSQL's 1 GB
	// limit on one parameter, so that large results cannot fail their
	// neighbours.
	maxBatchBytes = 16 << 20
)

// call is one Claim or Complete waiting in a batcher. The caller fills the
// request and waits for done; the batch fills the answer, then closes done.
type call struct {
	ctx   context.Context
	key   once.Key
	claim once.ClaimRequest // Claim
	token uint64            // Complete
	data  []byte            // Complete: result data
	meta  pgtype.Text       // Complete: result metadata as JSON text, or NULL
	tries int               // statements that ran for it and must run again

	res   once.ClaimResult
	err   error
	now   time.Time // Claim: the time the statement judged the record at
	again bool      // set before a statement; the statement clears it for the calls it answers
	alone bool      // answer: run a statement of your own (the batch waited too long for a lock)
	done  chan struct{}

	followers []*call // calls of the same key queued along with this one (batcher.follow)
}

// batcher runs the calls of one operation in batches.
type batcher struct {
	s   *Store
	op  string
	max int // statements at a time
	// run runs one statement for calls, sorted by key, and answers each
	// (res, err) or leaves its again set. An error it returns is the whole
	// statement's: nothing it answered stands.
	run func(ctx context.Context, calls []*call) error
	// follow, if set, answers f, a call of the same key queued along with
	// c, from c's answer, as if f ran just after c, and reports whether it
	// could: else f runs in a later batch. Without it, every call of a key
	// already in the batch waits for a later batch.
	follow func(c, f *call) bool

	// onExec, if set (by tests), is called with the size of each batch
	// before its statement runs.
	onExec func(n int)

	mu      sync.Mutex // guards the fields below
	closed  bool       // no more calls: Close waits for the drains started before
	queue   []*call
	running int              // drain goroutines
	seen    map[string]*call // take's scratch
}

func newBatcher(s *Store, op string, run func(context.Context, []*call) error) *batcher {
	inFlight := max(1, min(maxInFlight, int(s.pool.Config().MaxConns)))
	return &batcher{s: s, op: op, max: inFlight, run: run, seen: make(map[string]*call)}
}

// do runs c and waits for its answer. A call that finds a statement slot
// free and no call queued runs at once, as a batch of its own, in its
// caller's goroutine; otherwise it queues for the next batch. If ctx ends
// first, do returns at once: a batch is canceled only once every call in
// it has left, and a statement already sent may still take effect.
func (b *batcher) do(ctx context.Context, c *call) error {
	if err := ctx.Err(); err != nil {
		return b.s.unavailable(b.op, err)
	}
	c.ctx, c.done = ctx, make(chan struct{})
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return once.ErrClosed
	}
	free := b.running < b.max
	lead := free && len(b.queue) == 0
	if !lead {
		b.queue = append(b.queue, c)
	}
	if free {
		b.running++
		b.s.wg.Add(1)
	}
	b.mu.Unlock()
	switch {
	case lead:
		b.exec([]*call{c})
		b.handOff()
	case free:
		go b.drain()
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return b.s.undecided(b.op, ctx.Err())
	}
}

// handOff passes on the slot of a call that ran its own batch: to a drain
// if calls queued meanwhile (or the call itself must run again), else back.
func (b *batcher) handOff() {
	b.mu.Lock()
	queued := len(b.queue) > 0
	if !queued {
		b.running--
	}
	b.mu.Unlock()
	if queued {
		go b.drain()
	} else {
		b.s.wg.Done()
	}
}

// close refuses further calls. Every drain started before it returns is
// counted in the store's WaitGroup, which Close then waits for; the calls
// they still hold fail, as their statements do once the store's context is
// canceled.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// drain runs batches until the queue is empty.
func (b *batcher) drain() {
	defer b.s.wg.Done()
	for {
		calls := b.take()
		if calls == nil {
			return
		}
		b.exec(calls)
	}
}

// take removes the next batch from the queue, in order: up to maxBatch
// calls with distinct key IDs (a statement changes a row only once, and
// its answers are matched to calls by ID). A call of a key already in the
// batch follows the call before it (see batcher.follow), or waits for the
// next batch. Calls whose caller left are dropped. If nothing is left, take
// gives up the drain's slot and returns nil.
func (b *batcher) take() []*call {
	b.mu.Lock()
	defer b.mu.Unlock()
	var batch []*call
	rest := b.queue[:0]
	clear(b.seen)
	size := 0
	for _, c := range b.queue {
		lead, dup := b.seen[c.key.ID]
		switch {
		case c.ctx.Err() != nil:
		case dup && b.follow != nil && lead.key == c.key:
			lead.followers = append(lead.followers, c)
		case dup || len(batch) == maxBatch || (len(batch) > 0 && size+len(c.data) > maxBatchBytes):
			rest = append(rest, c)
		default:
			b.seen[c.key.ID] = c
			batch = append(batch, c)
			size += len(c.data)
		}
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	if batch == nil {
		b.running--
	}
	return batch
}

// exec runs one statement for calls and answers them and their followers,
// or queues again, first, the calls that lost a race and those of a
// statement that did nothing (a contention error, a connection that had
// died).
func (b *batcher) exec(calls []*call) {
	// One order for every batch, so that batches lock rows in the same
	// order and never deadlock on each other.
	slices.SortFunc(calls, func(x, y *call) int {
		return cmp.Or(cmp.Compare(x.key.ID, y.key.ID), cmp.Compare(x.key.Scope, y.key.Scope))
	})
	for _, c := range calls {
		c.again = true
	}
	if b.onExec != nil {
		b.onExec(len(calls))
	}
	ctx, cancel := b.context(calls)
	err := b.run(ctx, calls)
	stopped := ctx.Err() != nil // the store closed or every caller left
	cancel()
	switch {
	case (lockTimedOut(err) || failedAlone(err, calls)) && !stopped:
		// Some key of the batch is held by a long transaction, most
		// likely a DoTx, or made the statement fail (a row no statement
		// can process): its callers run alone and outside the batches, as
		// do the others, whose key is unknown, so that one key's trouble
		// stays its own.
		for _, c := range calls {
			for _, g := range c.group() {
				g.err, g.alone = nil, true // nothing the statement answered stands
				close(g.done)
			}
		}
		return
	case err != nil && !stopped && (contended(err) || pgconn.SafeToRetry(err)):
		for _, c := range calls {
			c.again = true
		}
		err = nil
	}
	var (
		requeue []*call
		tries   int
	)
	for _, c := range calls {
		group := c.group()
		switch {
		case err != nil:
			answer(group, b.s.undecided(b.op, err))
		case c.again && c.tries == maxRetries:
			answer(group, b.s.unavailable(b.op, errors.New("too much contention on one key")))
		case c.again:
			c.tries++
			tries = max(tries, c.tries)
			requeue = append(requeue, group...)
		default:
			// The followers' answers are copies of c's record, made before
			// c's caller may change it.
			for _, f := range group[1:] {
				if b.follow(c, f) {
					close(f.done)
				} else {
					requeue = append(requeue, f)
				}
			}
			close(c.done)
		}
	}
	if requeue == nil {
		return
	}
	if tries > 3 {
		// As Store.retry does: a key fought over, or a database that
		// keeps failing, is not tried again at once.
		_ = sleep(b.s.bg, time.Duration(tries-1)*time.Millisecond)
	}
	b.mu.Lock()
	b.queue = append(requeue, b.queue...)
	b.mu.Unlock()
}

// failedAlone reports whether err is the server's refusal of a statement
// for several keys, other than contention (which runs again): the
// statement changed nothing, and run alone the other keys may well succeed.
func failedAlone(err error, calls []*call) bool {
	var pe *pgconn.PgError
	return len(calls) > 1 && errors.As(err, &pe) && !contended(err)
}

// group returns c and its followers, and detaches the followers.
func (c *call) group() []*call {
	g := append([]*call{c}, c.followers...)
	c.followers = nil
	return g
}

// answer fails calls with err.
func answer(calls []*call, err error) {
	for _, c := range calls {
		c.err = err
		close(c.done)
	}
}

// context returns the context of a batch's statement: canceled when the
// store closes or when every caller in the batch (followers included) has
// left, as a lone caller's statement would be.
func (b *batcher) context(calls []*call) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(b.s.bg)
	var callers []*call
	for _, c := range calls {
		callers = append(append(callers, c), c.followers...)
	}
	for _, c := range callers {
		if c.ctx.Done() == nil {
			return ctx, cancel // a caller that never leaves
		}
	}
	left := new(atomic.Int32)
	stops := make([]func() bool, len(callers))
	for i, c := range callers {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if int(left.Add(1)) == len(callers) {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// lockTimedOut reports whether err is a statement's lock_timeout.
func lockTimedOut(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// find returns the call of calls, sorted by exec, whose key ID is id.
func find(calls []*call, id string) *call {
	i, ok := slices.BinarySearchFunc(calls, id, func(c *call, id string) int { return cmp.Compare(c.key.ID, id) })
	if !ok {
		return nil
	}
	return calls[i]
}
