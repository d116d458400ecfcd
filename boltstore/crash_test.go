package boltstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
)

var child struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if child.dir != "" {
		os.RemoveAll(child.dir)
	}
	os.Exit(code)
}

// childBinary builds internal/crashchild once per test binary.
func childBinary(t *testing.T) string {
	t.Helper()
	child.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			child.err = err
			return
		}
		if child.dir, child.err = os.MkdirTemp("", "crashchild"); child.err != nil {
			return
		}
		child.bin = filepath.Join(child.dir, "crashchild")
		out, err := exec.Command(goTool, "build", "-o", child.bin, "./internal/crashchild").CombinedOutput()
		if err != nil {
			child.err = fmt.Errorf("go build ./internal/crashchild: %v\n%s", err, out)
		}
	})
	if child.err != nil {
		t.Fatal(child.err)
	}
	return child.bin
}

// TestSecondProcessLocked opens a file here and then in a child process: the
// child fails at once with an error naming the file.
func TestSecondProcessLocked(t *testing.T) {
	bin := childBinary(t)
	path := filepath.Join(t.TempDir(), "locked.db")
	s := MustOpenPath(t, path, Config{})
	start := time.Now()
	cmd := exec.Command(bin, "-mode", "open", "-path", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("child open while locked: %v, stderr %q; want exit status 1", err, stderr.String())
	}
	msg := stderr.String()
	if !strings.Contains(msg, path) || !strings.Contains(msg, "another process holds it") {
		t.Fatalf("child error %q does not name %s and the lock holder", msg, path)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the locked open took %v", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-mode", "open", "-path", path).CombinedOutput(); err != nil {
		t.Fatalf("child open after Close: %v\n%s", err, out)
	}
}

// crashLog is what the children acknowledged over all runs.
type crashLog struct {
	done    map[string]uint64 // key → token, Complete acknowledged
	claimed map[string]uint64 // key → token, Claim acknowledged
	hot     map[string]uint64 // hot key → highest token acknowledged
	seen    map[string]uint64 // key → token stored at the last check
}

// TestCrash kills a child process that claims and completes keys at random
// moments, 20 times, reopening the same file each time: every acknowledged
// write is there, every record decodes, and no token goes backwards.
func TestCrash(t *testing.T) {
	bin := childBinary(t)
	path := filepath.Join(t.TempDir(), "crash.db")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	log := &crashLog{done: map[string]uint64{}, claimed: map[string]uint64{}, hot: map[string]uint64{}, seen: map[string]uint64{}}
	lines := 0
	for run := range 20 {
		out := runAndKill(t, bin, path, run, rng)
		lines += len(out)
		log.add(t, out)
		log.check(t, path)
		if t.Failed() {
			t.Fatalf("run %d (seed %d) failed", run, seed)
		}
	}
	t.Logf("%d acknowledged writes over 20 kills, %d keys completed", lines, len(log.done))
	if len(log.done) == 0 {
		t.Fatal("no Complete was acknowledged in 20 runs")
	}
}

