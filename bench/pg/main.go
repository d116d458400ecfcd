// Command pg compares pgstore with the database's own speed: pgbench running
// INSERT … ON CONFLICT DO NOTHING of fresh keys (insert_on_conflict.sql), then
// the library's Claim+Complete pairs on fresh keys, with the same number of
// clients and the same duration, alternating for several rounds in one run
// so that both see the same machine. It prints each round and the ratio of
// pairs/s to pgbench's transactions/s.
//
//	go run ./bench/pg -url postgres://postgres@127.0.0.1:5432/test?sslmode=disable -c 64 -j 2 -T 10s -rounds 2
//
// A pair is two commits (the claim, then the completion); a pgbench
// transaction is one. Two more columns help read the ratio: -pgx runs the
// same INSERT from Go through pgx (the driver's and runtime's share), -dotx
// runs pgstore.DoTx with that INSERT as its effect. -pool sets the library's
// pool size (pgstore's default is 64).
//
// Every column also prints CPU time per operation: the client's (this
// process, or pgbench's), and, when the server runs on this machine and
// /proc shows its processes, the server's: that of the run's own backends
// (by application_name), a figure other work on the machine moves less than
// throughput, and in parentheses that of every server process.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

//go:embed insert_on_conflict.sql
var script string

func main() {
	url := flag.String("url", os.Getenv("ONCE_TEST_POSTGRES_URL"), "PostgreSQL URL (default $ONCE_TEST_POSTGRES_URL)")
	clients := flag.Int("c", 64, "clients: pgbench -c and library goroutines")
	threads := flag.Int("j", 2, "pgbench -j")
	dur := flag.Duration("T", 10*time.Second, "duration of each run (pgbench -T, whole seconds)")
	rounds := flag.Int("rounds", 2, "alternating rounds of pgbench and library")
	withPgx := flag.Bool("pgx", false, "also run pgbench's INSERT from Go through pgx, to separate the driver's cost from pgstore's")
	withTx := flag.Bool("dotx", false, "also run pgstore.DoTx with pgbench's INSERT as the effect")
	poolSize := flag.Int("pool", 0, "library pool size (pool_max_conns); 0: pgstore's default")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "pg: -url is required (or set ONCE_TEST_POSTGRES_URL)")
		os.Exit(2)
	}
	libURL := *url
	if *poolSize > 0 {
		libURL = withParam(libURL, "pool_max_conns", strconv.Itoa(*poolSize))
	}
	if err := run(context.Background(), *url, libURL, *clients, *threads, *dur, *rounds, *withPgx, *withTx); err != nil {
		fmt.Fprintln(os.Stderr, "pg:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, libURL string, clients, threads int, dur time.Duration, rounds int, withPgx, withTx bool) error {
	schema := fmt.Sprintf("once_bench_%d", time.Now().UnixNano())
	s, err := pgstore.Open(ctx, libURL, pgstore.Config{Prefix: schema + ".once_"})
	if err != nil {
		return err
	}
	defer s.Close()
	pool := s.Pool()
	maxConns := pool.Config().MaxConns
	defer pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS once_bench_pgbench; CREATE TABLE once_bench_pgbench (id bigint PRIMARY KEY)"); err != nil {
		return err
	}
	defer pool.Exec(context.Background(), "DROP TABLE IF EXISTS once_bench_pgbench")
	file := filepath.Join(os.TempDir(), "once_insert_on_conflict.sql")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		return err
	}
	srv := findServer(ctx, pool)
	fmt.Printf("clients %d, %v per run, pool %d connections\n", clients, dur, maxConns)
	fmt.Printf("pgbench -n -c %d -j %d -T %d -f %s URL\n", clients, threads, int(dur.Seconds()), file)
	if srv.postmaster == 0 {
		fmt.Println("server CPU: not shown (the server's processes are not readable in /proc)")
	} else {
		fmt.Println("server CPU: of the run's own backends, and in () of every server process (other clients of the server count there)")
	}
	var sumBench, sumLib float64
	for r := range rounds {
		m := srv.start(pool, "once_bench_pgbench")
		tps, err := pgbench(ctx, url, file, clients, threads, dur)
		if err != nil {
			return err
		}
		m.server("pgbench", "tx", tps*dur.Seconds())
		m = srv.start(pool, "once_bench_pgstore")
		pairs, err := library(ctx, withParam(libURL, "application_name", "once_bench_pgstore"), schema, clients, dur)
		if err != nil {
			return err
		}
		m.report("pgstore", "pair", pairs)
		sumBench += tps
		sumLib += pairs.rate()
		fmt.Printf("round %d: pgbench %.0f tx/s, pgstore %.0f Claim+Complete pairs/s, ratio %.2f\n", r+1, tps, pairs.rate(), pairs.rate()/tps)
		if withTx {
			m = srv.start(pool, "once_bench_dotx")
			txs, err := doTx(ctx, withParam(libURL, "application_name", "once_bench_dotx"), schema, clients, dur)
			if err != nil {
				return err
			}
			m.report("DoTx", "tx", txs)
			fmt.Printf("  DoTx (claim, the INSERT, complete: one transaction): %.0f/s (%.2f of pgbench)\n", txs.rate(), txs.rate()/tps)
		}
		if withPgx {
			m = srv.start(pool, "once_bench_pgx")
			ins, err := pgxInsert(ctx, withParam(libURL, "application_name", "once_bench_pgx"), clients, dur)
			if err != nil {
				return err
			}
			m.report("pgx", "tx", ins)
			fmt.Printf("  the same INSERT from Go through pgx: %.0f tx/s (%.2f of pgbench)\n", ins.rate(), ins.rate()/tps)
		}
	}
	fmt.Printf("overall: pgbench %.0f tx/s, pgstore %.0f pairs/s, ratio %.2f (goal ≥ 0.45)\n",
		sumBench/float64(rounds), sumLib/float64(rounds), sumLib/sumBench)
	return nil
}

