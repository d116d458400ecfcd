package c

import (
	"context"
	"database/sql"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jmoiron/sqlx"
)

const selectRecent = `SELECT id FROM charges
	WHERE user_id = $1 AND product_id = $2 AND created_at > NOW() - INTERVAL '5 minutes'`

// Seed 002's dedup check, in Go.
func charge(ctx context.Context, db *sql.DB, user, product string) error {
	var id int64
	err := db.QueryRowContext(ctx, selectRecent, user, product).Scan(&id)
	if err == nil {
		return nil
	}
	_, err = db.ExecContext(ctx, "INSERT INTO charges (user_id, product_id) VALUES ($1, $2)", user, product) // want `check-then-act on table "charges" in charge: the SELECT at line 18 and this INSERT`
	return err
}

// Correct twin: the unique constraint decides.
func chargeUpsert(ctx context.Context, db *sql.DB, user, product, key string) error {
	var id int64
	_ = db.QueryRowContext(ctx, selectRecent, user, product).Scan(&id)
	_, err := db.ExecContext(ctx, `INSERT INTO charges (user_id, product_id, idempotency_key) VALUES ($1, $2, $3)
		ON CONFLICT (idempotency_key) DO NOTHING`, user, product, key)
	return err
}

// Correct twin: a serializable transaction.
func chargeSerializable(ctx context.Context, db *sql.DB, user string) error {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	if err != nil {
		return err
	}
	var n int
	_ = tx.QueryRowContext(ctx, "SELECT count(*) FROM charges WHERE user_id = $1", user).Scan(&n)
	_, err = tx.ExecContext(ctx, "INSERT INTO charges (user_id) VALUES ($1)", user)
	return err
}

// Seed 000 with pgx: find the user, create it when missing.
func createUser(ctx context.Context, conn *pgx.Conn, email string) error {
	var id int64
	if err := conn.QueryRow(ctx, `select id from "public"."users" where email = $1`, email).Scan(&id); err == nil {
		return nil
	}
	_, err := conn.Exec(ctx, `insert into public.users (email) values ($1)`, email) // want `check-then-act on table "users" in createUser`
	return err
}

// Correct twin: a read of another table, then an insert.
func audit(ctx context.Context, conn *pgx.Conn, email string) error {
	var id int64
	_ = conn.QueryRow(ctx, `SELECT id FROM users WHERE email = $1`, email).Scan(&id)
	_, err := conn.Exec(ctx, `INSERT INTO audit_log (user_id) VALUES ($1)`, id)
	return err
}

// Correct twin: pgx serializable transaction.
func createUserTx(ctx context.Context, conn *pgx.Conn, email string) error {
	tx, _ := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	var id int64
	_ = tx.QueryRow(ctx, `SELECT id FROM users WHERE email = $1`, email).Scan(&id)
	_, err := tx.Exec(ctx, `INSERT INTO users (email) VALUES ($1)`, email)
	return err
}

// Read-modify-write with sqlx: a lost update.
func debit(db *sqlx.DB, id, amount int64) {
	var balance int64
	_ = db.Get(&balance, "SELECT balance FROM accounts WHERE id = ?", id)
	db.MustExec("UPDATE accounts SET balance = ? WHERE id = ?", balance-amount, id) // want `check-then-act on table "accounts" in debit: the SELECT at line 77 and this UPDATE`
}

// Correct twin: SELECT … FOR UPDATE.
func debitLocked(db *sqlx.DB, id, amount int64) {
	var balance int64
	_ = db.Get(&balance, "SELECT balance FROM accounts WHERE id = ? FOR UPDATE", id)
	db.MustExec("UPDATE accounts SET balance = ? WHERE id = ?", balance-amount, id)
}

// Correct twin: optimistic concurrency.
func debitVersioned(db *sqlx.DB, id, amount int64) {
	var row struct{ Balance, Version int64 }
	_ = db.Get(&row, "SELECT balance, version FROM accounts WHERE id = ?", id)
	db.MustExec("UPDATE accounts SET balance = ?, version = version + 1 WHERE id = ? AND version = ?", row.Balance-amount, id, row.Version)
}

type cache struct {
	mu sync.Mutex
	m  map[string]string
}

// Get-then-set across an unlock.
func (c *cache) get(k string, load func(string) string) string {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = load(k)
	c.mu.Lock()
	c.m[k] = v // want `get-then-set of c.m\[k\] in get across an unlock: the read at line 103`
	c.mu.Unlock()
	return v
}

// Correct twin: re-check after re-locking.
func (c *cache) getRecheck(k string, load func(string) string) string {
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return v
	}
	v = load(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[k]; ok {
		return old
	}
	c.m[k] = v
	return v
}

// Correct twin: one critical section.
func (c *cache) getLocked(k string, load func(string) string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.m[k]; ok {
		return v
	}
	v := load(k)
	c.m[k] = v
	return v
}

// Correct twin: a local map, no lock, no concurrency.
func dedupe(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

var sessions sync.Map

// sync.Map Load then Store.
func session(id string) any {
	if v, ok := sessions.Load(id); ok {
		return v
	}
	s := new(struct{})
	sessions.Store(id, s) // want `get-then-set of sessions\[id\] in session: the Load at line 162`
	return s
}

// Correct twin: LoadOrStore.
func sessionOK(id string) any {
	if v, ok := sessions.Load(id); ok {
		return v
	}
	v, _ := sessions.LoadOrStore(id, new(struct{}))
	return v
}
