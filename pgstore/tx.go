package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
)

// TxFunc is the work DoTx runs inside its transaction. Its writes through tx
// commit together with the record; the Result it returns is stored and
// replayed to later callers.
type TxFunc func(ctx context.Context, tx pgx.Tx) (once.Result, error)

// DoTx runs fn at most once per key with the default configuration (tables
// once_*, DefaultRetention): see Store.DoTx. It assumes Migrate has run.
func DoTx(ctx context.Context, pool *pgxpool.Pool, key once.Key, fingerprint []byte, fn TxFunc) (once.Execution, error) {
	s, err := New(pool, Config{})
	if err != nil {
		return once.Execution{}, err
	}
	defer s.Close()
	return s.DoTx(ctx, key, fingerprint, fn)
}

// DoTx claims key, runs fn and completes the record in one READ COMMITTED
// transaction, so that fn's writes to this database take effect exactly once
// with no lease to lose: they commit with the completed record, or neither
// does.
//
// While fn runs, the record's row is locked and invisible to others. A
// concurrent DoTx or Claim of the key waits for the lock, then finds the
// completed record and replays it (Execution.Replayed), or, if fn failed and
// the transaction rolled back, acquires the key itself. fn is never run for a
// key whose record is completed.
//
// If fn returns an error, the transaction rolls back, nothing is stored and
// DoTx returns that error: a later call runs fn again. A key held by a
// lease-based Claim elsewhere, an abandoned one or one reused with another
// fingerprint gets a *once.ClaimError wrapping once.ErrInProgress,
// once.ErrAbandoned or once.ErrMismatch, without running fn. Database
// failures wrap once.ErrUnavailable; if the commit itself fails the outcome
// is unknown, and a retry either replays or runs fn afresh.
func (s *Store) DoTx(ctx context.Context, key once.Key, fingerprint []byte, fn TxFunc) (once.Execution, error) {
	if err := s.check(key); err != nil {
		return once.Execution{}, err
	}
	if fn == nil {
		return once.Execution{}, fmt.Errorf("%w: pgstore: nil TxFunc", once.ErrInvalidArgument)
	}
	req := once.ClaimRequest{Key: key, Fingerprint: fingerprint, Lease: txLease, Retention: s.cfg.Retention}
	for i := 0; ; i++ {
		ex, err := s.doTx(ctx, req, fn)
		if !errors.Is(err, errRaced) {
			return ex, err
		}
		if i == maxRetries {
			return once.Execution{}, s.unavailable("claim", errors.New("too much contention on one key"))
		}
	}
}

// doTx runs one transaction of DoTx. It returns errRaced, before fn runs,
// if the claim lost a race: the transaction is then rolled back and DoTx
// starts a new one, whose now() is later than the row that won (the claim
// statement compares the row's time with the transaction's start).
func (s *Store) doTx(ctx context.Context, req once.ClaimRequest, fn TxFunc) (once.Execution, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return once.Execution{}, s.unavailable("begin", err)
	}
	// Rollback after Commit is a no-op; this also covers a panicking fn.
	defer tx.Rollback(context.WithoutCancel(ctx))
	res, err := s.claimOnce(ctx, tx, req)
	if errors.Is(err, errRaced) {
		return once.Execution{}, err
	}
	if err != nil {
		return once.Execution{}, s.txError("claim", err)
	}
	if res.Outcome != once.Acquired {
		return s.notAcquired(ctx, tx, res)
	}
	result, err := fn(ctx, tx)
	if err != nil {
		return once.Execution{}, err
	}
	if err := s.completeTx(ctx, tx, req.Key, res.Token, result); err != nil {
		return once.Execution{}, err
	}
	if err := tx.Commit(ctx); err != nil {
		return once.Execution{}, s.txError("commit", err)
	}
	return once.Execution{Result: result.Clone(), Token: res.Token, Attempts: res.Record.Attempts}, nil
}

// notAcquired answers a DoTx whose claim found a record: a replay of the
// completed result, or the ClaimError of the other outcomes.
func (s *Store) notAcquired(ctx context.Context, tx pgx.Tx, res once.ClaimResult) (once.Execution, error) {
	switch res.Outcome {
	case once.Completed:
		// The claim may have locked the row: end the transaction now.
		if err := tx.Commit(ctx); err != nil {
			return once.Execution{}, s.txError("commit", err)
		}
		r := res.Record
		return once.Execution{Result: r.Result, Replayed: true, Token: r.Token, Attempts: r.Attempts}, nil
	case once.InProgress:
		return once.Execution{}, &once.ClaimError{Err: once.ErrInProgress, RetryAfter: res.RetryAfter, Record: res.Record}
	case once.Abandoned:
		return once.Execution{}, &once.ClaimError{Err: once.ErrAbandoned, Record: res.Record}
	default:
		return once.Execution{}, &once.ClaimError{Err: once.ErrMismatch, Record: res.Record}
	}
}

// completeTx completes the record DoTx claimed. The transaction holds the
// row, so only a result that cannot be stored, or a retention shorter than
// fn's run, makes it fail.
func (s *Store) completeTx(ctx context.Context, tx pgx.Tx, key once.Key, token uint64, result once.Result) error {
	meta, err := encodeMeta(result.Meta)
	if err != nil {
		return err
	}
	args := s.completeArgs(&call{key: key, token: token, data: result.Data, meta: meta})
	changed, err := s.exec(ctx, tx, s.q.complete[alone], args...)
	if err != nil {
		return s.txError("complete", err)
	}
	if !changed {
		return once.ErrFenced
	}
	return nil
}

// txError maps an error of DoTx's own statements: a deadlock or
// serialization failure means another transaction works on the key.
func (s *Store) txError(op string, err error) error {
	if contended(err) {
		return fmt.Errorf("pgstore: %s: %w: %w", op, once.ErrInProgress, err)
	}
	return s.unavailable(op, err)
}
