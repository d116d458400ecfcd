package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/oncehq/once"
)

// Sweep implements once.Sweeper: one DELETE of at most limit rows whose
// purge time has passed, found through the purge_at index. Returns an error
// wrapping once.ErrInvalidArgument if limit is not positive.
func (s *Store) Sweep(ctx context.Context, limit int) (int, error) {
	if s.closed.Load() {
		return 0, once.ErrClosed
	}
	if limit <= 0 {
		return 0, fmt.Errorf("%w: sweep limit must be positive, got %d", once.ErrInvalidArgument, limit)
	}
	tag, err := s.pool.Exec(ctx, s.q.sweep, limit)
	if err != nil {
		return 0, s.unavailable("sweep", err)
	}
	return int(tag.RowsAffected()), nil
}

// sweepLoop sweeps every Config.SweepInterval until Close, batch after batch
// while batches come back full. Errors are left for the next tick: a sweep
// that fails deletes nothing.
func (s *Store) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.bg.Done():
			return
		case <-t.C:
		}
		for s.bg.Err() == nil {
			n, err := s.Sweep(s.bg, s.cfg.SweepBatch)
			if err != nil || n < s.cfg.SweepBatch {
				break
			}
		}
	}
}
