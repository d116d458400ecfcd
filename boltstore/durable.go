package boltstore

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
)

// durableWait bounds how long a reader waits for a commit it has seen to
// become durable before it gives up with ErrUnavailable.
const durableWait = 10 * time.Second

// durability tracks which transactions are on disk. bbolt publishes a
// commit's meta page before it fsyncs it, so a read transaction can see a
// commit that a power loss would still undo. The read path must not answer
// from such a commit (a replay of a result that may vanish): it waits until
// the commit that it saw has been fsynced.
type durability struct {
	txid atomic.Uint64 // highest transaction known to be fsynced
	mu   sync.Mutex
	ch   chan struct{} // closed and replaced after every commit attempt
}

func (d *durability) init(txid uint64) {
	d.txid.Store(txid)
	d.ch = make(chan struct{})
}

// signal returns a channel closed after the next commit attempt.
func (d *durability) signal() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// done records that a commit attempt ended; txid is the transaction's id
// when it committed durably, 0 when it failed.
func (d *durability) done(txid uint64) {
	for {
		cur := d.txid.Load()
		if txid <= cur || d.txid.CompareAndSwap(cur, txid) {
			break
		}
	}
	d.mu.Lock()
	close(d.ch)
	d.ch = make(chan struct{})
	d.mu.Unlock()
}

// update runs fn in a write transaction and records when it is durable.
// Every write transaction of the store goes through it.
func (s *Store) update(fn func(tx *bbolt.Tx) error) error {
	var txid uint64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		txid = uint64(tx.ID())
		return fn(tx)
	})
	if err != nil {
		txid = 0
	}
	s.durable.done(txid)
	return err
}

// snapshot reads the record of key from the last durable commit. It returns
// the record (nil when absent) and two readings of the clock, one taken
// before the read transaction began and one inside it: the snapshot was the
// store's state at some instant between the two.
func (s *Store) snapshot(key once.Key) (r *once.Record, before, after time.Time, err error) {
	var kbuf [64]byte
	k := appendKey(kbuf[:0], key.Scope, key.ID)
	deadline := time.Now().Add(durableWait)
	for {
		if s.closed.Load() {
			return nil, before, after, once.ErrClosed
		}
		committed := s.durable.signal()
		before = s.now()
		var txid uint64
		err = s.db.View(func(tx *bbolt.Tx) error {
			txid = uint64(tx.ID())
			r = nil
			if v := tx.Bucket(bucketRecords).Get(k); v != nil {
				var err error
				if r, err = decodeRecord(v); err != nil {
					return err
				}
			}
			after = s.now()
			return nil
		})
		if err != nil {
			return nil, before, after, s.keyErr(key, err)
		}
		if txid <= s.durable.txid.Load() {
			return r, before, after, nil
		}
		select {
		case <-committed:
		case <-time.After(time.Until(deadline)):
			return nil, before, after, fmt.Errorf("%w: %s: a commit did not become durable within %v", once.ErrUnavailable, s.path, durableWait)
		}
	}
}
