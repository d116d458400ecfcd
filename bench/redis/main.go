// Command redis compares redisstore with the plainest idempotency guard Redis
// has, SET key value NX PX on a fresh key, on the same server, two ways:
//
//   - sent by redis-benchmark (the primary baseline: issue 4 names
//     "redis-benchmark -t set style SET NX"), with the same number of
//     connections, one request in flight on each, random keys;
//   - sent by the same Go client library as the store (rueidis, which
//     pipelines the requests of all goroutines on one connection) from the
//     same number of goroutines.
//
// It alternates the three phases for several rounds in one run, so that all
// see the same machine, and prints each round, the ratios of library
// Claim+Complete pairs/s to SET NX ops/s, and their medians:
//
//	go run ./bench/redis -url redis://127.0.0.1:6379/0 -c 64 -T 2s -rounds 3
//
// A pair is two scripts, each one round trip (the claim, then the
// completion); a SET NX is one command, so 0.5 is the ceiling.
//
// Each phase also reports CPU time per call: the client's (this process, or
// redis-benchmark) and, when redis-server runs on this machine, the
// server's (from /proc/PID/stat). Unlike throughput, those figures move
// little with the load of other processes; each round ends with the load
// average of the last minute.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
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
	"syscall"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/redisstore"
)

var value = []byte("0123456789abcdef")

func main() {
	url := flag.String("url", os.Getenv("ONCE_TEST_REDIS_URL"), "Redis URL (default $ONCE_TEST_REDIS_URL)")
	clients := flag.Int("c", 64, "goroutines, and redis-benchmark -c")
	dur := flag.Duration("T", 3*time.Second, "duration of each Go phase")
	rounds := flag.Int("rounds", 5, "alternating rounds of the three phases")
	n := flag.Int("n", 0, "redis-benchmark -n (0: as many SET NX as the Go client made in the round)")
	rb := flag.String("redis-benchmark", "redis-benchmark", "redis-benchmark program (empty: skip that baseline)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "redis: -url is required (or set ONCE_TEST_REDIS_URL)")
		os.Exit(2)
	}
	b := &bench{clients: *clients, dur: *dur, n: *n, rb: *rb}
	if err := b.run(context.Background(), *url, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "redis:", err)
		os.Exit(1)
	}
}

// bench holds one run's settings and what its phases share.
type bench struct {
	clients int
	dur     time.Duration
	n       int
	rb      string
	rbArgs  []string             // redis-benchmark's arguments but -n
	server  func() time.Duration // nil when the server's CPU cannot be read
}

// phase is what one phase measured: calls per second and CPU per call.
type phase struct {
	rate           float64
	calls          int
	server, client time.Duration
}

