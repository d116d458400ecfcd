package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

// effectsTable creates a table without constraints in the test schema, so
// that a duplicated effect would show as a second row.
func effectsTable(tb testing.TB, db *testDB) string {
	tb.Helper()
	name := pgx.Identifier{db.schema, "effects"}.Sanitize()
	if _, err := db.pool.Exec(context.Background(), "CREATE TABLE "+name+" (k text NOT NULL, v text)"); err != nil {
		tb.Fatal(err)
	}
	return name
}

func countEffects(tb testing.TB, db *testDB, table, k string) int {
	tb.Helper()
	var n int
	if err := db.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE k = $1", k).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestDoTxConcurrent: 200 goroutines released together run DoTx on one key;
// fn runs once, its insert commits once, and every caller gets its result.
func TestDoTxConcurrent(t *testing.T) {
	const n = 200
	db := newTestDB(t, 64)
	table := effectsTable(t, db)
	s := db.store(t)
	k := key(t, "order-1")
	var calls atomic.Int32
	fn := func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
		calls.Add(1)
		time.Sleep(20 * time.Millisecond) // let the others pile up on the row lock
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (k, v) VALUES ($1, 'placed')", k.ID); err != nil {
			return once.Result{}, err
		}
		return once.Result{Data: []byte("order 1 placed"), Meta: map[string]string{"status": "201"}}, nil
	}
	var (
		start    = make(chan struct{})
		wg       sync.WaitGroup
		replayed atomic.Int32
		errs     = make(chan error, n)
	)
	for range n {
		wg.Go(func() {
			<-start
			ex, err := s.DoTx(context.Background(), k, []byte("fp"), fn)
			if err != nil {
				errs <- err
				return
			}
			if string(ex.Data) != "order 1 placed" || ex.Meta["status"] != "201" || ex.Token != 1 {
				errs <- fmt.Errorf("DoTx = %+v, want the stored result with token 1", ex)
			}
			if ex.Replayed {
				replayed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("fn ran %d times, want 1", got)
	}
	if got := countEffects(t, db, table, k.ID); got != 1 {
		t.Errorf("%d effect rows, want 1", got)
	}
	if got := replayed.Load(); got != n-1 {
		t.Errorf("%d replays, want %d", got, n-1)
	}
}

// TestDoTxError: fn's error rolls everything back; the next call runs fn.
func TestDoTxError(t *testing.T) {
	db := newTestDB(t, 8)
	table := effectsTable(t, db)
	s := db.store(t)
	k := key(t, "k")
	boom := errors.New("boom")
	_, err := s.DoTx(t.Context(), k, nil, func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (k) VALUES ($1)", k.ID); err != nil {
			return once.Result{}, err
		}
		return once.Result{}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("DoTx = %v, want fn's error", err)
	}
	if _, err := s.Get(t.Context(), k); !errors.Is(err, once.ErrNotFound) {
		t.Fatalf("Get after a failed DoTx = %v, want ErrNotFound", err)
	}
	if got := countEffects(t, db, table, k.ID); got != 0 {
		t.Fatalf("%d effect rows after rollback, want 0", got)
	}
	ex, err := s.DoTx(t.Context(), k, nil, func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (k) VALUES ($1)", k.ID)
		return once.Result{Data: []byte("ok")}, err
	})
	if err != nil || ex.Replayed || string(ex.Data) != "ok" || ex.Token != 1 || ex.Attempts != 1 {
		t.Fatalf("DoTx after rollback = %+v, %v; want a fresh run with token 1", ex, err)
	}
	ex, err = s.DoTx(t.Context(), k, nil, func(context.Context, pgx.Tx) (once.Result, error) {
		t.Error("fn ran for a completed key")
		return once.Result{}, nil
	})
	if err != nil || !ex.Replayed || string(ex.Data) != "ok" {
		t.Fatalf("DoTx of a completed key = %+v, %v; want a replay", ex, err)
	}
	if got := countEffects(t, db, table, k.ID); got != 1 {
		t.Fatalf("%d effect rows, want 1", got)
	}
}

