package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// querier is what the statements run on: the pool, or DoTx's transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// row holds the columns of recordCols as scanned.
type row struct {
	fingerprint []byte
	state       int16
	token       int64
	attempts    int32
	lease       pgtype.Interval
	// Times are scanned as pgtype.Timestamptz, which holds ±infinity: a
	// row whose time no time.Time can hold (a hand-edited row) fails in
	// record, for its key alone, rather than failing the scan of a batch's
	// rows, which would leave the keys after it unanswered.
	leaseExpiresAt pgtype.Timestamptz
	expiresAt      pgtype.Timestamptz
	createdAt      pgtype.Timestamptz
	updatedAt      pgtype.Timestamptz
	completedAt    pgtype.Timestamptz
	result         []byte
	meta           []byte
}

// dest returns the scan destinations of recordCols.
func (r *row) dest() []any {
	return []any{&r.fingerprint, &r.state, &r.token, &r.attempts, &r.lease,
		&r.leaseExpiresAt, &r.expiresAt, &r.createdAt, &r.updatedAt, &r.completedAt,
		&r.result, &r.meta}
}

// record converts r into the record of key. It fails for a time that is
// not finite (NULL stands for the zero time).
func (r *row) record(key once.Key) (once.Record, error) {
	rec := once.Record{
		Key:         key,
		Fingerprint: r.fingerprint,
		State:       once.State(r.state),
		Token:       uint64(r.token),
		Attempts:    uint32(r.attempts),
		Lease:       duration(r.lease),
	}
	for _, t := range []struct {
		to   *time.Time
		from pgtype.Timestamptz
	}{
		{&rec.LeaseExpiresAt, r.leaseExpiresAt}, {&rec.ExpiresAt, r.expiresAt}, {&rec.CreatedAt, r.createdAt},
		{&rec.UpdatedAt, r.updatedAt}, {&rec.CompletedAt, r.completedAt},
	} {
		if t.from.InfinityModifier != pgtype.Finite {
			return once.Record{}, fmt.Errorf("pgstore: record of key %s holds an infinite time", once.Redact(key.ID))
		}
		if t.from.Valid {
			*t.to = t.from.Time
		}
	}
	if rec.State == once.StateCompleted {
		rec.Result.Data = r.result
		meta, err := decodeMeta(r.meta)
		if err != nil {
			return once.Record{}, err
		}
		rec.Result.Meta = meta
	}
	return rec, nil
}

// duration converts an interval that this package wrote (microseconds only;
// days and months are never set, but are counted as PostgreSQL would).
func duration(iv pgtype.Interval) time.Duration {
	days := int64(iv.Days) + 30*int64(iv.Months)
	return time.Duration(iv.Microseconds+days*86400e6) * time.Microsecond
}

// encodeMeta returns meta as JSON text, or NULL for a nil map. jsonb holds
// only valid UTF-8 without NUL, so other strings are refused rather than
// silently changed.
func encodeMeta(meta map[string]string) (pgtype.Text, error) {
	if meta == nil {
		return pgtype.Text{}, nil
	}
	for k, v := range meta {
		if !jsonSafe(k) || !jsonSafe(v) {
			return pgtype.Text{}, fmt.Errorf("%w: pgstore: result metadata must be valid UTF-8 without NUL bytes", once.ErrInvalidArgument)
		}
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return pgtype.Text{}, fmt.Errorf("%w: pgstore: result metadata: %v", once.ErrInvalidArgument, err)
	}
	return pgtype.Text{String: string(b), Valid: true}, nil
}

func jsonSafe(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
	}
	return true
}

func decodeMeta(b []byte) (map[string]string, error) {
	if b == nil {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("pgstore: stored result metadata: %w", err)
	}
	return m, nil
}

