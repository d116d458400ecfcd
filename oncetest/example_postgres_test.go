package oncetest_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/oncehq/once/oncetest"
)

// Seed 000 against a real PostgreSQL: ten requests create a user by
// check-then-insert, each on its own connection as ten API processes would.
// A barrier between the check and the insert forces the interleaving that
// production hits once in a thousand requests: every request checks before
// any inserts, so all ten insert. Then the fix, a unique constraint with
// INSERT … ON CONFLICT DO NOTHING, under the very same interleaving: one row.
//
// It needs ONCE_TEST_POSTGRES_URL; TestExamplePostgres runs it and checks
// its output.
func Example_postgres() {
	ctx := context.Background()
	const n = 10
	db, conns := connect(ctx, os.Getenv("ONCE_TEST_POSTGRES_URL"), n)
	defer db.cleanup(ctx, conns)
	email := "ann@example.com"
	rows := oncetest.CountFunc(func() int64 {
		var count int64
		must(db.setup.QueryRow(ctx, "SELECT count(*) FROM users WHERE email = $1", email).Scan(&count))
		return count
	})

	// The bug: check, then insert.
	checked := oncetest.NewBarrier(n)
	oncetest.Race(t, n, func(i int) error {
		var exists bool
		err := conns[i].QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)", email).Scan(&exists)
		checked.Wait()
		if err != nil || exists {
			return err
		}
		_, err = conns[i].Exec(ctx, "INSERT INTO users (email) VALUES ($1)", email)
		return err
	})
	fmt.Println("check-then-insert:", rows.Load(), "rows")

	// The fix: the database enforces uniqueness, the insert tolerates it.
	db.exec(ctx, "TRUNCATE users", "ALTER TABLE users ADD UNIQUE (email)")
	checked = oncetest.NewBarrier(n)
	errs := oncetest.Race(t, n, func(i int) error {
		var exists bool
		err := conns[i].QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)", email).Scan(&exists)
		checked.Wait()
		if err != nil || exists {
			return err
		}
		_, err = conns[i].Exec(ctx, "INSERT INTO users (email) VALUES ($1) ON CONFLICT (email) DO NOTHING", email)
		return err
	})
	fmt.Println("unique constraint:", rows.Load(), "row,", errs.Count(), "errors")
	oncetest.ExactlyOnce(t, rows)
	// With ONCE_TEST_POSTGRES_URL set, it prints:
	// check-then-insert: 10 rows
	// unique constraint: 1 row, 0 errors
}

// exampleDB is the example's private schema, dropped at the end.
type exampleDB struct {
	setup  *pgx.Conn
	schema string
}

// connect creates a schema of its own holding a users table without any
// constraint, and opens n connections that use it.
func connect(ctx context.Context, dsn string, n int) (*exampleDB, []*pgx.Conn) {
	setup, err := pgx.Connect(ctx, dsn)
	must(err)
	db := &exampleDB{setup: setup, schema: "once_example_" + strings.ToLower(rand.Text()[:10])}
	db.exec(ctx, "CREATE SCHEMA "+pgx.Identifier{db.schema}.Sanitize())
	db.exec(ctx, "SET search_path TO "+pgx.Identifier{db.schema}.Sanitize(),
		"CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL)")
	cfg, err := pgx.ParseConfig(dsn)
	must(err)
	cfg.RuntimeParams["search_path"] = db.schema
	conns := make([]*pgx.Conn, n)
	for i := range conns {
		conns[i], err = pgx.ConnectConfig(ctx, cfg)
		must(err)
	}
	return db, conns
}

func (db *exampleDB) exec(ctx context.Context, sql ...string) {
	for _, s := range sql {
		_, err := db.setup.Exec(ctx, s)
		must(err)
	}
}

func (db *exampleDB) cleanup(ctx context.Context, conns []*pgx.Conn) {
	for _, c := range conns {
		c.Close(ctx)
	}
	db.exec(ctx, "DROP SCHEMA "+pgx.Identifier{db.schema}.Sanitize()+" CASCADE")
	db.setup.Close(ctx)
}

func must(err error) {
	if err != nil {
		t.Fatalf("%v", err)
	}
}
