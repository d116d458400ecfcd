package boltstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
)

// checkIndex fails unless the purge index holds exactly one entry per record,
// at the record's purge time.
func checkIndex(tb testing.TB, s *Store) {
	tb.Helper()
	mustCheckpoint(tb, s)
	err := s.db.View(func(tx *bbolt.Tx) error {
		records, purge := tx.Bucket(bucketRecords), tx.Bucket(bucketPurge)
		if r, p := records.Stats().KeyN, purge.Stats().KeyN; r != p {
			tb.Errorf("%d records, %d purge index entries", r, p)
		}
		return records.ForEach(func(k, v []byte) error {
			r, err := decodeRecord(v)
			if err != nil {
				return err
			}
			if purge.Get(appendPurgeKey(nil, r.PurgeAt(), k)) == nil {
				tb.Errorf("record %v has no purge entry at %v", r.Key, r.PurgeAt())
			}
			return nil
		})
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func TestIndexFollowsWrites(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now, SweepInterval: -1})
	req := claimReq("a")
	res := MustClaim(t, s, req, once.Acquired)
	checkIndex(t, s)
	clock.Add(time.Second)
	if err := s.Extend(ctx, req.Key, res.Token, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, s)
	if err := s.Complete(ctx, req.Key, res.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, s)
	if err := s.Delete(ctx, req.Key); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, s)
	MustClaim(t, s, req, once.Acquired)
	checkIndex(t, s)
}

func TestSweepIsBounded(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now, SweepInterval: -1})
	for i := range 10 {
		req := claimReq(fmt.Sprint("old-", i))
		req.Retention = time.Duration(i+1) * time.Minute
		MustClaim(t, s, req, once.Acquired)
	}
	young := claimReq("young")
	young.Retention = 2 * time.Hour
	MustClaim(t, s, young, once.Acquired)
	mustCheckpoint(t, s) // Sweep leaves alone what is only in the log
	clock.Add(time.Hour)
	for _, want := range []int{3, 3, 3, 1, 0} {
		n, err := s.Sweep(ctx, 3)
		if err != nil || n != want {
			t.Fatalf("Sweep(3) = %d, %v; want %d", n, err, want)
		}
		checkIndex(t, s)
	}
	if n := recordCount(t, s); n != 1 {
		t.Fatalf("%d records left, want 1", n)
	}
	MustClaim(t, s, young, once.Abandoned)
}

// TestSweepLeavesOverlay: a record whose newer value is only in the log
// is not swept, though bbolt's older value is purgeable, and its index entry
// stays until the checkpoint moves it.
func TestSweepLeavesOverlay(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now, SweepInterval: -1, CheckpointInterval: time.Hour})
	req := claimReq("a")
	req.Retention = time.Minute
	res := MustClaim(t, s, req, once.Acquired)
	mustCheckpoint(t, s)
	clock.Add(2 * time.Hour) // purgeable in bbolt
	req.Policy = once.AbandonRetry
	if got := MustClaim(t, s, req, once.Acquired); got.Token != res.Token+1 {
		t.Fatalf("takeover token %d, want %d", got.Token, res.Token+1)
	}
	if n, err := s.Sweep(ctx, 10); n != 0 || err != nil {
		t.Fatalf("Sweep = %d, %v; want 0 (the newer value is in the log)", n, err)
	}
	checkIndex(t, s)
	if r := mustGet(t, s, req.Key); r.Token != res.Token+1 {
		t.Fatalf("after the checkpoint: token %d", r.Token)
	}
}

// TestSweepKeepsRewrittenRecord plants an index entry that no longer matches
// its record: Sweep drops the entry but keeps the record, and does not count
// it.
func TestSweepKeepsRewrittenRecord(t *testing.T) {
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now, SweepInterval: -1})
	req := claimReq("a")
	MustClaim(t, s, req, once.Acquired)
	mustCheckpoint(t, s)
	k := appendKey(nil, req.Key.Scope, req.Key.ID)
	stale := append(appendPurgeTime(nil, clock.Now().Add(-time.Hour)), k...)
	if err := s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketPurge).Put(stale, []byte{}) }); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(context.Background(), 10); n != 0 || err != nil {
		t.Fatalf("Sweep = %d, %v; want 0", n, err)
	}
	checkIndex(t, s)
	MustClaim(t, s, req, once.InProgress)
}

func TestBackgroundSweeper(t *testing.T) {
	clock := newFakeClock()
	s := MustOpen(t, Config{Clock: clock.Now, SweepInterval: 5 * time.Millisecond, SweepLimit: 7})
	for i := range 50 {
		MustClaim(t, s, claimReq(fmt.Sprint("k", i)), once.Acquired)
	}
	clock.Add(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for recordCount(t, s) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records left after 10s of sweeping", recordCount(t, s))
		}
		time.Sleep(5 * time.Millisecond)
	}
	checkIndex(t, s)
}
