package boltstore

import (
	"bytes"
	"context"
	"strings"

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
// meanwhile may or may not be seen, and none is seen twice. The scope's
// records that are not yet checkpointed come from the overlay, as it was
// when List began.
func (s *Store) List(ctx context.Context, scope string, fn func(once.Record) bool) error {
	prefix := appendString(nil, scope)
	newer := s.overlayScope(prefix)
	after := prefix
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk, last, err := s.listChunk(prefix, after, newer)
		if err != nil {
			return err
		}
		for _, r := range chunk {
			if !fn(r) {
				return nil
			}
		}
		if last == nil {
			break
		}
		after = last
	}
	// The overlay's records that bbolt did not hold yet.
	now := s.now()
	for _, v := range newer {
		r, err := decodeRecord(v)
		if err != nil {
			return s.storageErr(err)
		}
		if live, err := fsm.Get(r, now); err == nil && !fn(*live) {
			return nil
		}
	}
	return nil
}

// overlayScope copies out the overlay's records whose bbolt keys start with
// prefix, by bbolt key.
func (s *Store) overlayScope(prefix []byte) map[string][]byte {
	tagged := append([]byte{tagRecord}, prefix...)
	out := map[string][]byte{}
	s.ov.mu.RLock()
	defer s.ov.mu.RUnlock()
	for k, e := range s.ov.m {
		if strings.HasPrefix(k, string(tagged)) {
			out[k[1:]] = e.val
		}
	}
	return out
}

// listChunk looks at up to listChunk records of prefix whose keys sort after
// after, and returns the live ones and the last key it looked at (nil when the
// scope ran out). A record in newer is read from there instead, and removed.
func (s *Store) listChunk(prefix, after []byte, newer map[string][]byte) (chunk []once.Record, last []byte, err error) {
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
			if nv, ok := newer[string(k)]; ok {
				v = nv
				delete(newer, string(k))
			}
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
