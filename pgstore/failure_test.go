package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

// terminate ends the server backends whose application_name is app, the
// way an operator or a failover would, and returns how many it ended. Only
// this test's connections carry app: other tests on the server go on.
func terminate(tb testing.TB, pool *pgxpool.Pool, app string) int {
	tb.Helper()
	var n int
	err := pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = $1`, app).Scan(&n)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// openApp opens a store whose connections carry application_name app.
func openApp(tb testing.TB, db *testDB, app string, maxConns int) *pgstore.Store {
	tb.Helper()
	url := db.url + sep(db.url) + fmt.Sprintf("application_name=%s&pool_max_conns=%d", app, maxConns)
	s, err := pgstore.Open(context.Background(), url, pgstore.Config{Prefix: db.prefix})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// outcome is what the load saw of one key.
type outcome struct {
	key       once.Key
	token     uint64 // 0 if the claim failed
	completed bool   // Complete returned nil
}

// TestBackendsTerminated: backends are terminated under load. Every
// operation either succeeds with the right outcome or fails wrapping
// ErrUnavailable; afterwards the store works again without help, and what it
// holds agrees with what the callers were told.
func TestBackendsTerminated(t *testing.T) {
	db := newTestDB(t, 4)
	app := "once_pgstore_failure_" + randomHex(t, 4)
	s := openApp(t, db, app, 16)
	ctx := t.Context()
	k0 := key(t, "watched")
	mustClaim(t, s, claimReq(k0, "", time.Minute, time.Minute), once.Acquired)
	watchCh, stopWatch, err := s.Watch(ctx, k0)
	if err != nil {
		t.Fatal(err)
	}
	defer stopWatch()

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		seen     []outcome
		failures atomic.Int32
	)
	fail := func(op string, err error) {
		if !errors.Is(err, once.ErrUnavailable) {
			t.Errorf("%s: %v, want an error wrapping ErrUnavailable", op, err)
		}
		failures.Add(1)
	}
	for w := range 16 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				o := outcome{key: key(t, fmt.Sprintf("w%d-%d", w, i))}
				res, err := s.Claim(ctx, claimReq(o.key, "fp", time.Minute, time.Hour))
				switch {
				case err != nil:
					fail("Claim", err)
				case res.Outcome != once.Acquired:
					t.Errorf("Claim of a fresh key = %v", res.Outcome)
				default:
					o.token = res.Token
					err = s.Complete(ctx, o.key, o.token, once.Result{Data: []byte(o.key.Scope)})
					if err != nil {
						fail("Complete", err)
					}
					o.completed = err == nil
				}
				mu.Lock()
				seen = append(seen, o)
				mu.Unlock()
			}
		})
	}
	killed := 0
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		killed += terminate(t, db.pool, app)
	}
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if killed == 0 {
		t.Fatal("no backend was terminated")
	}
	if failures.Load() == 0 {
		t.Logf("no operation failed across %d terminated backends (all idle when terminated)", killed)
	}
	waitClosed(t, watchCh, "listener connection terminated")

	recoverAfter(t, s)
	checkOutcomes(t, s, seen)
	t.Logf("%d operations, %d failed, %d backends terminated", len(seen), failures.Load(), killed)
}

// recoverAfter waits until the store works again on its own, then wants
// every operation to succeed.
func recoverAfter(t *testing.T, s *pgstore.Store) {
	t.Helper()
	ctx := t.Context()
	deadline := time.Now().Add(10 * time.Second)
	for s.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the store did not recover within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Connections that died idle in the pool fail once each at most.
	for range 32 {
		s.Ping(ctx)
	}
	for i := range 50 {
		k := key(t, fmt.Sprintf("after-%d", i))
		res, err := s.Claim(ctx, claimReq(k, "", time.Minute, time.Minute))
		if err != nil {
			t.Fatalf("Claim %d after recovery: %v", i, err)
		}
		if err := s.Complete(ctx, k, res.Token, once.Result{}); err != nil {
			t.Fatalf("Complete %d after recovery: %v", i, err)
		}
	}
	k := key(t, "watch-after")
	r := mustClaim(t, s, claimReq(k, "", time.Minute, time.Minute), once.Acquired)
	ch, stop, err := s.Watch(ctx, k)
	if err != nil {
		t.Fatalf("Watch after recovery: %v", err)
	}
	defer stop()
	if err := s.Complete(ctx, k, r.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch, "Watch after the listener reconnected")
}

// checkOutcomes compares the store with what the callers were told: a
// completed key holds its result, a claimed one is in progress or completed
// (its Complete may have committed before the connection died), a failed
// claim left the key absent or in progress.
func checkOutcomes(t *testing.T, s *pgstore.Store, seen []outcome) {
	t.Helper()
	for _, o := range seen {
		rec, err := s.Get(t.Context(), o.key)
		switch {
		case o.completed:
			if err != nil || rec.State != once.StateCompleted || rec.Token != o.token || string(rec.Result.Data) != o.key.Scope {
				t.Errorf("%s: told completed, store has %+v, %v", o.key.ID, rec, err)
			}
		case o.token != 0:
			if err != nil || rec.Token != o.token || rec.State == once.StateReleased {
				t.Errorf("%s: claimed with token %d, store has %+v, %v", o.key.ID, o.token, rec, err)
			}
		default:
			if err == nil && rec.State != once.StateInProgress {
				t.Errorf("%s: claim failed, store has %+v", o.key.ID, rec)
			} else if err != nil && !errors.Is(err, once.ErrNotFound) {
				t.Errorf("%s: Get: %v", o.key.ID, err)
			}
		}
	}
}
