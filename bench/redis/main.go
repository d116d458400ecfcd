// Command redis compares redisstore with the plainest idempotency guard Redis
// has, SET key value NX PX, on the same server with the same client library
// (rueidis) and the same number of goroutines. It alternates the two for
// several rounds in one run, so that both see the same machine, and prints
// each round and the ratio of library Claim+Complete pairs/s to SET NX
// ops/s. It then runs redis-benchmark's SET test for reference.
//
//	go run ./bench/redis -url redis://127.0.0.1:6379/0 -c 64 -T 3s -rounds 5
//
// A pair is two scripts, each one round trip (the claim, then the
// completion); a SET NX is one command.
//
// When redis-server runs on this machine, each phase also reports the CPU
// time the server spent per call (from /proc/PID/stat): unlike throughput,
// that figure does not move with the load of other processes.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/redisstore"
)

var value = []byte("0123456789abcdef")

func main() {
	url := flag.String("url", os.Getenv("ONCE_TEST_REDIS_URL"), "Redis URL (default $ONCE_TEST_REDIS_URL)")
	clients := flag.Int("c", 64, "goroutines, and redis-benchmark -c")
	dur := flag.Duration("T", 3*time.Second, "duration of each phase")
	rounds := flag.Int("rounds", 5, "alternating rounds of SET NX and library pairs")
	n := flag.Int("n", 200000, "redis-benchmark -n (0 skips redis-benchmark)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "redis: -url is required (or set ONCE_TEST_REDIS_URL)")
		os.Exit(2)
	}
	if err := run(context.Background(), *url, *clients, *dur, *rounds, *n); err != nil {
		fmt.Fprintln(os.Stderr, "redis:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, clients int, dur time.Duration, rounds, n int) error {
	var b [6]byte
	rand.Read(b[:])
	prefix := "oncebench:" + hex.EncodeToString(b[:]) + ":"
	s, err := redisstore.Open(ctx, url, redisstore.Config{Prefix: prefix})
	if err != nil {
		return err
	}
	defer s.Close()
	c := s.Client()
	var seq atomic.Int64
	setnx := func(ctx context.Context) error {
		key := prefix + "setnx:" + strconv.FormatInt(seq.Add(1), 36)
		return c.Do(ctx, c.B().Set().Key(key).Value(string(value)).Nx().PxMilliseconds(60000).Build()).Error()
	}
	pair := func(ctx context.Context) error {
		k := once.Key{Scope: "bench", ID: strconv.FormatInt(seq.Add(1), 36)}
		res, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: time.Minute, Retention: time.Minute})
		if err != nil {
			return err
		}
		return s.Complete(ctx, k, res.Token, once.Result{Data: value})
	}
	cpu := serverCPU(ctx, s)
	fmt.Printf("%d goroutines, %v per phase, keys expire after 1-2 minutes\n", clients, dur)
	fmt.Printf("%-6s %14s %16s %8s %18s %18s\n", "round", "SET NX ops/s", "pairs/s", "ratio", "server µs/SET NX", "server µs/pair")
	var ratios []float64
	for r := 1; r <= rounds; r++ {
		ops, setCPU, err := measure(ctx, clients, dur, setnx, cpu)
		if err != nil {
			return err
		}
		pairs, pairCPU, err := measure(ctx, clients, dur, pair, cpu)
		if err != nil {
			return err
		}
		ratios = append(ratios, pairs/ops)
		fmt.Printf("%-6d %14.0f %16.0f %8.3f %18.1f %18.1f\n", r, ops, pairs, pairs/ops, setCPU, pairCPU)
	}
	slices.Sort(ratios)
	fmt.Printf("median ratio of library pairs/s to SET NX ops/s: %.3f\n", ratios[len(ratios)/2])
	if n > 0 {
		return redisBenchmark(ctx, url, clients, n)
	}
	return nil
}

// measure runs op from clients goroutines for dur and returns calls/s and
// the server's CPU microseconds per call (0 when cpu is nil).
func measure(ctx context.Context, clients int, dur time.Duration, op func(context.Context) error, cpu func() time.Duration) (float64, float64, error) {
	var cpu0 time.Duration
	if cpu != nil {
		cpu0 = cpu()
	}
	var done atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	stop := time.Now().Add(dur)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if err := op(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	n := float64(done.Load())
	perCall := 0.0
	if cpu != nil && n > 0 {
		perCall = float64((cpu() - cpu0).Microseconds()) / n
	}
	return n / el.Seconds(), perCall, nil
}

// serverCPU returns a function reading the CPU time redis-server has used, or
// nil when the server is not a process of this machine.
func serverCPU(ctx context.Context, s *redisstore.Store) func() time.Duration {
	c := s.Client()
	info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return nil
	}
	var pid string
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			pid = v
		}
	}
	stat := "/proc/" + pid + "/stat"
	read := func() (time.Duration, bool) {
		b, err := os.ReadFile(stat)
		if err != nil || !strings.Contains(string(b), "(redis-server)") {
			return 0, false
		}
		// Fields after the command name: utime and stime are the 12th and
		// 13th, in clock ticks (100 per second on Linux).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			return 0, false
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(ut+st) * 10 * time.Millisecond, err1 == nil && err2 == nil
	}
	if _, ok := read(); pid == "" || !ok {
		return nil
	}
	return func() time.Duration { d, _ := read(); return d }
}

// redisBenchmark runs redis-benchmark -t set against the URL's host.
func redisBenchmark(ctx context.Context, url string, clients, n int) error {
	o, err := redisstore.ParseURL(url)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(o.Client.InitAddress[0])
	args := []string{"-h", host, "-p", port, "-t", "set", "-c", strconv.Itoa(clients), "-n", strconv.Itoa(n), "-P", "1", "-q"}
	out, err := exec.CommandContext(ctx, "redis-benchmark", args...).CombinedOutput()
	if err != nil {
		fmt.Printf("redis-benchmark %s: %v\n", strings.Join(args, " "), err)
		return nil
	}
	// -q redraws its progress line with \r: keep the final figure.
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(out), "\r", "\n")), "\n")
	fmt.Printf("redis-benchmark %s\n  %s\n", strings.Join(args, " "), strings.TrimSpace(lines[len(lines)-1]))
	return nil
}
