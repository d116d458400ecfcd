package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oncehq/once/internal/testenv"
	"github.com/oncehq/once/race/racetest"
)

// pgUsers is seed 000's endpoint over a real users table: SELECT, then
// INSERT. With fixed, the table has a unique constraint and the insert is
// INSERT … ON CONFLICT DO NOTHING. A racetest.Gate holds the window between
// the two statements open until a second request is in it, so the race is
// hit whenever two requests overlap.
type pgUsers struct {
	conns chan *pgx.Conn // one per request in flight
	gate  *racetest.Gate
	fixed bool
}

func (u *pgUsers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct{ Email string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := <-u.conns
	defer func() { u.conns <- c }()
	ctx := r.Context()
	var id int
	err := c.QueryRow(ctx, "SELECT id FROM users WHERE email = $1 LIMIT 1", in.Email).Scan(&id)
	if err == nil {
		fmt.Fprintf(w, `{"id":%d}`, id)
		return
	}
	u.gate.Wait(in.Email)
	insert := "INSERT INTO users (email) VALUES ($1) RETURNING id"
	if u.fixed {
		insert = "INSERT INTO users (email) VALUES ($1) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id"
	}
	if err := c.QueryRow(ctx, insert, in.Email).Scan(&id); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"id":%d}`, id)
}

// pgSchema creates a schema of its own with a users table and returns its
// name; the schema is dropped when the test ends.
func pgSchema(t *testing.T, dsn string) (string, *pgx.Conn) {
	ctx := context.Background()
	setup, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	schema := "once_race_" + strings.ToLower(rand.Text()[:10])
	for _, sql := range []string{"CREATE SCHEMA " + schema, "CREATE TABLE " + schema + ".users (id serial PRIMARY KEY, email text NOT NULL)"} {
		if _, err := setup.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		setup.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
		setup.Close(ctx)
	})
	return schema, setup
}

func pgConns(t *testing.T, dsn, schema string, n int) chan *pgx.Conn {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = schema
	conns := make(chan *pgx.Conn, n)
	for range n {
		c, err := pgx.ConnectConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		conns <- c
	}
	return conns
}

// TestRacePsql is docs/race.md's walk-through: seed 000 against PostgreSQL,
// with psql counting the rows after each round. The check-then-insert
// endpoint breaks; the same endpoint behind the gateway, and the endpoint
// fixed with a unique constraint, hold.
func TestRacePsql(t *testing.T) {
	dsn := testenv.PostgresURL(t)
	if _, err := exec.LookPath("psql"); err != nil {
		testenv.Skip(t, "psql is not installed")
	}
	const n = 10
	schema, setup := pgSchema(t, dsn)
	users := &pgUsers{conns: pgConns(t, dsn, schema, n), gate: racetest.NewGate(time.Second)}
	racy := httptest.NewServer(users)
	defer racy.Close()
	check := fmt.Sprintf(`psql '%s' -tAc "SELECT count(*) FROM %s.users WHERE email = '{{uuid}}@example.com'"`, dsn, schema)
	args := []string{"-n", fmt.Sprint(n), "--rounds", "3", "-d", `{"email":"{{uuid}}@example.com"}`, "--check", check, "--expect", "1"}

	out, errs, code := runRace(t, "", append(args, racy.URL+"/users")...)
	if code != 1 || !regexp.MustCompile(`check "([2-9]|10)"  broken: check gave "([2-9]|10)", want "1"`).MatchString(out) {
		t.Fatalf("check-then-insert: exit %d, want 1 and rows counted by psql\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	t.Logf("check-then-insert:\n%s", out)
	out, errs, code = runRace(t, "", append(args, behindGateway(t, racy).URL+"/users")...)
	if code != 0 || strings.Count(out, `check "1"  held`) != 3 {
		t.Errorf("behind the gateway: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	t.Logf("behind the gateway:\n%s", out)
	if _, err := setup.Exec(context.Background(), "TRUNCATE "+schema+".users; ALTER TABLE "+schema+".users ADD UNIQUE (email)"); err != nil {
		t.Fatal(err)
	}
	users.fixed = true
	out, errs, code = runRace(t, "", append(args, racy.URL+"/users")...)
	if code != 0 || strings.Count(out, `check "1"  held`) != 3 {
		t.Errorf("unique constraint: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	t.Logf("unique constraint:\n%s", out)
}
