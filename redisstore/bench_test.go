package redisstore

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// seq numbers benchmark keys across runs: the testing package calls a
// benchmark several times, and a key must never be used twice.
var seq atomic.Int64

// benchGoroutines is how many goroutines each benchmark runs.
const benchGoroutines = 64

var benchValue = []byte("0123456789abcdef")

// runParallel runs op from benchGoroutines goroutines, each call with a key
// number no other call uses, and reports ops/s.
func runParallel(b *testing.B, unit string, op func(n int64) error) {
	b.SetParallelism((benchGoroutines + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(seq.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}

// BenchmarkRedis compares, on one server and one client library, a
// Claim+Complete pair on a fresh key with the plainest idempotency guard
// there is, SET key value NX PX. Run both in one go:
//
//	ONCE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run '^$' -bench Redis -benchtime 3s ./redisstore
func BenchmarkRedis(b *testing.B) {
	s := newTestStore(b)
	b.Run("SetNX", func(b *testing.B) {
		c := s.client
		runParallel(b, "ops/s", func(n int64) error {
			key := s.prefix + "setnx:" + strconv.FormatInt(n, 36)
			return c.Do(ctx, c.B().Set().Key(key).Value(string(benchValue)).Nx().PxMilliseconds(60000).Build()).Error()
		})
	})
	b.Run("ClaimComplete", func(b *testing.B) {
		runParallel(b, "pairs/s", func(n int64) error {
			k := once.Key{Scope: "bench", ID: strconv.FormatInt(n, 36)}
			res, err := s.Claim(ctx, claimReq(k, time.Minute, time.Minute))
			if err != nil {
				return err
			}
			return s.Complete(ctx, k, res.Token, once.Result{Data: benchValue})
		})
	})
	b.Run("ClaimReplay", func(b *testing.B) {
		k := once.Key{Scope: "bench", ID: "replay"}
		if res := mustClaim(b, s, claimReq(k, time.Minute, time.Hour)); res.Outcome == once.Acquired {
			if err := s.Complete(ctx, k, res.Token, once.Result{Data: benchValue}); err != nil {
				b.Fatal(err)
			}
		}
		runParallel(b, "claims/s", func(int64) error {
			_, err := s.Claim(ctx, claimReq(k, time.Minute, time.Hour))
			return err
		})
	})
}
