package boltstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// crashCopy copies the store's bbolt file and log segments, as they are on
// disk now, into a fresh directory and returns the copy's path: what a
// process killed at this instant would leave behind. The store must not be
// checkpointing (a long CheckpointInterval) while it is copied.
func crashCopy(t *testing.T, s *Store) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.db")
	copyFile(t, s.path, dst)
	nums, err := listSegments(s.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nums {
		copyFile(t, segmentPath(s.path, n), segmentPath(dst, n))
	}
	return dst
}

// lastSegment returns the path and the bytes of the newest log segment of
// the store file path.
func lastSegment(t *testing.T, path string) (string, []byte) {
	t.Helper()
	nums, err := listSegments(path)
	if err != nil || len(nums) == 0 {
		t.Fatalf("segments of %s: %v, %v", path, nums, err)
	}
	seg := segmentPath(path, nums[len(nums)-1])
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	return seg, data
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// completeN claims and completes keys prefix-0 ... prefix-(n-1).
func completeN(t *testing.T, s *Store, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		req := claimReq(fmt.Sprint(prefix, i))
		res := MustClaim(t, s, req, once.Acquired)
		if err := s.Complete(ctx, req.Key, res.Token, once.Result{Data: []byte(req.Key.ID)}); err != nil {
			t.Fatal(err)
		}
	}
}

// wantCompleted checks that keys prefix-0 ... prefix-(n-1) replay their
// results.
func wantCompleted(t *testing.T, s *Store, prefix string, n int) {
	t.Helper()
	for i := range n {
		req := claimReq(fmt.Sprint(prefix, i))
		got := MustClaim(t, s, req, once.Completed)
		if string(got.Record.Result.Data) != req.Key.ID {
			t.Fatalf("%s replays %q", req.Key.ID, got.Record.Result.Data)
		}
	}
}

// TestRecoverFromLog: changes that only the log holds (some checkpointed
// before, through reused segments, some not) are all there after a crash.
func TestRecoverFromLog(t *testing.T) {
	s := MustOpen(t, Config{SweepInterval: -1, CheckpointInterval: time.Hour, CheckpointRecords: 1 << 20})
	for round := range 4 {
		completeN(t, s, fmt.Sprint("cp", round, "-"), 20)
		mustCheckpoint(t, s)
	}
	completeN(t, s, "log-", 50)
	if _, _, err := s.Advance(context.Background(), "", "v", 7); err != nil {
		t.Fatal(err)
	}
	nums, _ := listSegments(s.path)
	if len(nums) < 2 {
		t.Fatalf("segments %v: want the current one and a spare", nums)
	}
	r := MustOpenPath(t, crashCopy(t, s), Config{SweepInterval: -1})
	for round := range 4 {
		wantCompleted(t, r, fmt.Sprint("cp", round, "-"), 20)
	}
	wantCompleted(t, r, "log-", 50)
	if applied, cur, err := r.Advance(context.Background(), "", "v", 7); applied || cur != 7 || err != nil {
		t.Fatalf("version after recovery: %v %d %v", applied, cur, err)
	}
	checkIndex(t, r)
}

// TestRecoverTornFrame cuts the last frame short, as a crash during its
// write would: everything before it is there, its change is not, and the
// store goes on writing after it.
func TestRecoverTornFrame(t *testing.T) {
	s := MustOpen(t, Config{SweepInterval: -1, CheckpointInterval: time.Hour})
	completeN(t, s, "k-", 10)
	before := s.log.off // no write is in flight: the writer is idle
	MustClaim(t, s, claimReq("torn"), once.Acquired)
	path := crashCopy(t, s)
	seg, data := lastSegment(t, path)
	_, _, size, ok := nextFrame(data[before:], s.salt)
	if !ok {
		t.Fatal("no frame where the last write went")
	}
	if err := os.Truncate(seg, before+int64(size/2)); err != nil {
		t.Fatal(err)
	}
	r := MustOpenPath(t, path, Config{SweepInterval: -1})
	wantCompleted(t, r, "k-", 10)
	if _, err := r.Get(context.Background(), claimReq("torn").Key); err == nil {
		t.Fatal("the torn frame's claim is there")
	}
	completeN(t, r, "after-", 5)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = MustOpenPath(t, path, Config{SweepInterval: -1})
	wantCompleted(t, r, "k-", 10)
	wantCompleted(t, r, "after-", 5)
}

