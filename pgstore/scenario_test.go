package pgstore_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

// scenarioStore returns a store whose connections resolve unqualified names
// (users, orders) in the test schema, where the examples' tables are made.
func scenarioStore(t *testing.T, maxConns int) (*pgstore.Store, *testDB) {
	t.Helper()
	db := newTestDB(t, 4)
	pool, err := pgxpool.New(t.Context(), db.url+sep(db.url)+"search_path="+db.schema+"&pool_max_conns="+itoa(maxConns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = pool.Exec(t.Context(), `CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);
		CREATE TABLE orders (id bigserial PRIMARY KEY, user_id text NOT NULL, items jsonb NOT NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(pool, db.cfg())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, db
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestScenarioCreateUser: 100 signups of one email race; one user row.
func TestScenarioCreateUser(t *testing.T) {
	s, db := scenarioStore(t, 32)
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		created atomic.Int32
		ids     sync.Map
	)
	for range 100 {
		wg.Go(func() {
			<-start
			id, c, err := createUserIfMissing(context.Background(), s, "ada@example.com")
			if err != nil {
				t.Error(err)
				return
			}
			ids.Store(id, true)
			if c {
				created.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	n := 0
	ids.Range(func(any, any) bool { n++; return true })
	var rows int
	if err := db.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+db.schema+".users").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if created.Load() != 1 || n != 1 || rows != 1 {
		t.Fatalf("created %d times, %d distinct ids, %d rows; want 1, 1, 1", created.Load(), n, rows)
	}
}

// TestScenarioPlaceOrder: retries replay the order, a reused key with
// another body is refused, a bad body stores nothing.
func TestScenarioPlaceOrder(t *testing.T) {
	s, db := scenarioStore(t, 32)
	ctx := t.Context()
	body := []byte(`{"user_id": "u_123", "items": ["sku_1", "sku_2"]}`)
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		replayed atomic.Int32
		ids      sync.Map
	)
	for range 50 {
		wg.Go(func() {
			<-start
			id, r, err := placeOrder(context.Background(), s, "order_98765", body)
			if err != nil {
				t.Error(err)
				return
			}
			ids.Store(id, true)
			if r {
				replayed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	var rows int
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM "+db.schema+".orders").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 || replayed.Load() != 49 {
		t.Fatalf("%d orders, %d replays; want 1 and 49", rows, replayed.Load())
	}
	if _, _, err := placeOrder(ctx, s, "order_98765", []byte(`{"user_id": "u_123", "items": ["sku_3"]}`)); !errors.Is(err, once.ErrMismatch) {
		t.Fatalf("same key, other body: %v, want ErrMismatch", err)
	}
	if _, _, err := placeOrder(ctx, s, "order_bad", []byte(`{`)); err == nil {
		t.Fatal("a bad body placed an order")
	}
	if _, err := s.Get(ctx, once.Key{Scope: "orders", ID: "order_bad"}); !errors.Is(err, once.ErrNotFound) {
		t.Fatalf("after a failed order the key holds a record (%v); want none", err)
	}
	id, r, err := placeOrder(ctx, s, "order_bad", []byte(`{"user_id": "u_9", "items": []}`))
	if err != nil || r || id == "" {
		t.Fatalf("retry of the fixed order = %q, %v, %v; want a fresh order", id, r, err)
	}
}
