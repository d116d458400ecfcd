package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// maxBatch bounds the operations committed in one frame, so that one
// commit's latency stays bounded however long the queue grows.
const maxBatch = 1024

// maxArena is the largest encoding buffer the writer keeps between batches.
const maxArena = 1 << 20

// maxBatchBytes bounds the results and fingerprints a batch carries (its
// first operation is taken whatever its size), so that frames stay far
// below maxFrame.
const maxBatchBytes = 64 << 20

type opKind uint8

const (
	opClaim opKind = iota + 1
	opComplete
	opRelease
	opExtend
	opDelete
	opAdvance
)

// op is one operation handed to the writer. The caller fills the inputs,
// the writer the outputs, then signals done; the channel orders the two.
type op struct {
	kind    opKind
	key     once.Key
	req     once.ClaimRequest
	token   uint64
	result  once.Result
	lease   time.Duration
	version uint64

	claim   once.ClaimResult
	applied bool
	current uint64
	err     error

	done chan struct{}
}

var opPool = sync.Pool{New: func() any { return &op{done: make(chan struct{}, 1)} }}

func newOp(kind opKind, key once.Key) *op {
	o := opPool.Get().(*op)
	o.kind, o.key = kind, key
	return o
}

// free returns o to the pool. Only a caller that received o.done may call
// it: the writer is done with o then.
func (o *op) free() {
	*o = op{done: o.done}
	opPool.Put(o)
}

// do hands o to the writer and waits for it. On ErrClosed or a done ctx it
// returns the error, and o must not be freed: the writer may still hold it.
func (s *Store) do(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// mu, held shared while o is handed over, orders this against Close,
	// which sets closed and then waits for the handovers under way.
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return once.ErrClosed
	}
	select {
	case s.queue <- o:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	case <-s.closing:
		s.mu.RUnlock()
		return once.ErrClosed
	}
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer commits the queued operations, everything that queued up during
// the previous commit in one frame of the log, until Close. There is no
// timer: a lone operation is committed as soon as it arrives. Between
// batches it serves the checkpointer (see checkpoint.go). While the overlay
// is over its bound it takes no operations, only the checkpointer's
// messages, so that memory stays bounded when checkpoints fall behind; if
// the last checkpoint failed, it takes them and fails them (batch.run).
func (s *Store) writer() {
	defer s.wg.Done()
	b := &batch{s: s, ops: make([]*op, 0, maxBatch), pending: map[string]int{}}
	for {
		queue := s.queue
		if s.waitCheckpoint() {
			queue = nil
		}
		if s.carry != nil && queue != nil {
			b.commitFrom(s.takeCarry())
			continue
		}
		select {
		case o := <-queue:
			b.commitFrom(o)
			s.settle()
		case m := <-s.ctl:
			s.control(m)
		case <-s.cpTried:
		case <-s.stop:
			// Close set closed before stop: nothing more can be queued.
			for s.carry != nil || len(s.queue) > 0 {
				o := s.takeCarry()
				if o == nil {
					o = <-s.queue
				}
				b.commitFrom(o)
			}
			return
		}
	}
}

// commitFrom commits a batch that starts with first and takes what is queued.
func (b *batch) commitFrom(first *op) {
	b.ops = append(b.ops[:0], first)
	b.s.fill(b)
	b.commit()
}

// takeCarry returns the operation carried over from the last batch, if any.
func (s *Store) takeCarry() *op {
	o := s.carry
	s.carry = nil
	return o
}

// waitCheckpoint reports whether the writer must take no operation until a
// checkpoint: the overlay is over its bound and the last checkpoint did not
// fail (if it did, operations are taken, and fail: see batch.run).
func (s *Store) waitCheckpoint() bool {
	return s.overFull() && s.cpErr.Load() == nil
}

// settle yields to the callers the last commit woke for as long as they
// keep queueing operations, so that the next batch takes them all rather
// than one or two alone with the rest a whole fsync later. It costs a lone
// caller one yield, and it is no timer: it stops as soon as the queue stops
// growing.
func (s *Store) settle() {
	for n := -1; n != len(s.queue) && len(s.queue) < maxBatch; {
		n = len(s.queue)
		runtime.Gosched()
	}
}

