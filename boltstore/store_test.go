package boltstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// MustOpen opens a store in a fresh file of tb's temp dir and closes it at
// the end of the test.
func MustOpen(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	return MustOpenPath(tb, filepath.Join(tb.TempDir(), "once.db"), cfg)
}

// MustOpenPath opens the store at path and closes it at the end of the test.
func MustOpenPath(tb testing.TB, path string, cfg Config) *Store {
	tb.Helper()
	s, err := Open(path, cfg)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func MustClaim(tb testing.TB, s once.Store, req once.ClaimRequest, want once.Outcome) once.ClaimResult {
	tb.Helper()
	res, err := s.Claim(context.Background(), req)
	if err != nil {
		tb.Fatalf("Claim(%v): %v", req.Key, err)
	}
	if res.Outcome != want {
		tb.Fatalf("Claim(%v) = %v, want %v", req.Key, res.Outcome, want)
	}
	return res
}

func claimReq(id string) once.ClaimRequest {
	return once.ClaimRequest{Key: once.Key{Scope: "s", ID: id}, Lease: time.Minute, Retention: time.Hour}
}

// mustCheckpoint copies the overlay into bbolt, for tests that read the
// file directly.
func mustCheckpoint(tb testing.TB, s *Store) {
	tb.Helper()
	if err := s.checkpointNow(context.Background()); err != nil {
		tb.Fatalf("checkpoint: %v", err)
	}
}

// lastTxID returns the id of the last committed transaction: it moves with
// every write and with nothing else.
func lastTxID(tb testing.TB, s *Store) int {
	tb.Helper()
	var id int
	if err := s.db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		tb.Fatal(err)
	}
	return id
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now})
	req := claimReq("a")
	req.Fingerprint = []byte("fp")

	res := MustClaim(t, s, req, once.Acquired)
	if res.Token != 1 || res.Record.Attempts != 1 || res.Record.State != once.StateInProgress {
		t.Fatalf("first claim: %+v", res)
	}
	ip := MustClaim(t, s, req, once.InProgress)
	if ip.RetryAfter != time.Minute {
		t.Errorf("RetryAfter = %v, want 1m", ip.RetryAfter)
	}
	other := req
	other.Fingerprint = []byte("other")
	MustClaim(t, s, other, once.Mismatch)

	if err := s.Extend(ctx, req.Key, 1, 2*time.Minute); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if err := s.Complete(ctx, req.Key, 2, once.Result{Data: []byte("x")}); !errors.Is(err, once.ErrFenced) {
		t.Fatalf("Complete with a wrong token: %v, want ErrFenced", err)
	}
	result := once.Result{Data: []byte("done"), Meta: map[string]string{"status": "200"}}
	if err := s.Complete(ctx, req.Key, 1, result); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if err := s.Complete(ctx, req.Key, 1, result); err != nil {
		t.Fatalf("repeated Complete: %v", err)
	}
	if err := s.Complete(ctx, req.Key, 1, once.Result{Data: []byte("else")}); !errors.Is(err, once.ErrFenced) {
		t.Fatalf("Complete with another result: %v, want ErrFenced", err)
	}
	done := MustClaim(t, s, req, once.Completed)
	if !done.Record.Result.Equal(result) || done.Record.Token != 1 {
		t.Fatalf("replay: %+v", done.Record)
	}
	got, err := s.Get(ctx, req.Key)
	if err != nil || !got.Result.Equal(result) || got.State != once.StateCompleted {
		t.Fatalf("Get = %+v, %v", got, err)
	}

	if err := s.Delete(ctx, req.Key); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, req.Key); !errors.Is(err, once.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	// The tombstone keeps the counter.
	again := MustClaim(t, s, req, once.Acquired)
	if again.Token != 2 || again.Record.Attempts != 1 {
		t.Fatalf("claim after Delete: token %d attempts %d, want 2 and 1", again.Token, again.Record.Attempts)
	}
	if err := s.Release(ctx, req.Key, 2); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := s.Release(ctx, req.Key, 2); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	third := MustClaim(t, s, req, once.Acquired)
	if third.Token != 3 || third.Record.Attempts != 2 {
		t.Fatalf("claim after Release: token %d attempts %d, want 3 and 2", third.Token, third.Record.Attempts)
	}
}