// Claim implements once.Store with one INSERT … ON CONFLICT DO UPDATE
// statement, shared with the claims that run at the same time (see
// batch.go), and run again if a concurrent claim of the key won a race
// with it. Returns an error wrapping once.ErrInvalidKey or
// once.ErrInvalidArgument for a bad request, once.ErrUnavailable if the
// database could not decide or ctx ended first (the claim may still have
// taken effect then).
func (s *Store) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	if err := req.Validate(); err != nil {
		return once.ClaimResult{}, err
	}
	if err := s.check(req.Key); err != nil {
		return once.ClaimResult{}, err
	}
	c := &call{key: req.Key, claim: req}
	if err := s.claims.do(ctx, c); err != nil {
		return once.ClaimResult{}, err
	}
	if !c.alone {
		return c.res, nil
	}
	var res once.ClaimResult
	err := s.retry(ctx, "claim", func() (bool, error) {
		var err error
		res, err = s.claimOnce(ctx, s.pool, req)
		if errors.Is(err, errRaced) {
			return true, nil
		}
		return false, err
	})
	return res, err
}

// errRaced: the claim statement returned no row because a concurrent claim
// changed the record after the statement's snapshot; run it again.
var errRaced = errors.New("pgstore: claim raced with another")

// claimRow is a row of claimSQL.
type claimRow struct {
	key     string
	outcome int32
	r       row
	now     time.Time
}

func (cr *claimRow) dest() []any {
	return append(append([]any{&cr.key, &cr.outcome}, cr.r.dest()...), &cr.now)
}

// result is the answer to the claim of key that cr answers.
func (cr *claimRow) result(key once.Key) (once.ClaimResult, error) {
	rec, err := cr.r.record(key)
	if err != nil {
		return once.ClaimResult{}, err
	}
	res := once.ClaimResult{Outcome: once.Outcome(cr.outcome), Record: rec}
	switch res.Outcome {
	case once.Acquired:
		res.Token = rec.Token
	case once.InProgress:
		res.RetryAfter = rec.LeaseExpiresAt.Sub(cr.now)
	case once.Completed, once.Abandoned, once.Mismatch:
	default:
		return once.ClaimResult{}, fmt.Errorf("pgstore: claim returned outcome %d", cr.outcome)
	}
	return res, nil
}

// claimArgs returns the arguments of claimSQL for one request.
func claimArgs(r once.ClaimRequest) []any {
	return []any{scopeBytes(r.Key.Scope), r.Key.ID, r.Fingerprint, micros(r.Lease), micros(r.Retention), r.Policy == once.AbandonRetry}
}

// claimArrays returns the arguments of claimSQL for a batch.
func claimArrays(calls []*call) []any {
	n := len(calls)
	scopes, ids, fps := make([][]byte, n), make([]string, n), make([][]byte, n)
	leases, keeps, retry := make([]int64, n), make([]int64, n), make([]bool, n)
	for i, c := range calls {
		r := c.claim
		scopes[i], ids[i], fps[i] = scopeBytes(r.Key.Scope), r.Key.ID, r.Fingerprint
		leases[i], keeps[i], retry[i] = micros(r.Lease), micros(r.Retention), r.Policy == once.AbandonRetry
	}
	return []any{scopes, ids, fps, leases, keeps, retry}
}

// runClaims runs claimSQL for calls (batcher.run). A call that gets no row
// lost a race and stays to run again.
func (s *Store) runClaims(ctx context.Context, calls []*call) error {
	sql, args := s.q.claim[batchMany], claimArrays(calls)
	if len(calls) == 1 {
		sql, args = s.q.claim[batchOne], claimArgs(calls[0].claim)
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var cr claimRow
	dest := cr.dest()
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		c := find(calls, cr.key)
		if c == nil {
			return fmt.Errorf("pgstore: claim answered key %s, which it was not given", once.Redact(cr.key))
		}
		c.again, c.now = false, cr.now
		if c.res, c.err = cr.result(c.key); c.err != nil {
			c.err = s.unavailable("claim", c.err)
		}
	}
	return rows.Err()
}

