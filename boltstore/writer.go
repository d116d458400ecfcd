package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// maxBatch bounds the operations committed in one transaction, so that one
// commit's latency stays bounded however long the queue grows.
const maxBatch = 1024

// maxArena is the largest encoding buffer the writer keeps between batches.
const maxArena = 1 << 20

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
	}
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer commits the queued operations, everything that queued up during
// the previous commit in one transaction, until Close. There is no timer: a
// lone operation is committed as soon as it arrives.
func (s *Store) writer() {
	defer s.wg.Done()
	b := &batch{s: s, ops: make([]*op, 0, maxBatch)}
	for {
		select {
		case o := <-s.queue:
			b.ops = append(b.ops[:0], o)
			s.fill(b)
			b.commit()
			s.settle()
		case <-s.stop:
			// Close set closed before stop: nothing more can be queued.
			for len(s.queue) > 0 {
				b.ops = b.ops[:0]
				s.fill(b)
				b.commit()
			}
			return
		}
	}
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

// fill adds to b the operations queued right now, up to maxBatch.
func (s *Store) fill(b *batch) {
	for len(b.ops) < maxBatch {
		select {
		case o := <-s.queue:
			b.ops = append(b.ops, o)
		default:
			return
		}
	}
}

// batch is the writer's state for one transaction.
type batch struct {
	s   *Store
	ops []*op
	// arena holds the values put in the transaction: bbolt keeps a reference
	// to each value until commit, so none may be overwritten before then.
	arena []byte
	key   []byte
	pkey  []byte

	records, purge, versions *bbolt.Bucket
}

// commit applies b.ops in order in one transaction and signals each caller.
// An operation that fails on its own (ErrFenced, a corrupt record) does not
// disturb the others; if the transaction fails, they all get its error.
func (b *batch) commit() {
	b.s.commits.Add(1)
	b.s.committed.Add(uint64(len(b.ops)))
	start := time.Now()
	err := b.s.update(b.applyAll)
	b.s.commitTime.Add(int64(time.Since(start)))
	if err != nil {
		err = b.s.storageErr(err)
	}
	for _, o := range b.ops {
		if err != nil {
			o.claim, o.applied, o.current, o.err = once.ClaimResult{}, false, 0, err
		}
		o.done <- struct{}{}
	}
	clear(b.ops)
	b.ops = b.ops[:0]
	if cap(b.arena) > maxArena {
		b.arena = nil
	}
	b.arena = b.arena[:0]
}

func (b *batch) applyAll(tx *bbolt.Tx) (err error) {
	defer func() {
		// A panic must not kill the writer and hang every caller: it fails
		// the batch (and rolls it back) instead.
		if p := recover(); p != nil {
			err = fmt.Errorf("boltstore: panic in writer: %v", p)
		}
	}()
	b.records = tx.Bucket(bucketRecords)
	b.purge = tx.Bucket(bucketPurge)
	b.versions = tx.Bucket(bucketVersions)
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
	b.key = appendKey(b.key[:0], o.key.Scope, o.key.ID)
	var old *once.Record
	if v := b.records.Get(b.key); v != nil {
		var err error
		if old, err = decodeRecord(v); err != nil {
			o.err = b.s.keyErr(o.key, err)
			return nil
		}
	}
	next, err := transition(o, old, b.s.now())
	o.err = err
	if next == nil {
		return nil
	}
	return b.put(old, next)
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

// put stores next under b.key and keeps the purge index in step: one entry
// per record, at its purge time.
func (b *batch) put(old, next *once.Record) error {
	start := len(b.arena)
	b.arena = appendRecord(b.arena, next)
	if err := b.records.Put(b.key, b.arena[start:len(b.arena):len(b.arena)]); err != nil {
		return err
	}
	if old != nil {
		if old.PurgeAt().Equal(next.PurgeAt()) {
			return nil
		}
		b.pkey = appendPurgeKey(b.pkey[:0], old, b.key)
		if err := b.purge.Delete(b.pkey); err != nil {
			return err
		}
	}
	b.pkey = appendPurgeKey(b.pkey[:0], next, b.key)
	return b.purge.Put(b.pkey, []byte{})
}

// advance applies o's version to its (scope, entity).
func (b *batch) advance(o *op) error {
	b.key = appendKey(b.key[:0], o.key.Scope, o.key.ID)
	cur, err := decodeVersion(b.versions.Get(b.key))
	if err != nil {
		o.err = b.s.keyErr(o.key, err)
		return nil
	}
	o.applied, o.current = fsm.Advance(cur, o.version)
	if !o.applied {
		return nil
	}
	start := len(b.arena)
	b.arena = binary.BigEndian.AppendUint64(b.arena, o.current)
	return b.versions.Put(b.key, b.arena[start:len(b.arena):len(b.arena)])
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