func (b *bench) run(ctx context.Context, url string, rounds int) error {
	var r [6]byte
	rand.Read(r[:])
	prefix := "oncebench:" + hex.EncodeToString(r[:]) + ":"
	s, err := redisstore.Open(ctx, url, redisstore.Config{Prefix: prefix})
	if err != nil {
		return err
	}
	defer s.Close()
	b.server = serverCPU(ctx, s)
	if b.rb != "" {
		if b.rbArgs, err = redisBenchmarkArgs(url, b.clients, prefix); err != nil {
			return err
		}
	}
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
	fmt.Printf("%d goroutines (redis-benchmark: connections), %v per Go phase, keys expire after 1-2 minutes\n", b.clients, b.dur)
	if b.rbArgs != nil {
		fmt.Printf("redis-benchmark %s -n N\n", strings.Join(b.rbArgs, " "))
	}
	fmt.Printf("%-5s %12s %12s %9s %8s %8s   %-22s   %-22s\n", "", "SET NX/s", "SET NX/s", "", "ratio", "ratio", "server µs per call", "client µs per call")
	fmt.Printf("%-5s %12s %12s %9s %8s %8s   %6s %6s %8s   %6s %6s %8s   %s\n", "round", "bench", "Go", "pairs/s", "÷bench", "÷Go", "bench", "Go", "pair", "bench", "Go", "pair", "load")
	var vsRB, vsGo []float64
	for i := 1; i <= rounds; i++ {
		goSet, err := b.measure(ctx, setnx)
		if err != nil {
			return err
		}
		pairs, err := b.measure(ctx, pair)
		if err != nil {
			return err
		}
		var rbSet phase
		if b.rbArgs != nil {
			if rbSet, err = b.redisBenchmark(ctx, cmp.Or(b.n, goSet.calls)); err != nil {
				return err
			}
			vsRB = append(vsRB, pairs.rate/rbSet.rate)
		}
		vsGo = append(vsGo, pairs.rate/goSet.rate)
		fmt.Printf("%-5d %12.0f %12.0f %9.0f %8.3f %8.3f   %6.1f %6.1f %8.1f   %6.1f %6.1f %8.1f   %s\n", i,
			rbSet.rate, goSet.rate, pairs.rate, ratio(pairs.rate, rbSet.rate), pairs.rate/goSet.rate,
			us(rbSet.server), us(goSet.server), us(pairs.server), us(rbSet.client), us(goSet.client), us(pairs.client), loadAverage())
	}
	if vsRB != nil {
		fmt.Printf("median ratio of library pairs/s to redis-benchmark SET NX ops/s (primary): %.3f\n", median(vsRB))
	}
	fmt.Printf("median ratio of library pairs/s to Go-client SET NX ops/s:                  %.3f\n", median(vsGo))
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// measure runs op from b.clients goroutines for b.dur.
func (b *bench) measure(ctx context.Context, op func(context.Context) error) (phase, error) {
	server0, client0 := b.serverTime(), cpuTime()
	var done atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	stop := time.Now().Add(b.dur)
	start := time.Now()
	for range b.clients {
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
		return phase{}, err
	}
	n := int(done.Load())
	return b.phase(n, el, b.serverTime()-server0, cpuTime()-client0), nil
}

func (b *bench) phase(n int, el, server, client time.Duration) phase {
	p := phase{calls: n}
	if n > 0 {
		p.rate = float64(n) / el.Seconds()
		p.client = client / time.Duration(n)
		if b.server != nil {
			p.server = server / time.Duration(n)
		}
	}
	return p
}

func (b *bench) serverTime() time.Duration {
	if b.server == nil {
		return 0
	}
	return b.server()
}

// loadAverage returns the machine's load average over the last minute, or
// "?" where /proc/loadavg cannot be read.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// cpuTime returns the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// redisBenchmarkArgs returns redis-benchmark's arguments, but -n, for SET
// NX PX 60000 on random keys under prefix (-r makes it replace __rand_int__
// in each request with a random 12-digit number below 10^8, so that almost
// every key is fresh), against the URL's server.
func redisBenchmarkArgs(url string, clients int, prefix string) ([]string, error) {
	o, err := redisstore.ParseURL(url)
	if err != nil {
		return nil, err
	}
	if o.Cluster || o.Client.TLSConfig != nil || o.Client.Password != "" {
		return nil, errors.New("the redis-benchmark baseline needs a plain redis:// URL without a password (or -redis-benchmark '')")
	}
	host, port, _ := net.SplitHostPort(o.Client.InitAddress[0])
	return []string{"-h", host, "-p", port, "--dbnum", strconv.Itoa(o.Client.SelectDB),
		"-c", strconv.Itoa(clients), "-P", "1", "-r", "100000000", "-q",
		"SET", prefix + "rb:__rand_int__", string(value), "NX", "PX", "60000"}, nil
}

// redisBenchmark runs n requests of redis-benchmark.
func (b *bench) redisBenchmark(ctx context.Context, n int) (phase, error) {
	args := append([]string{"-n", strconv.Itoa(n)}, b.rbArgs...)
	cmd := exec.CommandContext(ctx, b.rb, args...)
	server0 := b.serverTime()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	el := time.Since(start)
	if err != nil {
		return phase{}, fmt.Errorf("redis-benchmark: %w\n%s", err, out)
	}
	// -q redraws its progress line with \r and ends with
	// "COMMAND: R requests per second, p50=…".
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(out), "\r", "\n")), "\n")
	last := lines[len(lines)-1]
	f := strings.Fields(last[strings.LastIndex(last, ": ")+1:])
	if len(f) < 2 || f[1] != "requests" {
		return phase{}, fmt.Errorf("redis-benchmark: cannot read %q", last)
	}
	rate, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return phase{}, fmt.Errorf("redis-benchmark: cannot read %q", last)
	}
	client := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	p := b.phase(n, el, b.serverTime()-server0, client)
	p.rate = rate
	return p, nil
}
