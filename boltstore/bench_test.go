package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// benchResult is the result every benchmark pair completes with: the size
// of a small API response.
var benchResult = once.Result{Data: make([]byte, 200), Meta: map[string]string{"status": "200"}}

// BenchmarkClaimComplete measures Claim+Complete pairs on fresh keys from 1,
// 8 and 64 goroutines, on the store and on a baseline that makes the same
// two writes (same encoding, same fsm) with one plain bbolt Update each.
func BenchmarkClaimComplete(b *testing.B) {
	for _, impl := range []struct {
		name string
		open func(b *testing.B) func(ctx context.Context, key once.Key) error
	}{
		{"boltstore", openStorePair},
		{"plainbolt", openPlainPair},
	} {
		for _, p := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%s/p%d", impl.name, p), func(b *testing.B) {
				runPairs(b, p, impl.open(b))
			})
		}
	}
}

// runPairs runs b.N pairs from p goroutines and reports pairs/s.
func runPairs(b *testing.B, p int, pair func(ctx context.Context, key once.Key) error) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu := cpuTime()
	for g := range p {
		wg.Go(func() {
			for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
				if err := pair(ctx, once.Key{Scope: "bench", ID: fmt.Sprintf("key-%d-%d", g, n)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
	// CPU time moves less with the load of other processes than
	// throughput does (fsyncs wait on a shared disk).
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e3, "cpu-µs/pair")
}

// cpuTime returns the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchReq(key once.Key) once.ClaimRequest {
	return once.ClaimRequest{Key: key, Fingerprint: []byte("0123456789abcdef0123456789abcdef"), Lease: time.Minute, Retention: 24 * time.Hour}
}

func openStorePair(b *testing.B) func(ctx context.Context, key once.Key) error {
	s := MustOpen(b, Config{})
	b.Cleanup(func() {
		if c := s.commits.Load(); c > 0 {
			b.ReportMetric(float64(s.committed.Load())/float64(c), "ops/commit")
			b.ReportMetric(float64(s.commitTime.Load())/float64(c)/1e6, "ms/commit")
		}
	})
	return func(ctx context.Context, key once.Key) error {
		res, err := s.Claim(ctx, benchReq(key))
		if err != nil {
			return err
		}
		if res.Outcome != once.Acquired {
			return fmt.Errorf("claim: %v", res.Outcome)
		}
		return s.Complete(ctx, key, res.Token, benchResult)
	}
}

// openPlainPair is the baseline: each write is its own bbolt Update, the
// way a store without group commit would do it.
func openPlainPair(b *testing.B) func(ctx context.Context, key once.Key) error {
	db, err := bbolt.Open(filepath.Join(b.TempDir(), "plain.db"), 0o600, &bbolt.Options{FreelistType: bbolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.Update(createBuckets); err != nil {
		b.Fatal(err)
	}
	now := once.SystemClock()
	return func(_ context.Context, key once.Key) error {
		k := appendKey(nil, key.Scope, key.ID)
		var token uint64
		err := db.Update(func(tx *bbolt.Tx) error {
			r, err := plainGet(tx, k)
			if err != nil {
				return err
			}
			next, res := fsm.Claim(r, benchReq(key), now())
			token = res.Token
			return tx.Bucket(bucketRecords).Put(k, appendRecord(nil, next))
		})
		if err != nil {
			return err
		}
		return db.Update(func(tx *bbolt.Tx) error {
			r, err := plainGet(tx, k)
			if err != nil {
				return err
			}
			next, err := fsm.Complete(r, token, benchResult, now())
			if err != nil {
				return err
			}
			return tx.Bucket(bucketRecords).Put(k, appendRecord(nil, next))
		})
	}
}

func plainGet(tx *bbolt.Tx, k []byte) (*once.Record, error) {
	v := tx.Bucket(bucketRecords).Get(k)
	if v == nil {
		return nil, nil
	}
	return decodeRecord(v)
}

// BenchmarkReplay measures Claim on a completed key: one read, no write
// (writes/op reports the bbolt transactions and log frames written per
// replay; no checkpoint runs meanwhile).
func BenchmarkReplay(b *testing.B) {
	ctx := context.Background()
	s := MustOpen(b, Config{CheckpointInterval: time.Hour})
	req := benchReq(once.Key{Scope: "bench", ID: "replayed"})
	res := MustClaim(b, s, req, once.Acquired)
	if err := s.Complete(ctx, req.Key, res.Token, benchResult); err != nil {
		b.Fatal(err)
	}
	before, commits := lastTxID(b, s), s.commits.Load()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res, err := s.Claim(ctx, req); err != nil || res.Outcome != once.Completed {
				b.Errorf("replay = %v, %v", res.Outcome, err)
				return
			}
		}
	})
	b.StopTimer()
	writes := uint64(lastTxID(b, s)-before) + s.commits.Load() - commits
	b.ReportMetric(float64(writes)/float64(b.N), "writes/op")
}
