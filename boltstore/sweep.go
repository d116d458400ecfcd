package boltstore

import (
	"bytes"
	"context"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// maxSweepsPerTick bounds the transactions one tick of the background
// sweeper runs, so that a backlog is worked off without starving writers.
const maxSweepsPerTick = 16

// Sweep implements once.Sweeper: it deletes at most limit records whose
// purge time has passed, in one transaction, walking the purge index from
// its oldest entry, and returns how many it deleted. It first checkpoints,
// so that records only in the log are swept too.
func (s *Store) Sweep(ctx context.Context, limit int) (int, error) {
	if s.closed.Load() {
		return 0, once.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, nil
	}
	if err := s.checkpointNow(ctx); err != nil {
		return 0, s.storageErr(err)
	}
	return s.sweepOnce(limit)
}

// sweepOnce runs one sweep transaction. Records only in the log wait for
// their checkpoint: they are young, for purge times are retention plus lease.
func (s *Store) sweepOnce(limit int) (int, error) {
	var n int
	err := s.db.Update(func(tx *bbolt.Tx) error {
		var err error
		n, err = s.sweep(tx, s.now(), limit)
		return err
	})
	if err != nil {
		return 0, s.storageErr(err)
	}
	return n, nil
}

// sweep deletes at most limit purgeable records of tx. It looks at no more
// than limit index entries, so that its work is bounded even if the index
// held entries that no longer match their record. A record with a newer
// value in the overlay is left alone, index entry included: the checkpoint
// that writes the newer value moves the entry.
func (s *Store) sweep(tx *bbolt.Tx, now time.Time, limit int) (int, error) {
	records, purge := tx.Bucket(bucketRecords), tx.Bucket(bucketPurge)
	due := appendPurgeTime(nil, now)
	var keys [][]byte
	c := purge.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		if len(k) >= purgeTimeLen && bytes.Compare(k[:purgeTimeLen], due) > 0 {
			break
		}
		// Deleting under a cursor makes it skip entries: collect first.
		keys = append(keys, bytes.Clone(k))
	}
	n := 0
	var tagged []byte
	for _, pk := range keys {
		if len(pk) > purgeTimeLen {
			tagged = append(append(tagged[:0], tagRecord), pk[purgeTimeLen:]...)
			if _, newer := s.ov.get(tagged); newer {
				continue
			}
		}
		if len(pk) > purgeTimeLen && purgeable(records.Get(pk[purgeTimeLen:]), pk[:purgeTimeLen], now) {
			if err := records.Delete(pk[purgeTimeLen:]); err != nil {
				return 0, err
			}
			n++
		}
		if err := purge.Delete(pk); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// purgeable reports whether the stored record v, indexed at purge time at,
// may be deleted. A record rewritten since it was indexed there is kept (it
// has its own entry); one that no longer decodes is due by its entry.
func purgeable(v, at []byte, now time.Time) bool {
	if v == nil {
		return false
	}
	r, err := decodeRecord(v)
	if err != nil {
		return true
	}
	return fsm.Purgeable(r, now) && bytes.Equal(appendPurgeTime(nil, r.PurgeAt()), at)
}

// sweeper runs Sweep every interval until Close, a few batches at a time.
func (s *Store) sweeper(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for range maxSweepsPerTick {
			n, err := s.sweepOnce(s.limit)
			if err != nil || n < s.limit {
				break
			}
		}
	}
}
