package pgstore_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// BenchmarkClaimComplete measures Claim+Complete pairs on fresh keys from 64
// goroutines on a 64-connection pool. bench/pg runs it side by side with
// pgbench.
func BenchmarkClaimComplete(b *testing.B) {
	db := newTestDB(b, 64)
	s := db.store(b)
	var n atomic.Int64
	scope := randomHex(b, 4)
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			k := once.Key{Scope: scope, ID: "k" + strconv.FormatInt(n.Add(1), 10)}
			res, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: time.Minute, Retention: time.Hour})
			if err != nil {
				b.Error(err)
				return
			}
			if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte("ok")}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkClaimReplay measures claims of a completed key: the read-only
// path (no write, no lock).
func BenchmarkClaimReplay(b *testing.B) {
	db := newTestDB(b, 64)
	s := db.store(b)
	k := once.Key{ID: "done"}
	req := once.ClaimRequest{Key: k, Lease: time.Minute, Retention: time.Hour}
	res, err := s.Claim(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Complete(context.Background(), k, res.Token, once.Result{Data: []byte("ok")}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := s.Claim(context.Background(), req)
			if err != nil || res.Outcome != once.Completed {
				b.Errorf("%v %v", res.Outcome, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
}
