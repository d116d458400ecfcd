package pgstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

// The examples run against the database in $DATABASE_URL, with tables
//
//	CREATE TABLE users  (id bigserial PRIMARY KEY, email text NOT NULL);
//	CREATE TABLE orders (id bigserial PRIMARY KEY, user_id text NOT NULL, items jsonb NOT NULL);
//
// They have no Output comments, so go test compiles them but does not run
// them; scenario_test.go runs the same functions against the test database.

// createUserIfMissing creates the user for email once, however many requests
// race: the users table needs no unique constraint, because the insert and
// the record of the key commit in one transaction, and a concurrent call
// waits for it and replays the id.
func createUserIfMissing(ctx context.Context, s *pgstore.Store, email string) (id string, created bool, err error) {
	ex, err := s.DoTx(ctx, once.Key{Scope: "create-user", ID: email}, nil,
		func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
			var id int64
			err := tx.QueryRow(ctx, "INSERT INTO users (email) VALUES ($1) RETURNING id", email).Scan(&id)
			return once.Result{Data: []byte(strconv.FormatInt(id, 10))}, err
		})
	if err != nil {
		return "", false, err
	}
	return string(ex.Data), !ex.Replayed, nil
}

// order is the body of POST /orders.
type order struct {
	UserID string   `json:"user_id"`
	Items  []string `json:"items"`
}

// placeOrder places the order of an Idempotency-Key once. A retry with the
// same key and body gets the same order back (replayed); the same key with
// another body gets once.ErrMismatch (HTTP 422), and nothing runs.
func placeOrder(ctx context.Context, s *pgstore.Store, idempotencyKey string, body []byte) (orderID string, replayed bool, err error) {
	fp := sha256.Sum256(body)
	ex, err := s.DoTx(ctx, once.Key{Scope: "orders", ID: idempotencyKey}, fp[:],
		func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
			var o order
			if err := json.Unmarshal(body, &o); err != nil || o.UserID == "" {
				// Rolled back, nothing stored: the client may fix the body
				// and retry with the same key.
				return once.Result{}, fmt.Errorf("bad order: %v", err)
			}
			items, _ := json.Marshal(o.Items)
			var id int64
			err := tx.QueryRow(ctx, "INSERT INTO orders (user_id, items) VALUES ($1, $2) RETURNING id",
				o.UserID, string(items)).Scan(&id)
			return once.Result{Data: []byte(strconv.FormatInt(id, 10)), Meta: map[string]string{"status": "201"}}, err
		})
	if err != nil {
		return "", false, err
	}
	return string(ex.Data), ex.Replayed, nil
}

// Create a user if missing: the insert happens once however many requests
// race on the same email.
func ExampleStore_DoTx() {
	ctx := context.Background()
	s, err := pgstore.Open(ctx, os.Getenv("DATABASE_URL"), pgstore.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	id, created, err := createUserIfMissing(ctx, s, "ada@example.com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("user", id, "created now:", created)
}

// Place an order under an Idempotency-Key: a retry replays the order, a
// reused key with another body is refused.
func ExampleStore_DoTx_placeOrder() {
	ctx := context.Background()
	s, err := pgstore.Open(ctx, os.Getenv("DATABASE_URL"), pgstore.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	body := []byte(`{"user_id": "u_123", "items": ["sku_1", "sku_2"]}`)
	for range 2 { // the client retries after a lost response
		id, replayed, err := placeOrder(ctx, s, "order_98765", body)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("order", id, "replayed:", replayed)
	}
	_, _, err = placeOrder(ctx, s, "order_98765", []byte(`{"user_id": "u_123", "items": ["sku_3"]}`))
	fmt.Println("same key, other body:", errors.Is(err, once.ErrMismatch))
}

// The package-level DoTx works on a pool of the caller's, with the default
// tables (Migrate creates them).
func ExampleDoTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pgstore.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	ex, err := pgstore.DoTx(ctx, pool, once.Key{ID: "welcome-email:u_123"}, nil,
		func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
			_, err := tx.Exec(ctx, "INSERT INTO outbox (topic, payload) VALUES ('email', 'welcome u_123')")
			return once.Result{}, err
		})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("queued now:", !ex.Replayed)
}