// TestDoTxPanic: a panicking fn rolls back and leaves the key free.
func TestDoTxPanic(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	k := key(t, "k")
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("DoTx swallowed fn's panic")
			}
		}()
		s.DoTx(t.Context(), k, nil, func(context.Context, pgx.Tx) (once.Result, error) { panic("boom") })
	}()
	mustClaim(t, s, claimReq(k, "", time.Minute, time.Minute), once.Acquired)
}

// TestDoTxOutcomes: a key held by a lease-based claim, or reused with another
// fingerprint, is refused without running fn.
func TestDoTxOutcomes(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	never := func(context.Context, pgx.Tx) (once.Result, error) {
		t.Error("fn ran")
		return once.Result{}, nil
	}
	held := key(t, "held")
	mustClaim(t, s, claimReq(held, "a", time.Minute, time.Minute), once.Acquired)
	_, err := s.DoTx(t.Context(), held, []byte("a"), never)
	var ce *once.ClaimError
	if !errors.As(err, &ce) || !errors.Is(err, once.ErrInProgress) || ce.RetryAfter <= 0 {
		t.Fatalf("DoTx of a held key = %v, want a ClaimError wrapping ErrInProgress with RetryAfter", err)
	}
	done := key(t, "done")
	if _, err := s.DoTx(t.Context(), done, []byte("a"), func(context.Context, pgx.Tx) (once.Result, error) {
		return once.Result{Data: []byte("x")}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DoTx(t.Context(), done, []byte("b"), never); !errors.Is(err, once.ErrMismatch) {
		t.Fatalf("DoTx with another fingerprint = %v, want ErrMismatch", err)
	}
	if _, err := s.DoTx(t.Context(), once.Key{ID: ""}, nil, never); !errors.Is(err, once.ErrInvalidKey) {
		t.Fatalf("DoTx with an empty key = %v, want ErrInvalidKey", err)
	}
	if _, err := s.DoTx(t.Context(), done, nil, nil); !errors.Is(err, once.ErrInvalidArgument) {
		t.Fatalf("DoTx with a nil fn = %v, want ErrInvalidArgument", err)
	}
}

// TestDoTxBlocksClaim: while DoTx runs, a Claim of the key waits for it and
// then sees the completed record.
func TestDoTxBlocksClaim(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	k := key(t, "k")
	inFn := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.DoTx(context.Background(), k, nil, func(context.Context, pgx.Tx) (once.Result, error) {
			close(inFn)
			<-release
			return once.Result{Data: []byte("r")}, nil
		})
		done <- err
	}()
	<-inFn
	claimed := make(chan once.ClaimResult, 1)
	go func() {
		res, err := s.Claim(context.Background(), claimReq(k, "", time.Minute, time.Minute))
		if err != nil {
			t.Error(err)
		}
		claimed <- res
	}()
	select {
	case res := <-claimed:
		t.Fatalf("Claim returned %v while DoTx held the key", res.Outcome)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if res := <-claimed; res.Outcome != once.Completed || string(res.Record.Result.Data) != "r" {
		t.Fatalf("Claim after DoTx = %v %q, want completed %q", res.Outcome, res.Record.Result.Data, "r")
	}
}

// TestDoTxPackageFunc: the package-level DoTx and Migrate use the default
// tables, found through the search_path (here, the test schema).
func TestDoTxPackageFunc(t *testing.T) {
	db := newTestDB(t, 4)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, db.url+sep(db.url)+"search_path="+db.schema+"&pool_max_conns=4")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	k := key(t, "k")
	for i, wantReplayed := range []bool{false, true} {
		ex, err := pgstore.DoTx(ctx, pool, k, nil, func(context.Context, pgx.Tx) (once.Result, error) {
			return once.Result{Data: []byte("v")}, nil
		})
		if err != nil || ex.Replayed != wantReplayed || string(ex.Data) != "v" {
			t.Fatalf("call %d: DoTx = %+v, %v; want replayed %v", i, ex, err, wantReplayed)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM once_records").Scan(&n); err != nil || n != 1 {
		t.Fatalf("once_records in the test schema holds %d rows (%v), want 1", n, err)
	}
}
