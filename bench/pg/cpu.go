package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// cpuTime returns the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// server reads the CPU time of a PostgreSQL server that runs on this
// machine, from /proc: the postmaster, its live children (backends, WAL
// writer, checkpointer) and the children that already exited, which the
// postmaster reaped (pgbench's backends). It counts every client of the
// server, so other work on the same server inflates it.
type server struct {
	postmaster int // 0 if the server's processes cannot be read
}

// findServer finds the postmaster as the parent of one of pool's backends.
func findServer(ctx context.Context, pool *pgxpool.Pool) server {
	var backend int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return server{}
	}
	st, ok := readStat(backend)
	if !ok || st.comm != "postgres" {
		return server{}
	}
	if pm, ok := readStat(st.ppid); !ok || pm.comm != "postgres" {
		return server{}
	}
	return server{postmaster: st.ppid}
}

// cpu returns the server's CPU time so far, or false if it cannot be read.
func (s server) cpu() (time.Duration, bool) {
	if s.postmaster == 0 {
		return 0, false
	}
	pm, ok := readStat(s.postmaster)
	if !ok {
		return 0, false
	}
	ticks := pm.own + pm.children
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		if st, ok := readStat(pid); ok && st.ppid == s.postmaster {
			ticks += st.own
		}
	}
	// /proc counts in USER_HZ, which Linux fixes at 100.
	return time.Duration(ticks) * 10 * time.Millisecond, true
}

// sampler follows the CPU time of the backends whose application_name is
// app, every 50ms and at stop, keeping the last reading of each: a backend
// that exits (pgbench's, at its end) loses at most 50ms.
type sampler struct {
	srv  server
	pool *pgxpool.Pool
	app  string
	last map[int]int64
	quit chan struct{}
	done chan struct{}
}

func (s server) sample(pool *pgxpool.Pool, app string) *sampler {
	sm := &sampler{srv: s, pool: pool, app: app, last: map[int]int64{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sm.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			sm.read()
			select {
			case <-sm.quit:
				return
			case <-t.C:
			}
		}
	}()
	return sm
}

// read reads the backends' CPU time.
func (sm *sampler) read() {
	rows, err := sm.pool.Query(context.Background(), "SELECT pid FROM pg_stat_activity WHERE application_name = $1", sm.app)
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) != nil {
			return
		}
		if st, ok := readStat(pid); ok && st.ppid == sm.srv.postmaster {
			sm.last[pid] = st.own
		}
	}
}

// stop ends the sampling and returns the CPU time of the backends seen.
// It waits (up to a second) until those that ended are reaped, so that the
// server's total, which counts them then, includes them.
func (sm *sampler) stop() time.Duration {
	close(sm.quit)
	<-sm.done
	var ticks int64
	for _, t := range sm.last {
		ticks += t
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !sm.exiting() {
			break
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// exiting reports whether a backend seen has exited but is not reaped yet.
func (sm *sampler) exiting() bool {
	for pid := range sm.last {
		if st, ok := readStat(pid); ok && st.ppid == sm.srv.postmaster && st.state == "Z" {
			return true
		}
	}
	return false
}

// stat is what cpu needs of /proc/PID/stat.
type stat struct {
	comm     string
	state    string
	ppid     int
	own      int64 // utime + stime
	children int64 // cutime + cstime: reaped children
}

func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return stat{}, false
	}
	// After "pid (comm) ": state ppid … utime(14) stime cutime cstime.
	f := strings.Fields(s[end+1:])
	if len(f) < 15 {
		return stat{}, false
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i-3], 10, 64); return v }
	return stat{comm: s[open+1 : end], state: f[0], ppid: int(n(4)), own: n(14) + n(15), children: n(16) + n(17)}, true
}
