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
	"syscall"
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
		sep := "?"
		if strings.Contains(libURL, "?") {
			sep = "&"
		}
		libURL += sep + "pool_max_conns=" + strconv.Itoa(*poolSize)
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
	fmt.Printf("clients %d, %v per run, pool %d connections\n", clients, dur, maxConns)
	fmt.Printf("pgbench -n -c %d -j %d -T %d -f %s URL\n", clients, threads, int(dur.Seconds()), file)
	var sumBench, sumLib float64
	for r := range rounds {
		tps, err := pgbench(ctx, url, file, clients, threads, dur)
		if err != nil {
			return err
		}
		pairs, err := library(ctx, libURL, schema, clients, dur)
		if err != nil {
			return err
		}
		sumBench += tps
		sumLib += pairs
		fmt.Printf("round %d: pgbench %.0f tx/s, pgstore %.0f Claim+Complete pairs/s, ratio %.2f\n", r+1, tps, pairs, pairs/tps)
		if withTx {
			txs, err := doTx(ctx, libURL, schema, clients, dur)
			if err != nil {
				return err
			}
			fmt.Printf("  DoTx (claim, the INSERT, complete: one transaction): %.0f/s (%.2f of pgbench)\n", txs, txs/tps)
		}
		if withPgx {
			ins, err := pgxInsert(ctx, libURL, clients, dur)
			if err != nil {
				return err
			}
			fmt.Printf("  the same INSERT from Go through pgx: %.0f tx/s (%.2f of pgbench)\n", ins, ins/tps)
		}
	}
	fmt.Printf("overall: pgbench %.0f tx/s, pgstore %.0f pairs/s, ratio %.2f (goal ≥ 0.45)\n",
		sumBench/float64(rounds), sumLib/float64(rounds), sumLib/sumBench)
	return nil
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbench runs the script and returns its transactions per second.
func pgbench(ctx context.Context, url, file string, clients, threads int, dur time.Duration) (float64, error) {
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(int(dur.Seconds())), "-f", file, url)
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
	fmt.Printf("  pgbench client CPU %v per tx\n", time.Duration(float64(cpu)/(tps*dur.Seconds())))
	return tps, err
}

// library runs Claim+Complete pairs on fresh keys from clients goroutines for
// dur and returns the pairs per second.
func library(ctx context.Context, url, schema string, clients int, dur time.Duration) (float64, error) {
	// A store of its own, closed before pgbench runs again, so that its idle
	// connections do not count against max_connections meanwhile.
	s, err := pgstore.Open(ctx, url, pgstore.Config{Prefix: schema + ".once_", SkipMigrate: true})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	var (
		n, seq   atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	scope := strconv.FormatInt(time.Now().UnixNano(), 36)
	deadline := time.Now().Add(dur)
	start := time.Now()
	cpu0 := cpuTime()
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				k := once.Key{Scope: scope, ID: "k" + strconv.FormatInt(seq.Add(1), 10)}
				res, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: time.Minute, Retention: time.Hour})
				if err == nil {
					err = s.Complete(ctx, k, res.Token, once.Result{Data: []byte("ok")})
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	fmt.Printf("  pgstore client CPU %v per pair\n", (cpuTime()-cpu0)/time.Duration(max(1, n.Load())))
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// cpuTime returns the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pgxInsert runs the pgbench script's INSERT from clients goroutines through
// a pgx pool for dur and returns the transactions per second.
func pgxInsert(ctx context.Context, url string, clients int, dur time.Duration) (float64, error) {
	pc, err := pgstore.ParseURL(url)
	if err != nil {
		return 0, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	var (
		n        atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	deadline := time.Now().Add(dur)
	start := time.Now()
	cpu0 := cpuTime()
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				_, err := pool.Exec(ctx, "INSERT INTO once_bench_pgbench (id) VALUES ($1) ON CONFLICT DO NOTHING", rand.Int64N(1e15)+1)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	fmt.Printf("  pgx client CPU %v per tx\n", (cpuTime()-cpu0)/time.Duration(max(1, n.Load())))
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// doTx runs pgstore.DoTx on fresh keys, with pgbench's INSERT as the effect,
// from clients goroutines for dur and returns the executions per second.
func doTx(ctx context.Context, url, schema string, clients int, dur time.Duration) (float64, error) {
	s, err := pgstore.Open(ctx, url, pgstore.Config{Prefix: schema + ".once_", SkipMigrate: true})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	var (
		n, seq   atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	scope := "tx" + strconv.FormatInt(time.Now().UnixNano(), 36)
	insert := func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
		_, err := tx.Exec(ctx, "INSERT INTO once_bench_pgbench (id) VALUES ($1) ON CONFLICT DO NOTHING", rand.Int64N(1e15)+1)
		return once.Result{Data: []byte("ok")}, err
	}
	deadline := time.Now().Add(dur)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				k := once.Key{Scope: scope, ID: "k" + strconv.FormatInt(seq.Add(1), 10)}
				if _, err := s.DoTx(ctx, k, nil, insert); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}