// withParam adds a query parameter to a URL.
func withParam(url, k, v string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + k + "=" + v
}

// meter measures the CPU time of one phase.
type meter struct {
	srv      server
	client   time.Duration
	total    time.Duration // the server's, at the start
	visible  bool
	backends *sampler
}

func (s server) start(pool *pgxpool.Pool, app string) meter {
	m := meter{srv: s, client: cpuTime()}
	if m.total, m.visible = s.cpu(); m.visible {
		m.backends = s.sample(pool, app)
	}
	return m
}

// server prints the server's CPU time per operation since start.
func (m meter) server(what, op string, ops float64) {
	if !m.visible {
		return
	}
	own := m.backends.stop()
	now, _ := m.srv.cpu()
	fmt.Printf("  %s server CPU %v per %s (%v)\n", what, perOp(own, ops), op, perOp(now-m.total, ops))
}

// report prints this process's and the server's CPU time per operation
// since start.
func (m meter) report(what, op string, c count) {
	fmt.Printf("  %s client CPU %v per %s\n", what, perOp(cpuTime()-m.client, float64(c.n)), op)
	m.server(what, op, float64(c.n))
}

func perOp(d time.Duration, ops float64) time.Duration {
	return time.Duration(float64(d) / max(1, ops)).Round(100 * time.Nanosecond)
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbench runs the script and returns its transactions per second.
func pgbench(ctx context.Context, url, file string, clients, threads int, dur time.Duration) (float64, error) {
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(int(dur.Seconds())), "-f", file, url)
	cmd.Env = append(os.Environ(), "PGAPPNAME=once_bench_pgbench")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench: no tps line in\n%s", out)
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	fmt.Printf("  pgbench client CPU %v per tx\n", perOp(cpu, tps*dur.Seconds()))
	return tps, err
}

// count is how many operations a load ran, and in how long.
type count struct {
	n       int64
	elapsed time.Duration
}

func (c count) rate() float64 { return float64(c.n) / c.elapsed.Seconds() }

// load runs op from clients goroutines for dur, each with its own sequence
// of fresh numbers, and counts the operations. It stops at the first error.
func load(ctx context.Context, clients int, dur time.Duration, op func(ctx context.Context, seq int64) error) (count, error) {
	var (
		n, seq   atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(dur)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := op(ctx, seq.Add(1)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return count{}, err
	}
	return count{n: n.Load(), elapsed: time.Since(start)}, nil
}

// library runs Claim+Complete pairs on fresh keys from clients goroutines for
// dur.
func library(ctx context.Context, url, schema string, clients int, dur time.Duration) (count, error) {
	// A store of its own, closed before pgbench runs again, so that its idle
	// connections do not count against max_connections meanwhile.
	s, err := pgstore.Open(ctx, url, pgstore.Config{Prefix: schema + ".once_", SkipMigrate: true})
	if err != nil {
		return count{}, err
	}
	defer s.Close()
	scope := strconv.FormatInt(time.Now().UnixNano(), 36)
	return load(ctx, clients, dur, func(ctx context.Context, seq int64) error {
		k := once.Key{Scope: scope, ID: "k" + strconv.FormatInt(seq, 10)}
		res, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: time.Minute, Retention: time.Hour})
		if err != nil {
			return err
		}
		return s.Complete(ctx, k, res.Token, once.Result{Data: []byte("ok")})
	})
}

// pgxInsert runs the pgbench script's INSERT from clients goroutines through
// a pgx pool for dur.
func pgxInsert(ctx context.Context, url string, clients int, dur time.Duration) (count, error) {
	pc, err := pgstore.ParseURL(url)
	if err != nil {
		return count{}, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return count{}, err
	}
	defer pool.Close()
	return load(ctx, clients, dur, func(ctx context.Context, _ int64) error {
		_, err := pool.Exec(ctx, "INSERT INTO once_bench_pgbench (id) VALUES ($1) ON CONFLICT DO NOTHING", rand.Int64N(1e15)+1)
		return err
	})
}

// doTx runs pgstore.DoTx on fresh keys, with pgbench's INSERT as the effect,
// from clients goroutines for dur.
func doTx(ctx context.Context, url, schema string, clients int, dur time.Duration) (count, error) {
	s, err := pgstore.Open(ctx, url, pgstore.Config{Prefix: schema + ".once_", SkipMigrate: true})
	if err != nil {
		return count{}, err
	}
	defer s.Close()
	scope := "tx" + strconv.FormatInt(time.Now().UnixNano(), 36)
	insert := func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
		_, err := tx.Exec(ctx, "INSERT INTO once_bench_pgbench (id) VALUES ($1) ON CONFLICT DO NOTHING", rand.Int64N(1e15)+1)
		return once.Result{Data: []byte("ok")}, err
	}
	return load(ctx, clients, dur, func(ctx context.Context, seq int64) error {
		k := once.Key{Scope: scope, ID: "k" + strconv.FormatInt(seq, 10)}
		_, err := s.DoTx(ctx, k, nil, insert)
		return err
	})
}