// fill adds to b the operations queued right now, up to maxBatch, and as
// long as their results stay within maxBatchBytes: the first one that
// would not fit is carried over to the next batch.
func (s *Store) fill(b *batch) {
	size := b.ops[0].size()
	for len(b.ops) < maxBatch {
		select {
		case o := <-s.queue:
			if size+o.size() > maxBatchBytes {
				s.carry = o
				return
			}
			b.ops = append(b.ops, o)
			size += o.size()
		default:
			return
		}
	}
}

// size is about what o adds to a frame beyond its key and times.
func (o *op) size() int {
	return len(o.result.Data) + len(o.req.Fingerprint)
}

// batch is the writer's state for one group commit.
type batch struct {
	s   *Store
	ops []*op
	// buf is the frame being built: the header's room, then one entry per
	// change. changes are the keys the batch wrote, in order, and pending
	// maps each key to its last change, so that a later operation of the
	// batch reads what an earlier one wrote.
	buf     []byte
	scratch []byte
	changes []change
	pending map[string]int
	key     []byte
	tx      *bbolt.Tx
}

// change is one key written by a batch: its new value is buf[off:end].
type change struct {
	key      string
	off, end int
	rec      *once.Record // the decoded value, for records
}

// commit runs b.ops in order, makes their changes durable in one frame and
// signals each caller. An operation that fails on its own (ErrFenced, a
// corrupt record) does not disturb the others; if the commit fails, they
// all get its error and none of their changes is kept.
func (b *batch) commit() {
	s := b.s
	s.commits.Add(1)
	s.committed.Add(uint64(len(b.ops)))
	start := time.Now()
	err := b.run()
	s.commitTime.Add(int64(time.Since(start)))
	for _, o := range b.ops {
		if err != nil {
			o.claim, o.applied, o.current, o.err = once.ClaimResult{}, false, 0, err
		}
		o.done <- struct{}{}
	}
	clear(b.ops)
	b.ops = b.ops[:0]
	clear(b.changes)
	b.changes = b.changes[:0]
	clear(b.pending)
	if cap(b.buf) > maxArena {
		b.buf = nil
	}
	if cap(b.scratch) > maxArena {
		b.scratch = nil
	}
	if s.checkpointDue() {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// run applies, logs and publishes the batch. The operations take effect
// when publish makes their changes visible, after the frame's synchronous
// write: no reader ever sees a change that a crash could undo.
func (b *batch) run() error {
	s := b.s
	if err := s.failed(); err != nil {
		return err
	}
	b.buf = append(b.buf[:0], make([]byte, frameHeaderLen)...)
	if err := b.applyAll(); err != nil {
		return s.storageErr(err)
	}
	if len(b.changes) == 0 {
		return nil
	}
	if len(b.buf)-frameHeaderLen > maxFrame {
		return fmt.Errorf("%w: boltstore: a batch of %d bytes, the most is %d", once.ErrInvalidArgument, len(b.buf)-frameHeaderLen, maxFrame)
	}
	frame := bytes.Clone(b.buf)
	seq := s.seq + 1
	sealFrame(frame, seq, s.salt)
	if err := s.log.write(frame); err != nil {
		err = fmt.Errorf("write %s: %w", s.log.path, err)
		if noSpace(err) || s.noSync {
			return s.storageErr(err)
		}
		// The flush may have failed: nothing this process writes to the
		// log can be trusted any more.
		return s.fail(err)
	}
	s.seq = seq
	b.publish(frame, seq)
	return nil
}

func (b *batch) applyAll() (err error) {
	defer func() {
		// A panic must not kill the writer and hang every caller: it fails
		// the batch instead.
		if p := recover(); p != nil {
			err = fmt.Errorf("boltstore: panic in writer: %v", p)
		}
		if b.tx != nil {
			b.tx.Rollback()
			b.tx = nil
		}
	}()
	for _, o := range b.ops {
		if b.s.testHook != nil {
			if err := b.s.testHook(o); err != nil {
				return err
			}
		}
		if o.kind == opAdvance {
			err = b.advance(o)
		} else {
			err = b.apply(o)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// apply runs the transition of o on the record of its key. It returns only
// storage errors; o's own outcome goes in o.
func (b *batch) apply(o *op) error {
	b.key = appendTagged(b.key[:0], tagRecord, o.key.Scope, o.key.ID)
	old, err := b.record(b.key)
	if errors.Is(err, errCorrupt) {
		o.err = b.s.keyErr(o.key, err)
		return nil
	}
	if err != nil {
		return err
	}
	next, err := transition(o, old, b.s.now())
	o.err = err
	if next != nil {
		b.scratch = appendRecord(b.scratch[:0], next)
		b.stage(b.key, b.scratch, next)
	}
	return nil
}

// record returns the current record of the tagged key k, as this batch
// left it. A record that does not decode is returned as errCorrupt.
func (b *batch) record(k []byte) (*once.Record, error) {
	c, v, err := b.lookup(k)
	switch {
	case err != nil:
		return nil, err
	case c != nil:
		return c.rec, nil
	case v == nil:
		return nil, nil
	}
	return decodeRecord(v)
}

// lookup finds the current value of the tagged key k: the batch's own
// change, else the overlay's value, else bbolt's. A bbolt value is valid
// until the batch ends.
func (b *batch) lookup(k []byte) (*change, []byte, error) {
	if i, ok := b.pending[string(k)]; ok {
		return &b.changes[i], nil, nil
	}
	// Only this goroutine writes the overlay: it reads it without the lock.
	if e, ok := b.s.ov.m[string(k)]; ok {
		return nil, e.val, nil
	}
	if b.tx == nil {
		tx, err := b.s.db.Begin(false)
		if err != nil {
			return nil, nil, err
		}
		b.tx = tx
	}
	return nil, bucketOf(b.tx, k[0]).Get(k[1:]), nil
}

// stage adds the change of the tagged key k to value to the frame.
func (b *batch) stage(k, value []byte, rec *once.Record) {
	b.buf = binary.AppendUvarint(b.buf, uint64(len(k)))
	b.buf = append(b.buf, k...)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(value)))
	off := len(b.buf)
	b.buf = append(b.buf, value...)
	key := string(k)
	b.pending[key] = len(b.changes)
	b.changes = append(b.changes, change{key: key, off: off, end: len(b.buf), rec: rec})
}

// publish makes the batch's changes, durable in frame seq, the state every
// reader sees, all at once.
func (b *batch) publish(frame []byte, seq uint64) {
	ov := &b.s.ov
	ov.mu.Lock()
	for _, c := range b.changes {
		v := frame[c.off:c.end:c.end]
		ov.bytes += len(v) - len(ov.m[c.key].val)
		ov.m[c.key] = ovEntry{val: v, seq: seq}
	}
	ov.mu.Unlock()
}

// transition is the fsm step of o.
func transition(o *op, r *once.Record, now time.Time) (*once.Record, error) {
	switch o.kind {
	case opClaim:
		var next *once.Record
		next, o.claim = fsm.Claim(r, o.req, now)
		return next, nil
	case opComplete:
		return fsm.Complete(r, o.token, o.result, now)
	case opRelease:
		return fsm.Release(r, o.token, now)
	case opExtend:
		return fsm.Extend(r, o.token, o.lease, now)
	case opDelete:
		return fsm.Delete(r, now)
	}
	return nil, fmt.Errorf("boltstore: unknown operation %d", o.kind)
}

// advance applies o's version to its (scope, entity).
func (b *batch) advance(o *op) error {
	b.key = appendTagged(b.key[:0], tagVersion, o.key.Scope, o.key.ID)
	c, v, err := b.lookup(b.key)
	if err != nil {
		return err
	}
	if c != nil {
		v = b.buf[c.off:c.end]
	}
	cur, err := decodeVersion(v)
	if err != nil {
		o.err = b.s.keyErr(o.key, err)
		return nil
	}
	o.applied, o.current = fsm.Advance(cur, o.version)
	if o.applied {
		b.scratch = binary.BigEndian.AppendUint64(b.scratch[:0], o.current)
		b.stage(b.key, b.scratch, nil)
	}
	return nil
}

// decodeVersion decodes a stored version: 8 bytes big-endian, nil for 0.
func decodeVersion(v []byte) (uint64, error) {
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	}
	return 0, fmt.Errorf("%w: version of %d bytes, want 8", errCorrupt, len(v))
}
