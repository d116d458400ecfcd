package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
	"github.com/oncehq/once/pgstore"
)

// testDB is a schema of its own on the test server, dropped when the test
// ends, and a pool to reach it.
type testDB struct {
	url    string
	pool   *pgxpool.Pool
	prefix string // "<schema>.once_"
	schema string
}

// newTestDB creates a fresh schema with the store's tables. maxConns bounds
// the pool (the server allows 100 connections, shared with other tests).
func newTestDB(tb testing.TB, maxConns int) *testDB {
	tb.Helper()
	url := testenv.PostgresURL(tb)
	ctx := context.Background()
	pc, err := pgstore.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	pc.MaxConns = int32(maxConns)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		tb.Fatal(err)
	}
	db := &testDB{url: url, pool: pool, schema: "once_test_" + randomHex(tb, 6)}
	db.prefix = db.schema + ".once_"
	tb.Cleanup(func() {
		_, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{db.schema}.Sanitize()+" CASCADE")
		if err != nil {
			tb.Errorf("drop schema %s: %v", db.schema, err)
		}
		pool.Close()
	})
	if err := db.cfg().Migrate(ctx, pool); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return db
}

func (db *testDB) cfg() pgstore.Config { return pgstore.Config{Prefix: db.prefix} }

// store returns a Store over the shared pool, closed when the test ends.
func (db *testDB) store(tb testing.TB) *pgstore.Store {
	tb.Helper()
	s, err := pgstore.New(db.pool, db.cfg())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// open returns a Store with a pool of its own, opened from the URL.
func (db *testDB) open(tb testing.TB, cfg pgstore.Config, maxConns int) *pgstore.Store {
	tb.Helper()
	cfg.Prefix = db.prefix
	url := db.url + sep(db.url) + fmt.Sprintf("pool_max_conns=%d", maxConns)
	s, err := pgstore.Open(context.Background(), url, cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func sep(url string) string {
	for i := 0; i < len(url); i++ {
		if url[i] == '?' {
			return "&"
		}
	}
	return "?"
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func key(tb testing.TB, id string) once.Key {
	return once.Key{Scope: "t-" + randomHex(tb, 4), ID: id}
}

func claimReq(k once.Key, fp string, lease, retention time.Duration) once.ClaimRequest {
	r := once.ClaimRequest{Key: k, Lease: lease, Retention: retention}
	if fp != "" {
		r.Fingerprint = []byte(fp)
	}
	return r
}

func mustClaim(tb testing.TB, s once.Store, req once.ClaimRequest, want once.Outcome) once.ClaimResult {
	tb.Helper()
	res, err := s.Claim(context.Background(), req)
	if err != nil {
		tb.Fatalf("Claim(%s): %v", req.Key, err)
	}
	if res.Outcome != want {
		tb.Fatalf("Claim(%s) = %v (token %d, record state %v token %d), want %v",
			req.Key, res.Outcome, res.Token, res.Record.State, res.Record.Token, want)
	}
	return res
}