// runAndKill starts a child, kills it with SIGKILL at a random moment (most
// often after it opened the store, sometimes while it opens it) and returns
// the whole lines it printed.
func runAndKill(t *testing.T, bin, path string, run int, rng *rand.Rand) []string {
	t.Helper()
	// Runs differ in how often they checkpoint: never during the run, often,
	// or after every few writes, so that kills land in every phase.
	cp := [][]string{
		{"-checkpoint-interval", "1h", "-checkpoint-records", "1000000"},
		{"-checkpoint-interval", "20ms"},
		{"-checkpoint-records", "8"},
	}[run%3]
	cmd := exec.Command(bin, append([]string{"-mode", "loop", "-path", path, "-run", strconv.Itoa(run)}, cp...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	linesc := make(chan []string, 1)
	go func() { linesc <- readLines(stdout, ready) }()
	if rng.IntN(5) == 0 {
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	} else {
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			t.Errorf("run %d: the child did not open the store in 10s", run)
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	out := <-linesc
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("run %d: the child ended before the kill: %v\n%s", run, err, stderr.String())
	}
	return out
}

// readLines returns the complete lines of r, closing ready at "ready". A
// line cut short by the kill has no newline and is dropped.
func readLines(r io.Reader, ready chan struct{}) []string {
	br := bufio.NewReader(r)
	var out []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return out
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "ready" {
			close(ready)
			continue
		}
		out = append(out, line)
	}
}

func (l *crashLog) add(t *testing.T, lines []string) {
	t.Helper()
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("child line %q", line)
		}
		tok, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatalf("child line %q: %v", line, err)
		}
		switch f[0] {
		case "claimed":
			l.claimed[f[1]] = tok
		case "done":
			l.done[f[1]] = tok
		case "hot":
			l.hot[f[1]] = max(l.hot[f[1]], tok)
		default:
			t.Fatalf("child line %q", line)
		}
	}
}

// check reopens the file and checks it against everything acknowledged.
func (l *crashLog) check(t *testing.T, path string) {
	t.Helper()
	s, err := Open(path, Config{SweepInterval: -1})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	stored := storedRecords(t, s)
	checkIndex(t, s)
	for key, tok := range l.done {
		r, ok := stored[key]
		if !ok || r.State != once.StateCompleted || r.Token != tok || string(r.Result.Data) != "result-of-"+key {
			t.Errorf("acknowledged Complete of %s (token %d) reads back as %s", key, tok, describeRecord(r, ok))
		}
	}
	for key, tok := range l.claimed {
		if r, ok := stored[key]; !ok || r.Token != tok {
			t.Errorf("acknowledged Claim of %s (token %d) reads back as %s", key, tok, describeRecord(r, ok))
		}
	}
	for key, tok := range l.hot {
		if r, ok := stored[key]; !ok || r.Token < tok {
			t.Errorf("hot key %s acknowledged token %d, reads back as %s", key, tok, describeRecord(r, ok))
		}
	}
	for key, r := range stored {
		l.checkRecord(t, key, r)
	}
}

// checkRecord checks one stored record, acknowledged or not: a claim in
// flight at the kill is in progress or completed with its own result, and a
// token never goes backwards.
func (l *crashLog) checkRecord(t *testing.T, key string, r *once.Record) {
	t.Helper()
	if r.Token < l.seen[key] {
		t.Errorf("token of %s went back from %d to %d", key, l.seen[key], r.Token)
	}
	l.seen[key] = r.Token
	if strings.HasPrefix(key, "hot-") {
		return
	}
	switch {
	case r.State == once.StateInProgress && r.Token == 1:
	case r.State == once.StateCompleted && r.Token == 1 && string(r.Result.Data) == "result-of-"+key:
	default:
		t.Errorf("record of %s in flight at a kill: %s", key, describeRecord(r, true))
	}
}

// storedRecords decodes every record in the file, failing on any that does
// not decode.
func storedRecords(t *testing.T, s *Store) map[string]*once.Record {
	t.Helper()
	out := map[string]*once.Record{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			if !bytes.Equal(k, appendKey(nil, r.Key.Scope, r.Key.ID)) {
				return fmt.Errorf("record %q holds key %+v", k, r.Key)
			}
			out[r.Key.ID] = r
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// The store's own read path agrees with the raw file.
	for id, r := range out {
		if got, err := s.Get(context.Background(), r.Key); err != nil || got.Token != r.Token {
			t.Errorf("Get(%s) = token %d, %v; stored token %d", id, got.Token, err, r.Token)
		}
	}
	return out
}

func describeRecord(r *once.Record, ok bool) string {
	if !ok {
		return "absent"
	}
	return fmt.Sprintf("%v token %d result %q", r.State, r.Token, r.Result.Data)
}
