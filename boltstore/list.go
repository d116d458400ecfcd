package boltstore

import (
	"bytes"
	"context"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// listChunk is how many records List reads per read transaction.
const listChunk = 256

var _ once.Lister = (*Store)(nil)

// List implements once.Lister. The keys of a scope share a prefix, so List
// reads only that scope's records. It reads them in chunks and calls fn
// outside any transaction, so fn may call the store; a record written
// meanwhile may or may not be seen.
func (s *Store) List(ctx context.Context, scope string, fn func(once.Record) bool) error {
	prefix := appendString(nil, scope)
	after := prefix
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk, last, err := s.listChunk(prefix, after)
		if err != nil {
			return err
		}
		for _, r := range chunk {
			if !fn(r) {
				return nil
			}
		}
		if last == nil {
			return nil
		}
		after = last
	}
}

// listChunk looks at up to listChunk records of prefix whose keys sort after
// after, and returns the live ones and the last key it looked at (nil when the
// scope ran out).
func (s *Store) listChunk(prefix, after []byte) (chunk []once.Record, last []byte, err error) {
	if s.closed.Load() {
		return nil, nil, once.ErrClosed
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		now := s.now()
		c := tx.Bucket(bucketRecords).Cursor()
		k, v := c.Seek(after)
		if bytes.Equal(k, after) {
			k, v = c.Next()
		}
		for n := 1; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			r, err := decodeRecord(v)
			if err != nil {
				return err
			}
			if live, err := fsm.Get(r, now); err == nil {
				chunk = append(chunk, *live)
			}
			if n++; n > listChunk {
				last = bytes.Clone(k)
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, s.storageErr(err)
	}
	return chunk, last, nil
}