// TestRecoverMissingFrames: a log whose frames do not follow on from the
// checkpoint (a segment lost) fails Open, naming the file.
func TestRecoverMissingFrames(t *testing.T) {
	s := MustOpen(t, Config{SweepInterval: -1, CheckpointInterval: time.Hour})
	completeN(t, s, "k-", 3)
	path := crashCopy(t, s)
	seg, data := lastSegment(t, path)
	// Drop the first frame: the log now starts at frame 2.
	_, _, size, ok := nextFrame(data, s.salt)
	if !ok {
		t.Fatal("no frame at the start of the segment")
	}
	if err := os.WriteFile(seg, data[alignUp(size):], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Config{})
	if err == nil || !strings.Contains(err.Error(), "frames are missing") || !strings.Contains(err.Error(), seg) {
		t.Fatalf("Open of a log with a gap = %v", err)
	}
}

// TestCloseRemovesLog: after Close the bbolt file holds everything and no
// log segment is left.
func TestCloseRemovesLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "once.db")
	s, err := Open(path, Config{})
	if err != nil {
		t.Fatal(err)
	}
	completeN(t, s, "k-", 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if nums, _ := listSegments(path); len(nums) != 0 {
		t.Fatalf("segments left after Close: %v", nums)
	}
	s = MustOpenPath(t, path, Config{})
	wantCompleted(t, s, "k-", 10)
}

