package boltstore

import (
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
)

// overlay holds the values that are durable in the log but not yet in the
// bbolt file: the last durable state of a key is its overlay value if it has
// one, else what bbolt holds. Only the writer changes it, under mu, so the
// writer reads it without locking; everyone else reads under mu.
type overlay struct {
	mu    sync.RWMutex
	m     map[string]ovEntry
	bytes int // total length of the values, for the checkpoint trigger
}

// ovEntry is a key's value (an encoded record, or a version) and the
// sequence number of the frame that made it durable.
type ovEntry struct {
	val []byte
	seq uint64
}

// get returns the overlay value of the tagged key k. The value is never
// modified: the caller may keep it.
func (ov *overlay) get(k []byte) ([]byte, bool) {
	ov.mu.RLock()
	e, ok := ov.m[string(k)]
	ov.mu.RUnlock()
	return e.val, ok
}

// len returns the number of keys in the overlay.
func (ov *overlay) len() int {
	ov.mu.RLock()
	defer ov.mu.RUnlock()
	return len(ov.m)
}

// appendTagged appends the overlay key of (scope, id) under tag.
func appendTagged(dst []byte, tag byte, scope, id string) []byte {
	return appendKey(append(dst, tag), scope, id)
}

// bucketOf returns the bucket of tx that holds keys of tag.
func bucketOf(tx *bbolt.Tx, tag byte) *bbolt.Bucket {
	if tag == tagVersion {
		return tx.Bucket(bucketVersions)
	}
	return tx.Bucket(bucketRecords)
}

// readDurable calls fn with the last durable value of the tagged key k:
// the overlay's, else bbolt's (nil when absent), valid only during fn. It is
// the state at some instant during the call: a key leaves the overlay only
// after bbolt holds the same value.
func (s *Store) readDurable(k []byte, fn func(v []byte) error) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	if v, ok := s.ov.get(k); ok {
		return fn(v)
	}
	return s.db.View(func(tx *bbolt.Tx) error { return fn(bucketOf(tx, k[0]).Get(k[1:])) })
}

// snapshot reads the last durable record of key. It returns the record (nil
// when absent) and two readings of the clock, one taken before the read and
// one after: the snapshot was the store's state at some instant between the
// two.
func (s *Store) snapshot(key once.Key) (r *once.Record, before, after time.Time, err error) {
	var kbuf [64]byte
	k := appendTagged(kbuf[:0], tagRecord, key.Scope, key.ID)
	before = s.now()
	err = s.readDurable(k, func(v []byte) error {
		if v == nil {
			return nil
		}
		var err error
		r, err = decodeRecord(v)
		return err
	})
	if err != nil {
		return nil, before, after, s.keyErr(key, err)
	}
	return r, before, s.now(), nil
}