// followClaim answers f, a claim of the key that c claimed in the same
// batch, as if f ran just after c (batcher.follow): from the record c's
// claim left, at the time the statement judged it, through fsm.Claim, the
// transitions claimSQL implements. A claim that would acquire the key must
// write: it runs in a later batch.
func followClaim(c, f *call) bool {
	if c.err != nil {
		f.err = c.err
		return true
	}
	rec := c.res.Record.Clone()
	next, res := fsm.Claim(&rec, f.claim, c.now)
	if next != nil {
		return false
	}
	f.res = res
	return true
}

// claimOnce runs claimSQL once on q for one key. It returns errRaced if the
// claim lost a race.
func (s *Store) claimOnce(ctx context.Context, q querier, req once.ClaimRequest) (once.ClaimResult, error) {
	var cr claimRow
	err := q.QueryRow(ctx, s.q.claim[alone], claimArgs(req)...).Scan(cr.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return once.ClaimResult{}, errRaced
	}
	if err != nil {
		return once.ClaimResult{}, err
	}
	return cr.result(req.Key)
}

// exec runs a statement that returns a row per record changed and reports
// whether one was.
func (s *Store) exec(ctx context.Context, q querier, sql string, args ...any) (bool, error) {
	tag, err := q.Exec(ctx, sql, args...)
	return tag.RowsAffected() > 0, err
}

// change runs a statement that changes the record of key and returns
// notFound if it changed nothing. Contention errors are retried: the
// statement changed nothing.
func (s *Store) change(ctx context.Context, op string, key once.Key, notFound error, sql string, args ...any) error {
	if err := s.check(key); err != nil {
		return err
	}
	var changed bool
	err := s.retry(ctx, op, func() (bool, error) {
		var err error
		changed, err = s.exec(ctx, s.pool, sql, args...)
		return false, err
	})
	if err != nil {
		return err
	}
	if !changed {
		return notFound
	}
	return nil
}

// Complete implements once.Store with one conditional UPDATE, shared with
// the completions that run at the same time (see batch.go). Returns
// once.ErrFenced if token does not hold the key, an error wrapping
// once.ErrInvalidArgument if result.Meta is not valid UTF-8 without NUL
// (jsonb cannot hold it), once.ErrUnavailable if the database failed or ctx
// ended first (the completion may still have taken effect then).
func (s *Store) Complete(ctx context.Context, key once.Key, token uint64, result once.Result) error {
	if err := s.check(key); err != nil {
		return err
	}
	meta, err := encodeMeta(result.Meta)
	if err != nil {
		return err
	}
	c := &call{key: key, token: token, data: result.Data, meta: meta}
	if err := s.completes.do(ctx, c); err != nil || !c.alone {
		return err
	}
	return s.change(ctx, "complete", key, once.ErrFenced, s.q.complete[alone], s.completeArgs(c)...)
}

// completeArgs returns the arguments of completeSQL for one completion.
func (s *Store) completeArgs(c *call) []any {
	return []any{scopeBytes(c.key.Scope), c.key.ID, int64(c.token), c.data, c.meta, s.n.channel}
}

// completeArrays returns the arguments of completeSQL for a batch.
func (s *Store) completeArrays(calls []*call) []any {
	n := len(calls)
	scopes, ids, tokens, data, metas := make([][]byte, n), make([]string, n), make([]int64, n), make([][]byte, n), make([]pgtype.Text, n)
	for i, c := range calls {
		scopes[i], ids[i], tokens[i], data[i], metas[i] = scopeBytes(c.key.Scope), c.key.ID, int64(c.token), c.data, c.meta
	}
	return []any{scopes, ids, tokens, data, metas, s.n.channel}
}

// runCompletes runs completeSQL for calls (batcher.run). A call whose key
// gets no row was fenced.
func (s *Store) runCompletes(ctx context.Context, calls []*call) error {
	sql, args := s.q.complete[batchMany], s.completeArrays(calls)
	if len(calls) == 1 {
		sql, args = s.q.complete[batchOne], s.completeArgs(calls[0])
	}
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for _, c := range calls {
		c.again, c.err = false, once.ErrFenced
	}
	var id string
	for rows.Next() {
		if err := rows.Scan(&id, nil); err != nil {
			return err
		}
		if c := find(calls, id); c != nil {
			c.err = nil
		}
	}
	return rows.Err()
}