func TestAbandoned(t *testing.T) {
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now})
	req := claimReq("a")
	MustClaim(t, s, req, once.Acquired)
	clock.Add(time.Minute)
	MustClaim(t, s, req, once.Abandoned)
	req.Policy = once.AbandonRetry
	res := MustClaim(t, s, req, once.Acquired)
	if res.Token != 2 || res.Record.Attempts != 2 {
		t.Fatalf("takeover: %+v", res)
	}
	if err := s.Complete(context.Background(), req.Key, 1, once.Result{}); !errors.Is(err, once.ErrFenced) {
		t.Fatalf("old holder's Complete: %v, want ErrFenced", err)
	}
}

func TestRetentionKeepsTokenCounter(t *testing.T) {
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now, SweepInterval: -1})
	req := claimReq("a")
	MustClaim(t, s, req, once.Acquired)
	clock.Add(time.Hour) // retention passed, purge (retention + lease) not yet
	if _, err := s.Get(context.Background(), req.Key); !errors.Is(err, once.ErrNotFound) {
		t.Fatalf("Get past retention: %v, want ErrNotFound", err)
	}
	if n, err := s.Sweep(context.Background(), 10); n != 0 || err != nil {
		t.Fatalf("Sweep before purge time = %d, %v; want 0", n, err)
	}
	res := MustClaim(t, s, req, once.Acquired)
	if res.Token != 2 || res.Record.Attempts != 1 {
		t.Fatalf("claim past retention: token %d attempts %d, want 2 and 1", res.Token, res.Record.Attempts)
	}
}

func TestAdvance(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	steps := []struct {
		v       uint64
		applied bool
		cur     uint64
	}{{0, false, 0}, {5, true, 5}, {5, false, 5}, {3, false, 5}, {6, true, 6}}
	for _, st := range steps {
		applied, cur, err := s.Advance(ctx, "s", "sub-1", st.v)
		if err != nil || applied != st.applied || cur != st.cur {
			t.Fatalf("Advance(%d) = %v, %d, %v; want %v, %d", st.v, applied, cur, err, st.applied, st.cur)
		}
	}
	if _, cur, _ := s.Advance(ctx, "t", "sub-1", 0); cur != 0 {
		t.Fatalf("another scope's version = %d, want 0", cur)
	}
	if _, _, err := s.Advance(ctx, "s", "", 1); !errors.Is(err, once.ErrInvalidKey) {
		t.Fatalf("Advance with empty entity: %v, want ErrInvalidKey", err)
	}
}

func TestScopesDoNotCollide(t *testing.T) {
	s := MustOpen(t, Config{})
	a := claimReq("bc")
	a.Key.Scope = "a"
	b := claimReq("c")
	b.Key.Scope = "ab"
	MustClaim(t, s, a, once.Acquired)
	MustClaim(t, s, b, once.Acquired)
}

func TestInvalidInput(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	bad := once.Key{ID: "tab\there"}
	if _, err := s.Claim(ctx, once.ClaimRequest{Key: bad, Lease: time.Second, Retention: time.Second}); !errors.Is(err, once.ErrInvalidKey) {
		t.Errorf("Claim: %v", err)
	}
	if _, err := s.Claim(ctx, once.ClaimRequest{Key: once.Key{ID: "k"}, Retention: time.Second}); !errors.Is(err, once.ErrInvalidArgument) {
		t.Errorf("Claim without lease: %v", err)
	}
	for name, err := range map[string]error{
		"Complete": s.Complete(ctx, bad, 1, once.Result{}),
		"Release":  s.Release(ctx, bad, 1),
		"Extend":   s.Extend(ctx, bad, 1, time.Second),
		"Delete":   s.Delete(ctx, bad),
	} {
		if !errors.Is(err, once.ErrInvalidKey) {
			t.Errorf("%s: %v, want ErrInvalidKey", name, err)
		}
	}
	if _, err := s.Get(ctx, bad); !errors.Is(err, once.ErrInvalidKey) {
		t.Errorf("Get: %v", err)
	}
	if err := s.Extend(ctx, once.Key{ID: "k"}, 1, 0); !errors.Is(err, once.ErrInvalidArgument) {
		t.Errorf("Extend with zero lease: %v", err)
	}
	if n := recordCount(t, s); n != 0 {
		t.Errorf("%d records stored by bad input", n)
	}
}

