// Package memstore is a once.Store kept in memory, for tests and single-process
// use. Records are spread over shards, each with its own lock, so that callers
// on distinct keys do not serialize. Expired records are reclaimed a few at a
// time by the writes that touch their shard, and by Sweep.
package memstore

import (
	"container/heap"
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

const shardCount = 64

// evictPerWrite bounds the reclaiming work a write does on its shard.
const evictPerWrite = 2

// Config configures a Store. The zero value is ready to use.
type Config struct {
	// Clock is the store's clock. If nil, once.SystemClock() is used.
	Clock once.Clock
}

// Store is an in-memory once.Store. It is safe for concurrent use.
type Store struct {
	now    once.Clock
	seed   maphash.Seed
	shards [shardCount]shard
	closed atomic.Bool
}

var (
	_ once.Store   = (*Store)(nil)
	_ once.Sweeper = (*Store)(nil)
	_ once.Lister  = (*Store)(nil)
)

type versionKey struct{ scope, entity string }

type shard struct {
	mu       sync.Mutex
	records  map[once.Key]*once.Record
	versions map[versionKey]uint64
	purge    purgeHeap
}

// New returns an empty Store.
func New(cfg Config) *Store {
	s := &Store{now: cfg.Clock, seed: maphash.MakeSeed()}
	if s.now == nil {
		s.now = once.SystemClock()
	}
	for i := range s.shards {
		s.shards[i].records = make(map[once.Key]*once.Record)
		s.shards[i].versions = make(map[versionKey]uint64)
	}
	return s
}

func (s *Store) shard(scope, id string) *shard {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(scope)
	h.WriteByte(0)
	h.WriteString(id)
	return &s.shards[h.Sum64()%shardCount]
}

// update runs fn on the record of key under its shard's lock and stores what
// fn returns, if anything.
func (s *Store) update(key once.Key, fn func(r *once.Record, now time.Time) (*once.Record, error)) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	if err := key.Validate(); err != nil {
		return err
	}
	sh := s.shard(key.Scope, key.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.now()
	prev := sh.records[key]
	next, err := fn(prev, now)
	if next != nil {
		sh.records[key] = next
		// An entry is pushed only when the purge time moves; evict re-queues
		// an entry whose record's purge time moved later since.
		if prev == nil || !next.PurgeAt().Equal(prev.PurgeAt()) {
			heap.Push(&sh.purge, purgeItem{at: next.PurgeAt(), key: key})
		}
		sh.evict(now, evictPerWrite)
	}
	return err
}

// Claim implements once.Store.
func (s *Store) Claim(_ context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	if err := req.Validate(); err != nil {
		return once.ClaimResult{}, err
	}
	req.Fingerprint = clone(req.Fingerprint)
	var res once.ClaimResult
	err := s.update(req.Key, func(r *once.Record, now time.Time) (*once.Record, error) {
		next, cr := fsm.Claim(r, req, now)
		res = cr
		res.Record = cr.Record.Clone()
		return next, nil
	})
	return res, err
}

// Complete implements once.Store.
func (s *Store) Complete(_ context.Context, key once.Key, token uint64, result once.Result) error {
	result = result.Clone()
	return s.update(key, func(r *once.Record, now time.Time) (*once.Record, error) {
		return fsm.Complete(r, token, result, now)
	})
}

// Release implements once.Store.
func (s *Store) Release(_ context.Context, key once.Key, token uint64) error {
	return s.update(key, func(r *once.Record, now time.Time) (*once.Record, error) {
		return fsm.Release(r, token, now)
	})
}

// Extend implements once.Store.
func (s *Store) Extend(_ context.Context, key once.Key, token uint64, lease time.Duration) error {
	if lease <= 0 {
		return once.ErrInvalidArgument
	}
	return s.update(key, func(r *once.Record, now time.Time) (*once.Record, error) {
		return fsm.Extend(r, token, lease, now)
	})
}

// Get implements once.Store.
func (s *Store) Get(_ context.Context, key once.Key) (once.Record, error) {
	var out once.Record
	err := s.update(key, func(r *once.Record, now time.Time) (*once.Record, error) {
		live, err := fsm.Get(r, now)
		if err == nil {
			out = live.Clone()
		}
		return nil, err
	})
	return out, err
}

// Delete implements once.Store.
func (s *Store) Delete(_ context.Context, key once.Key) error {
	return s.update(key, func(r *once.Record, now time.Time) (*once.Record, error) {
		return fsm.Delete(r, now)
	})
}

// Advance implements once.Store.
func (s *Store) Advance(_ context.Context, scope, entity string, version uint64) (bool, uint64, error) {
	if s.closed.Load() {
		return false, 0, once.ErrClosed
	}
	if err := (once.Key{Scope: scope, ID: entity}).Validate(); err != nil {
		return false, 0, err
	}
	sh := s.shard(scope, entity)
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
		n += sh.evict(s.now(), limit-n)
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
		sh := &s.shards[i]
		sh.mu.Lock()
		now := s.now()
		var live []once.Record
		for k, r := range sh.records {
			if k.Scope == scope && r.Live(now) {
				live = append(live, r.Clone())
			}
		}
		sh.mu.Unlock()
		for _, r := range live {
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
		n += len(sh.records)
		sh.mu.Unlock()
	}
	return n
}

// Close implements once.Store. Later calls return ErrClosed.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// evict looks at no more than limit due heap entries of the shard and
// forgets the records among them that are purgeable. It returns how many it
// forgot. An entry whose record's purge time moved later is pushed again at
// that time; one whose record is gone is dropped.
func (sh *shard) evict(now time.Time, limit int) int {
	n := 0
	for seen := 0; seen < limit && sh.purge.Len() > 0 && !now.Before(sh.purge[0].at); seen++ {
		it := heap.Pop(&sh.purge).(purgeItem)
		r, ok := sh.records[it.key]
		switch {
		case !ok:
		case fsm.Purgeable(r, now):
			delete(sh.records, it.key)
			n++
		case r.PurgeAt().After(it.at):
			heap.Push(&sh.purge, purgeItem{at: r.PurgeAt(), key: it.key})
		}
	}
	return n
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

type purgeItem struct {
	at  time.Time
	key once.Key
}

type purgeHeap []purgeItem

func (h purgeHeap) Len() int           { return len(h) }
func (h purgeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h purgeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *purgeHeap) Push(x any)        { *h = append(*h, x.(purgeItem)) }
func (h *purgeHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
