// Package memstore is a once.Store kept in memory, for tests and single-process
// use. Records are spread over shards, each with its own lock, so that callers
// on distinct keys do not serialize. Expired records are reclaimed a few at a
// time by the writes that touch their shard, and by Sweep.
//
// A record is kept as fixed-size fields (times as offsets from the store's
// first clock reading) in pages of slots, plus one byte slice that packs its
// key, fingerprint and result: one small object without pointers per record,
// so that a store of millions of records costs the garbage collector little.
// Results are copied in and out; callers never share memory with the store.
package memstore

import (
	"bytes"
	"context"
	"hash/maphash"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// shardBits sets the number of shards.
const shardBits = 6

// evictPerWrite bounds the reclaiming work a write does on its shard.
const evictPerWrite = 2

// Config configures a Store. The zero value is ready to use.
type Config struct {
	// Clock is the store's clock. If nil, once.SystemClock() is used. A
	// clock whose times carry a monotonic reading (time.Now) works but is
	// slower: the store then keeps each record's times aside.
	Clock once.Clock
}

// Store is an in-memory once.Store. It is safe for concurrent use.
type Store struct {
	tl     timeline
	seed   maphash.Seed
	shards [1 << shardBits]shard
	closed atomic.Bool
}

var (
	_ once.Store   = (*Store)(nil)
	_ once.Sweeper = (*Store)(nil)
	_ once.Lister  = (*Store)(nil)
)

// New returns an empty Store.
func New(cfg Config) *Store {
	s := &Store{tl: newTimeline(cfg.Clock), seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].init()
	}
	return s
}

// hash hashes a key (or a version's scope and entity). Its top bits pick the
// shard; shards index records by its low 32 bits.
func (s *Store) hash(scope, id string) uint64 {
	return maphash.String(s.seed, id) ^ bits.RotateLeft64(maphash.String(s.seed, scope), 32)
}

func (s *Store) shard(h uint64) *shard { return &s.shards[h>>(64-shardBits)] }

// op is one operation on one key, between begin and end, under the lock of
// the key's shard.
type op struct {
	s    *Store
	sh   *shard
	key  once.Key
	hash uint64
	slot int32 // the key's record, or -1
	head int32 // the first slot with the key's hash, or -1
	now  time.Time
	cur  once.Record // the key's record as fsm sees it, if slot >= 0
}

// begin locks key's shard, reads the clock and finds key's record. The
// caller has validated key and must call end.
func (s *Store) begin(o *op, key once.Key) {
	o.s, o.key, o.hash = s, key, s.hash(key.Scope, key.ID)
	o.sh = s.shard(o.hash)
	o.sh.mu.Lock()
	o.now = s.tl.now()
	o.slot, o.head = o.sh.find(key, uint32(o.hash))
	if o.slot >= 0 {
		o.cur = o.sh.view(o.slot, key, &s.tl)
	}
}

func (o *op) end() { o.sh.mu.Unlock() }

// record returns the key's record, nil when absent.
func (o *op) record() *once.Record {
	if o.slot < 0 {
		return nil
	}
	return &o.cur
}

// store writes n as the key's record, then reclaims a little of the shard.
// c says what of the record's payload changes.
func (o *op) store(n *once.Record, c change) {
	fresh := o.slot < 0
	if fresh {
		o.slot = o.sh.add(uint32(o.hash), o.head)
		c = newPayload
	}
	o.sh.put(o.slot, n, &o.s.tl, c, fresh)
	o.sh.evict(o.now, &o.s.tl, evictPerWrite)
}

// open validates key and begins an operation on it.
func (s *Store) open(o *op, key once.Key) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	if err := key.Validate(); err != nil {
		return err
	}
	s.begin(o, key)
	return nil
}

// Claim implements once.Store.
func (s *Store) Claim(_ context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	if err := req.Validate(); err != nil {
		return once.ClaimResult{}, err
	}
	if s.closed.Load() {
		return once.ClaimResult{}, once.ErrClosed
	}
	var o op
	s.begin(&o, req.Key)
	defer o.end()
	var n once.Record
	changed, res := fsm.ClaimInto(&n, o.record(), req, o.now)
	if changed {
		o.store(&n, newPayload)
	}
	res.Record = detach(res.Record)
	return res, nil
}