func recordCount(tb testing.TB, s *Store) (n int) {
	tb.Helper()
	mustCheckpoint(tb, s)
	err := s.db.View(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucketRecords).Stats().KeyN
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestReadPathDoesNotWrite checks that replays, claims in progress and Get
// commit no transaction.
func TestReadPathDoesNotWrite(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{CheckpointInterval: time.Hour})
	done, busy := claimReq("done"), claimReq("busy")
	res := MustClaim(t, s, done, once.Acquired)
	if err := s.Complete(ctx, done.Key, res.Token, once.Result{Data: []byte("r")}); err != nil {
		t.Fatal(err)
	}
	MustClaim(t, s, busy, once.Acquired)
	mismatch := busy
	mismatch.Fingerprint, busy.Fingerprint = []byte("x"), nil
	before, commits := lastTxID(t, s), s.commits.Load()
	for range 10 {
		MustClaim(t, s, done, once.Completed)
		MustClaim(t, s, busy, once.InProgress)
		if _, err := s.Get(ctx, done.Key); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Advance(ctx, "s", "e", 0); err != nil {
			t.Fatal(err)
		}
	}
	if after := lastTxID(t, s); after != before || s.commits.Load() != commits {
		t.Fatalf("read path wrote: tx id %d -> %d, commits %d -> %d", before, after, commits, s.commits.Load())
	}
}

func TestReopenKeepsRecords(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "once.db")
	s, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	res := MustClaim(t, s, claimReq("a"), once.Acquired)
	if err := s.Complete(ctx, claimReq("a").Key, res.Token, once.Result{Data: []byte("r")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Advance(ctx, "", "e", 9); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = MustOpenPath(t, path, Config{})
	got := MustClaim(t, s, claimReq("a"), once.Completed)
	if string(got.Record.Result.Data) != "r" {
		t.Fatalf("after reopen: %+v", got.Record)
	}
	if applied, cur, _ := s.Advance(ctx, "", "e", 9); applied || cur != 9 {
		t.Fatalf("version after reopen: %v %d", applied, cur)
	}
}

func TestClosed(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	k := once.Key{ID: "k"}
	if _, err := s.Claim(ctx, claimReq("k")); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Claim: %v", err)
	}
	if _, err := s.Get(ctx, k); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Get: %v", err)
	}
	if err := s.Complete(ctx, k, 1, once.Result{}); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Complete: %v", err)
	}
	if _, _, err := s.Advance(ctx, "", "e", 1); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Advance: %v", err)
	}
	if _, err := s.Sweep(ctx, 1); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Sweep: %v", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, once.ErrClosed) {
		t.Errorf("Ping: %v", err)
	}
}

// TestCloseWhileBusy closes the store under 32 writing goroutines: each call
// either completes or returns ErrClosed, and none hangs.
func TestCloseWhileBusy(t *testing.T) {
	s := MustOpen(t, Config{})
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := s.Claim(context.Background(), claimReq(fmt.Sprint(g, "-", i)))
				if errors.Is(err, once.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Claim: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func TestContextCanceled(t *testing.T) {
	s := MustOpen(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Claim(ctx, claimReq("a")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Claim with canceled ctx: %v", err)
	}
	if n := recordCount(t, s); n != 0 {
		t.Fatalf("%d records after a canceled claim", n)
	}
}

func TestPing(t *testing.T) {
	if err := MustOpen(t, Config{}).Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOpenGarbageFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bolt file\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Config{})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open(garbage) = %v, want an error naming %s", err, path)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := Open("", Config{}); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}

// TestSecondOpenInProcess checks that a second Open of a file this process
// holds fails quickly with an error naming the file.
func TestSecondOpenInProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "once.db")
	MustOpenPath(t, path, Config{})
	start := time.Now()
	_, err := Open(path, Config{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Open = %v, want ErrLocked naming %s", err, path)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open took %v", d)
	}
}

// TestCorruptRecord checks that a record that does not decode fails the
// operations on its key with ErrUnavailable, and only those.
func TestCorruptRecord(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{})
	req := claimReq("bad")
	MustClaim(t, s, req, once.Acquired)
	mustCheckpoint(t, s)
	k := appendKey(nil, req.Key.Scope, req.Key.ID)
	if err := s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketRecords).Put(k, []byte{1, 0, 9}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, req); !errors.Is(err, once.ErrUnavailable) {
		t.Errorf("Claim: %v, want ErrUnavailable", err)
	}
	if _, err := s.Get(ctx, req.Key); !errors.Is(err, once.ErrUnavailable) {
		t.Errorf("Get: %v, want ErrUnavailable", err)
	}
	if err := s.Complete(ctx, req.Key, 1, once.Result{}); !errors.Is(err, once.ErrUnavailable) {
		t.Errorf("Complete: %v, want ErrUnavailable", err)
	}
	MustClaim(t, s, claimReq("good"), once.Acquired)
}

func TestOpenOtherFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "once.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keyFormat, []byte{fileFormat + 1})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Config{}); err == nil || !strings.Contains(err.Error(), "format") {
		t.Fatalf("Open of another format = %v, want a format error", err)
	}
}
