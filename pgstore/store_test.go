package pgstore_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		max  int32
		fail bool
	}{
		{url: "postgres://u@localhost/db", max: pgstore.DefaultMaxConns},
		{url: "postgresql://u@localhost/db?sslmode=disable", max: pgstore.DefaultMaxConns},
		{url: "postgres://u@localhost/db?pool_max_conns=7", max: 7},
		{url: "redis://localhost", fail: true},
		{url: "u@localhost/db", fail: true},
		{url: "postgres://u:secret@localhost/db?pool_max_conns=x", fail: true},
	} {
		pc, err := pgstore.ParseURL(tc.url)
		if tc.fail {
			if !errors.Is(err, once.ErrInvalidArgument) {
				t.Errorf("ParseURL(%q) = %v, want ErrInvalidArgument", tc.url, err)
			} else if strings.Contains(err.Error(), "secret") {
				t.Errorf("ParseURL(%q) error shows the password: %v", tc.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if pc.MaxConns != tc.max {
			t.Errorf("ParseURL(%q).MaxConns = %d, want %d", tc.url, pc.MaxConns, tc.max)
		}
	}
}

func TestPrefix(t *testing.T) {
	for _, p := range []string{"a-b", "1x", ".", ".x", "a.b.c", "x y", strings.Repeat("a", 41), "é"} {
		if _, err := (pgstore.Config{Prefix: p}).Schema(); !errors.Is(err, once.ErrInvalidArgument) {
			t.Errorf("Config{Prefix: %q}.Schema() = %v, want ErrInvalidArgument", p, err)
		}
	}
	ddl, err := pgstore.Config{Prefix: "app.x_"}.Schema()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`CREATE SCHEMA IF NOT EXISTS "app";`, `CREATE TABLE IF NOT EXISTS "app"."x_records"`,
		`CREATE INDEX IF NOT EXISTS "x_records_purge_at" ON "app"."x_records"`, `"app"."x_versions"`} {
		if !strings.Contains(ddl, want) {
			t.Errorf("schema for app.x_ lacks %s", want)
		}
	}
	if s := pgstore.Schema(); !strings.Contains(s, `CREATE TABLE IF NOT EXISTS "once_records"`) || strings.Contains(s, "{{") {
		t.Errorf("Schema() is not the default schema with every placeholder filled:\n%s", s)
	}
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	db := newTestDB(t, 8)
	cfg := pgstore.Config{Prefix: db.schema + ".other_"}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := cfg.Migrate(context.Background(), db.pool); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := cfg.Migrate(t.Context(), db.pool); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+db.schema+".other_schema_version").Scan(&n); err != nil || n != 1 {
		t.Fatalf("schema_version holds %d rows (%v), want 1", n, err)
	}
	if _, err := db.pool.Exec(t.Context(), "INSERT INTO "+db.schema+".other_schema_version (version) VALUES (99)"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Migrate(t.Context(), db.pool); !errors.Is(err, once.ErrInvalidArgument) || !strings.Contains(err.Error(), "99") {
		t.Fatalf("Migrate over a newer schema = %v, want an error naming version 99", err)
	}
}

// TestMigrateVersion1: a version-1 schema (fillfactor 80) works as it is
// and is upgraded in place by Migrate, once: a fillfactor set by hand later
// stays.
func TestMigrateVersion1(t *testing.T) {
	db := newTestDB(t, 4)
	ctx := t.Context()
	records, versions := db.schema+".once_records", db.schema+".once_schema_version"
	exec := func(sql string) {
		t.Helper()
		if _, err := db.pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	fillfactor := func() string {
		t.Helper()
		var opts []string
		if err := db.pool.QueryRow(ctx, "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass", records).Scan(&opts); err != nil {
			t.Fatal(err)
		}
		return strings.Join(opts, ",")
	}
	exec("ALTER TABLE " + records + " SET (fillfactor = 80)")
	exec("DELETE FROM " + versions)
	exec("INSERT INTO " + versions + " (version) VALUES (1)")

	s := db.open(t, pgstore.Config{SkipMigrate: true}, 4)
	k := key(t, "v1")
	r := mustClaim(t, s, claimReq(k, "", time.Minute, time.Hour), once.Acquired)
	if err := s.Complete(ctx, k, r.Token, once.Result{Data: []byte("ok")}); err != nil {
		t.Fatalf("Complete on a version-1 schema: %v", err)
	}
	if err := db.cfg().Migrate(ctx, db.pool); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := db.pool.QueryRow(ctx, "SELECT max(version) FROM "+versions).Scan(&v); err != nil || v != pgstore.SchemaVersion {
		t.Fatalf("version after Migrate: %d (%v), want %d", v, err, pgstore.SchemaVersion)
	}
	if got := fillfactor(); got != "fillfactor=50" {
		t.Fatalf("records after upgrading version 1: %s, want fillfactor=50", got)
	}
	exec("ALTER TABLE " + records + " SET (fillfactor = 70)")
	if err := db.cfg().Migrate(ctx, db.pool); err != nil {
		t.Fatal(err)
	}
	if got := fillfactor(); got != "fillfactor=70" {
		t.Fatalf("Migrate changed a fillfactor set by hand: %s", got)
	}
	mustClaim(t, s, claimReq(k, "", time.Minute, time.Hour), once.Completed)
}

func TestOpenAndClose(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.open(t, pgstore.Config{}, 4)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := s.Pool().Config().MaxConns; got != 4 {
		t.Errorf("MaxConns = %d, want the URL's 4", got)
	}
	k := key(t, "k")
	s.Close()
	if _, err := s.Claim(t.Context(), claimReq(k, "", time.Minute, time.Minute)); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Claim after Close = %v, want ErrClosed", err)
	}
	if err := s.Ping(t.Context()); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
	if _, err := pgstore.Open(t.Context(), "mysql://x", pgstore.Config{}); !errors.Is(err, once.ErrInvalidArgument) {
		t.Errorf("Open(mysql://) = %v, want ErrInvalidArgument", err)
	}
	// New does not own the pool: closing its store leaves the pool usable.
	s2 := db.store(t)
	s2.Close()
	if err := db.pool.Ping(t.Context()); err != nil {
		t.Errorf("pool after closing a New store: %v", err)
	}
}

// TestClaimOneOf200: of 200 concurrent claims of a fresh key exactly one
// acquires; the others see it in progress.
func TestClaimOneOf200(t *testing.T) {
	db := newTestDB(t, 64)
	s := db.store(t)
	for round := range 3 {
		k := key(t, "hot")
		var (
			acquired, inProgress atomic.Int32
			start                = make(chan struct{})
			wg                   sync.WaitGroup
		)
		for range 200 {
			wg.Go(func() {
				<-start
				res, err := s.Claim(context.Background(), claimReq(k, "fp", time.Minute, time.Hour))
				switch {
				case err != nil:
					t.Error(err)
				case res.Outcome == once.Acquired:
					acquired.Add(1)
				case res.Outcome == once.InProgress:
					inProgress.Add(1)
				default:
					t.Errorf("outcome %v", res.Outcome)
				}
			})
		}
		close(start)
		wg.Wait()
		if acquired.Load() != 1 || inProgress.Load() != 199 {
			t.Fatalf("round %d: %d acquired, %d in progress; want 1 and 199", round, acquired.Load(), inProgress.Load())
		}
	}
}

// TestTombstone: Delete keeps the counter; the next claim gets a larger
// token and starts the attempts over.
func TestTombstone(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	k := key(t, "k")
	ctx := t.Context()
	r1 := mustClaim(t, s, claimReq(k, "a", time.Minute, time.Hour), once.Acquired)
	if err := s.Complete(ctx, k, r1.Token, once.Result{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, k); !errors.Is(err, once.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	if err := s.Complete(ctx, k, r1.Token, once.Result{Data: []byte("x")}); !errors.Is(err, once.ErrFenced) {
		t.Fatalf("Complete after Delete = %v, want ErrFenced", err)
	}
	r2 := mustClaim(t, s, claimReq(k, "b", time.Minute, time.Hour), once.Acquired)
	if r2.Token != r1.Token+1 || r2.Record.Attempts != 1 || !r2.Record.CreatedAt.After(r1.Record.CreatedAt) {
		t.Fatalf("claim after Delete: token %d attempts %d, want token %d attempts 1 and a new CreatedAt",
			r2.Token, r2.Record.Attempts, r1.Token+1)
	}
}

// TestSweep: rows past their purge time go, at most limit per call; a swept
// key starts over at token 1.
func TestSweep(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	ctx := t.Context()
	if _, err := s.Sweep(ctx, 0); !errors.Is(err, once.ErrInvalidArgument) {
		t.Fatalf("Sweep(0) = %v, want ErrInvalidArgument", err)
	}
	keys := make([]once.Key, 5)
	for i := range keys {
		keys[i] = key(t, "short")
		mustClaim(t, s, claimReq(keys[i], "", 50*time.Millisecond, 50*time.Millisecond), once.Acquired)
	}
	live := key(t, "live")
	mustClaim(t, s, claimReq(live, "", time.Minute, time.Minute), once.Acquired)
	time.Sleep(250 * time.Millisecond) // retention + lease, with margin
	if n, err := s.Sweep(ctx, 2); err != nil || n != 2 {
		t.Fatalf("Sweep(2) = %d, %v; want 2", n, err)
	}
	if n, err := s.Sweep(ctx, 10); err != nil || n != 3 {
		t.Fatalf("Sweep(10) = %d, %v; want 3", n, err)
	}
	if _, err := s.Get(ctx, live); err != nil {
		t.Fatalf("Get(live) after Sweep: %v", err)
	}
	if r := mustClaim(t, s, claimReq(keys[0], "", time.Minute, time.Minute), once.Acquired); r.Token != 1 {
		t.Fatalf("claim of a swept key: token %d, want 1", r.Token)
	}
}

// TestTombstoneOutlivesRetention: an expired record that is not yet
// purgeable still keeps the counter.
func TestTombstoneOutlivesRetention(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	k := key(t, "k")
	mustClaim(t, s, claimReq(k, "", 2*time.Second, 100*time.Millisecond), once.Acquired)
	// Retention is raised to the lease: the record lives 2s and is purged at 4s.
	time.Sleep(50 * time.Millisecond)
	if n, err := s.Sweep(t.Context(), 10); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v; want 0", n, err)
	}
	if err := s.Delete(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Sweep(t.Context(), 10); n != 0 {
		t.Fatalf("Sweep right after Delete removed %d rows; the tombstone must stay a lease", n)
	}
	if r := mustClaim(t, s, claimReq(k, "", time.Minute, time.Minute), once.Acquired); r.Token != 2 {
		t.Fatalf("token %d after Delete, want 2", r.Token)
	}
}

func TestBackgroundSweeper(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.open(t, pgstore.Config{SweepInterval: 50 * time.Millisecond, SweepBatch: 2}, 4)
	for range 5 {
		mustClaim(t, s, claimReq(key(t, "k"), "", 20*time.Millisecond, 20*time.Millisecond), once.Acquired)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := db.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+db.schema+".once_records").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d rows left after 5s of background sweeping", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMetaRefused(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	k := key(t, "k")
	r := mustClaim(t, s, claimReq(k, "", time.Minute, time.Minute), once.Acquired)
	for _, meta := range []map[string]string{{"a": "x\x00y"}, {"\xff": "v"}} {
		if err := s.Complete(t.Context(), k, r.Token, once.Result{Meta: meta}); !errors.Is(err, once.ErrInvalidArgument) {
			t.Errorf("Complete with meta %q = %v, want ErrInvalidArgument", meta, err)
		}
	}
	res := once.Result{Data: []byte{0, 1, 2, 0xff}, Meta: map[string]string{"": "", "ünï": "\"quoted\"\n"}}
	if err := s.Complete(t.Context(), k, r.Token, res); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Get(t.Context(), k)
	if err != nil || !rec.Result.Equal(res) {
		t.Fatalf("Get = %+v, %v; want result %+v", rec.Result, err, res)
	}
}

func TestAdvanceFullRange(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	ctx := t.Context()
	scope := "s\x00\xff" // scopes are opaque bytes
	for _, tc := range []struct {
		v       uint64
		applied bool
		cur     uint64
	}{
		{0, false, 0},
		{math.MaxInt64 + 1, true, math.MaxInt64 + 1},
		{math.MaxInt64, false, math.MaxInt64 + 1},
		{math.MaxUint64, true, math.MaxUint64},
		{math.MaxUint64, false, math.MaxUint64},
	} {
		applied, cur, err := s.Advance(ctx, scope, "e", tc.v)
		if err != nil || applied != tc.applied || cur != tc.cur {
			t.Fatalf("Advance(%d) = %v, %d, %v; want %v, %d", tc.v, applied, cur, err, tc.applied, tc.cur)
		}
	}
}

// TestPurgeNeverEarlier: a short claim over a tombstone, or a short Extend,
// lengthens Lease rather than moving the purge time earlier.
func TestPurgeNeverEarlier(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	ctx := t.Context()
	k := key(t, "k")
	mustClaim(t, s, claimReq(k, "", time.Hour, time.Hour), once.Acquired)
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	r := mustClaim(t, s, claimReq(k, "", time.Second, time.Second), once.Acquired)
	rec := r.Record
	if got := rec.LeaseExpiresAt.Sub(rec.UpdatedAt); got != time.Second {
		t.Errorf("LeaseExpiresAt - UpdatedAt = %v, want the 1s just granted", got)
	}
	if rec.PurgeAt().Before(rec.UpdatedAt.Add(time.Hour)) {
		t.Errorf("purge time %v moved before the tombstone's (at least an hour after %v)", rec.PurgeAt(), rec.UpdatedAt)
	}
	before := rec.PurgeAt()
	if err := s.Extend(ctx, k, r.Token, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if rec.PurgeAt().Before(before) || rec.LeaseExpiresAt.Sub(rec.UpdatedAt) != 100*time.Millisecond {
		t.Errorf("after Extend(100ms): purge %v (was %v), lease end - update %v", rec.PurgeAt(), before, rec.LeaseExpiresAt.Sub(rec.UpdatedAt))
	}
}

// TestIntervalsFixedLength: with a session time zone that has daylight
// saving, leases and purge times spanning months keep their exact length
// (a day added to a timestamptz there may be 23 or 25 hours).
func TestIntervalsFixedLength(t *testing.T) {
	db := newTestDB(t, 4)
	pool, err := pgxpool.New(t.Context(), db.url+sep(db.url)+"timezone=America/New_York&pool_max_conns=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := pgstore.New(pool, db.cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	const months = 200 * 24 * time.Hour
	k := key(t, "k")
	r := mustClaim(t, s, claimReq(k, "", months, months), once.Acquired)
	if got := r.Record.ExpiresAt.Sub(r.Record.CreatedAt); got != months {
		t.Fatalf("retention %v, want %v", got, months)
	}
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	var exact bool
	err = pool.QueryRow(ctx, "SELECT extract(epoch FROM purge_at) - extract(epoch FROM expires_at) = extract(epoch FROM lease) FROM "+
		db.schema+".once_records WHERE key = $1", k.ID).Scan(&exact)
	if err != nil || !exact {
		t.Fatalf("after Delete, purge_at - expires_at = lease: %v, %v; want true", exact, err)
	}
	r2 := mustClaim(t, s, claimReq(k, "", time.Second, time.Second), once.Acquired)
	if d := r2.Record.PurgeAt().Sub(r2.Record.UpdatedAt); d < 2*months-time.Minute {
		t.Fatalf("claim over the tombstone: purge %v after the claim, want about %v", d, 2*months)
	}
}