// Release implements once.Store with one conditional UPDATE. Returns
// once.ErrFenced if token does not hold the key.
func (s *Store) Release(ctx context.Context, key once.Key, token uint64) error {
	return s.change(ctx, "release", key, once.ErrFenced, s.q.release,
		scopeBytes(key.Scope), key.ID, int64(token), s.n.channel)
}

// Extend implements once.Store with one conditional UPDATE. Returns
// once.ErrFenced if token does not hold the key or the record is not in
// progress, an error wrapping once.ErrInvalidArgument if lease is not
// positive.
func (s *Store) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be positive, got %v", once.ErrInvalidArgument, lease)
	}
	return s.change(ctx, "extend", key, once.ErrFenced, s.q.extend,
		scopeBytes(key.Scope), key.ID, int64(token), micros(lease))
}

// Delete implements once.Store with one conditional UPDATE: the record
// expires now and its row stays as a tombstone until it is purgeable.
// Returns once.ErrNotFound if there is no live record.
func (s *Store) Delete(ctx context.Context, key once.Key) error {
	return s.change(ctx, "delete", key, once.ErrNotFound, s.q.del,
		scopeBytes(key.Scope), key.ID, s.n.channel)
}

// Get implements once.Store. Returns once.ErrNotFound if there is no live
// record.
func (s *Store) Get(ctx context.Context, key once.Key) (once.Record, error) {
	if err := s.check(key); err != nil {
		return once.Record{}, err
	}
	var r row
	err := s.pool.QueryRow(ctx, s.q.get, scopeBytes(key.Scope), key.ID).Scan(r.dest()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return once.Record{}, once.ErrNotFound
	}
	if err != nil {
		return once.Record{}, s.unavailable("get", err)
	}
	rec, err := r.record(key)
	if err != nil {
		return once.Record{}, s.unavailable("get", err)
	}
	return rec, nil
}

// List implements once.Lister. It reads the scope's records in one query and
// calls fn as the rows arrive.
func (s *Store) List(ctx context.Context, scope string, fn func(once.Record) bool) error {
	if err := s.check(once.Key{Scope: scope, ID: "list"}); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, s.q.list, scopeBytes(scope))
	if err != nil {
		return s.unavailable("list", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id string
			r  row
		)
		if err := rows.Scan(append([]any{&id}, r.dest()...)...); err != nil {
			return s.unavailable("list", err)
		}
		rec, err := r.record(once.Key{Scope: scope, ID: id})
		if err != nil {
			return s.unavailable("list", err)
		}
		if !fn(rec) {
			return nil
		}
	}
	if err := rows.Err(); err != nil {
		return s.unavailable("list", err)
	}
	return nil
}

// Advance implements once.Store with one INSERT … ON CONFLICT DO UPDATE …
// WHERE statement. Versions are stored as numeric(20), so the whole uint64
// range works.
func (s *Store) Advance(ctx context.Context, scope, entity string, version uint64) (bool, uint64, error) {
	if err := s.check(once.Key{Scope: scope, ID: entity}); err != nil {
		return false, 0, err
	}
	var (
		applied bool
		current uint64
	)
	err := s.retry(ctx, "advance", func() (bool, error) {
		var (
			text string
			err  error
		)
		err = s.pool.QueryRow(ctx, s.q.advance, scopeBytes(scope), entity,
			strconv.FormatUint(version, 10)).Scan(&applied, &text)
		if errors.Is(err, pgx.ErrNoRows) {
			// No row and nothing applied: only a version of 0 leaves none.
			applied, current = false, 0
			return version > 0, nil
		}
		if err != nil {
			return false, err
		}
		if current, err = strconv.ParseUint(text, 10, 64); err != nil {
			return false, fmt.Errorf("stored version %q: %w", text, err)
		}
		// A version below ours that did not apply is a snapshot older than
		// the row that beat us: look again.
		return !applied && current < version, nil
	})
	return applied, current, err
}