// TestFrameRoundTrip: a sealed frame reads back; any flipped byte or a cut
// makes it unreadable.
func TestFrameRoundTrip(t *testing.T) {
	frame := make([]byte, frameHeaderLen)
	frame = appendEntry(frame, []byte("rkey"), []byte("value"))
	frame = appendEntry(frame, []byte("vver"), []byte{0, 0, 0, 0, 0, 0, 0, 9})
	salt := []byte("12345678")
	sealFrame(frame, 42, salt)
	if _, _, _, ok := nextFrame(frame, []byte("12345679")); ok {
		t.Fatal("a frame reads back under another salt")
	}
	seq, payload, size, ok := nextFrame(frame, salt)
	if !ok || seq != 42 || size != len(frame) {
		t.Fatalf("nextFrame = %d, %d, %v", seq, size, ok)
	}
	var keys []string
	if err := entries(payload, func(k, v []byte) error { keys = append(keys, string(k)+"="+string(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0] != "rkey=value" {
		t.Fatalf("entries = %q", keys)
	}
	for i := range frame {
		bad := append([]byte{}, frame...)
		bad[i] ^= 0x40
		if seq, _, _, ok := nextFrame(bad, salt); ok && seq == 42 {
			t.Fatalf("frame with byte %d flipped reads back", i)
		}
	}
	if _, _, _, ok := nextFrame(frame[:len(frame)-1], salt); ok {
		t.Fatal("a cut frame reads back")
	}
}

var fuzzSalt = []byte("fuzzsalt")

// FuzzScanSegment: recovery reads any bytes as a log segment without
// panicking, and what it accepts is a run of frames that follows on from
// the log so far.
func FuzzScanSegment(f *testing.F) {
	var seg []byte
	for seq := uint64(1); seq <= 3; seq++ {
		frame := appendEntry(make([]byte, frameHeaderLen), []byte("rk"), appendRecord(nil, &once.Record{Token: seq, State: once.StateInProgress}))
		sealFrame(frame, seq, fuzzSalt)
		seg = append(seg, frame...)
		seg = append(seg, make([]byte, alignUp(len(frame))-len(frame))...)
	}
	f.Add(seg, uint64(0), uint64(0))
	f.Add(seg, uint64(2), uint64(2))
	f.Add(seg[:len(seg)-3], uint64(0), uint64(0))
	f.Add(append(append([]byte{}, seg...), seg...), uint64(1), uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, cp, last uint64) {
		if last < cp {
			last = cp
		}
		payloads, next, err := scanSegment(data, cp, last, fuzzSalt)
		if err != nil {
			return
		}
		if next != last+uint64(len(payloads)) {
			t.Fatalf("%d payloads took the log from %d to %d", len(payloads), last, next)
		}
		for _, p := range payloads {
			_ = entries(p, func(k, v []byte) error {
				if len(k) < 2 {
					t.Fatalf("entry key %q", k)
				}
				return nil
			})
		}
	})
}

// TestOddPaths: the log of a store opened by a relative or unclean path, or
// one with glob characters, is found again after a crash.
func TestOddPaths(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, path := range []string{"./once.db", "sub//once.db", "tenant[1]/o*?.db"} {
		t.Run(path, func(t *testing.T) {
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			s := MustOpenPath(t, path, Config{SweepInterval: -1, CheckpointInterval: time.Hour})
			completeN(t, s, "k-", 5)
			if nums, err := listSegments(path); err != nil || len(nums) == 0 {
				t.Fatalf("listSegments(%q) = %v, %v", path, nums, err)
			}
			r := MustOpenPath(t, crashCopy(t, s), Config{SweepInterval: -1})
			wantCompleted(t, r, "k-", 5)
		})
	}
}

// TestFailingCheckpoints: while checkpoints fail, before or after the
// writer switched segments, writes that the overlay has no room for fail
// at once (they neither hang nor lose anything), the log does not grow a
// new segment at every attempt, and once checkpoints work again so does
// everything else.
func TestFailingCheckpoints(t *testing.T) {
	for _, stage := range []string{"snapshot", "commit"} {
		t.Run(stage, func(t *testing.T) {
			ctx := context.Background()
			s := MustOpen(t, Config{SweepInterval: -1, CheckpointRecords: 4, CheckpointInterval: 5 * time.Millisecond})
			var failing atomic.Bool
			failing.Store(true)
			s.cpTestHook = func(at string) error {
				if at == stage && failing.Load() {
					return errors.New("injected checkpoint failure")
				}
				return nil
			}
			ok := 0
			for i := range 40 {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := s.Claim(cctx, claimReq(fmt.Sprint("k-", i)))
				cancel()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, once.ErrUnavailable):
				default:
					t.Fatalf("claim %d while checkpoints fail: %v, want success or ErrUnavailable", i, err)
				}
			}
			if ok < 16 || ok == 40 {
				t.Fatalf("%d of 40 claims succeeded; want the overlay's room (16) and then failures", ok)
			}
			if nums, _ := listSegments(s.path); len(nums) > 3 {
				t.Errorf("%d log segments after failed checkpoints: %v", len(nums), nums)
			}
			failing.Store(false)
			mustCheckpoint(t, s)
			MustClaim(t, s, claimReq("after"), once.Acquired)
			for i := range ok {
				MustClaim(t, s, claimReq(fmt.Sprint("k-", i)), once.InProgress)
			}
		})
	}
}

// TestCloseFreesBlockedCallers: callers waiting for room in a full queue
// return ErrClosed as soon as Close begins, even while the writer is busy.
func TestCloseFreesBlockedCallers(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{SweepInterval: -1, NoSync: true})
	release := holdWriter(t, s)
	const n = maxBatch + 50
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Claim(ctx, claimReq(fmt.Sprint("k-", i)))
			errs <- err
		}()
	}
	waitFor(t, "the queue to fill", func() bool { return len(s.queue) == maxBatch })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	for range n - maxBatch {
		select {
		case err := <-errs:
			if !errors.Is(err, once.ErrClosed) {
				t.Errorf("blocked caller: %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("callers blocked on the full queue did not return at Close")
		}
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range maxBatch {
		if err := <-errs; err != nil {
			t.Errorf("queued caller: %v, want its claim committed", err)
		}
	}
}