// step is a write other than Claim: which transition, and its arguments.
// Spelled out rather than passed as a func, so that write can hand the
// transition pointers to its stack without their escaping to the heap.
type step struct {
	kind   stepKind
	token  uint64
	lease  time.Duration
	result once.Result
}

type stepKind uint8

const (
	completeStep stepKind = iota
	releaseStep
	extendStep
	deleteStep
)

// write applies st to the record of key and stores the record it yields.
func (s *Store) write(key once.Key, st step) error {
	var o op
	if err := s.open(&o, key); err != nil {
		return err
	}
	defer o.end()
	var n once.Record
	var changed bool
	var err error
	c := keepPayload
	switch st.kind {
	case completeStep:
		changed, err = fsm.CompleteInto(&n, o.record(), st.token, st.result, o.now)
		c = withResult
	case releaseStep:
		changed, err = fsm.ReleaseInto(&n, o.record(), st.token, o.now)
	case extendStep:
		changed, err = fsm.ExtendInto(&n, o.record(), st.token, st.lease, o.now)
	case deleteStep:
		changed, err = fsm.DeleteInto(&n, o.record(), o.now)
	}
	if changed {
		o.store(&n, c)
	}
	return err
}

// Complete implements once.Store.
func (s *Store) Complete(_ context.Context, key once.Key, token uint64, result once.Result) error {
	return s.write(key, step{kind: completeStep, token: token, result: result})
}

// Release implements once.Store.
func (s *Store) Release(_ context.Context, key once.Key, token uint64) error {
	return s.write(key, step{kind: releaseStep, token: token})
}

// Extend implements once.Store.
func (s *Store) Extend(_ context.Context, key once.Key, token uint64, lease time.Duration) error {
	if lease <= 0 {
		return once.ErrInvalidArgument
	}
	return s.write(key, step{kind: extendStep, token: token, lease: lease})
}

// Get implements once.Store.
func (s *Store) Get(_ context.Context, key once.Key) (once.Record, error) {
	var o op
	if err := s.open(&o, key); err != nil {
		return once.Record{}, err
	}
	defer o.end()
	live, err := fsm.Get(o.record(), o.now)
	if err != nil {
		return once.Record{}, err
	}
	return detach(*live), nil
}

// Delete implements once.Store.
func (s *Store) Delete(_ context.Context, key once.Key) error {
	return s.write(key, step{kind: deleteStep})
}

// Advance implements once.Store.
func (s *Store) Advance(_ context.Context, scope, entity string, version uint64) (bool, uint64, error) {
	if s.closed.Load() {
		return false, 0, once.ErrClosed
	}
	if err := (once.Key{Scope: scope, ID: entity}).Validate(); err != nil {
		return false, 0, err
	}
	sh := s.shard(s.hash(scope, entity))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	k := versionKey{scope, entity}
	applied, cur := fsm.Advance(sh.versions[k], version)
	if applied {
		sh.versions[k] = cur
	}
	return applied, cur, nil
}

// Sweep implements once.Sweeper: it forgets at most limit records whose purge
// time has passed.
func (s *Store) Sweep(_ context.Context, limit int) (int, error) {
	if s.closed.Load() {
		return 0, once.ErrClosed
	}
	n := 0
	for i := range s.shards {
		if n >= limit {
			break
		}
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.evict(s.tl.now(), &s.tl, limit-n)
		sh.mu.Unlock()
	}
	return n, nil
}

// List implements once.Lister. Records are copied out shard by shard, so fn
// may call the store.
func (s *Store) List(_ context.Context, scope string, fn func(once.Record) bool) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	for i := range s.shards {
		for _, r := range s.shards[i].live(scope, &s.tl) {
			if !fn(r) {
				return nil
			}
		}
	}
	return nil
}

// Len returns the number of records held, tombstones included.
func (s *Store) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Close implements once.Store. Later calls return ErrClosed.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// detach returns r with its own copies of the bytes a view shares with the
// store (a view's metadata map is already its own), so that callers may keep
// or modify what they are given.
func detach(r once.Record) once.Record {
	r.Fingerprint = bytes.Clone(r.Fingerprint)
	r.Result.Data = bytes.Clone(r.Result.Data)
	return r
}
