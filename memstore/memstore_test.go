package memstore_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, clock once.Clock) once.Store {
		return memstore.New(memstore.Config{Clock: clock})
	})
}

// TestEviction: purgeable records are reclaimed a few at a time, by the
// writes that touch their shard and by Sweep, never all at once.
func TestEviction(t *testing.T) {
	ctx := t.Context()
	clock := storetest.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := memstore.New(memstore.Config{Clock: clock.Clock()})
	defer s.Close()
	const n = 1000
	for i := range n {
		claimComplete(t, s, fmt.Sprintf("old-%d", i), time.Second)
	}
	if got := s.Len(); got != n {
		t.Fatalf("Len = %d, want %d", got, n)
	}
	clock.Advance(2*time.Second - 1)
	if got, err := s.Sweep(ctx, n); got != 0 || err != nil {
		t.Fatalf("Sweep before purge time = %d, %v; want 0", got, err)
	}
	clock.Advance(1)
	// Each write reclaims at most a couple of records of its own shard.
	const writes = 100
	for i := range writes {
		claimComplete(t, s, fmt.Sprintf("new-%d", i), time.Hour)
	}
	left := s.Len() - writes
	if left >= n || left < n-writes*2*2 {
		t.Fatalf("after %d writes, %d of %d purgeable records left; want a few reclaimed per write", writes, left, n)
	}
	sweepDown(t, s, left)
	if got := s.Len(); got != writes {
		t.Fatalf("Len = %d after sweeping, want the %d live records", got, writes)
	}
}

// sweepDown sweeps in batches of 10 and checks each one's size.
func sweepDown(t *testing.T, s *memstore.Store, left int) {
	t.Helper()
	for left > 0 {
		got, err := s.Sweep(t.Context(), 10)
		if err != nil || got != min(10, left) {
			t.Fatalf("Sweep(10) with %d purgeable = %d, %v; want %d", left, got, err, min(10, left))
		}
		left -= got
		if l := s.Len(); l != left+100 {
			t.Fatalf("Len = %d after sweeping, want %d", l, left+100)
		}
	}
	if got, err := s.Sweep(t.Context(), 10); got != 0 || err != nil {
		t.Fatalf("Sweep with nothing purgeable = %d, %v; want 0", got, err)
	}
}

func claimComplete(tb testing.TB, s once.Store, id string, ttl time.Duration) {
	tb.Helper()
	ctx := context.Background()
	k := once.Key{ID: id}
	cr, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: ttl, Retention: ttl})
	if err != nil || cr.Outcome != once.Acquired {
		tb.Fatalf("Claim(%s) = %v, %v", id, cr.Outcome, err)
	}
	if err := s.Complete(ctx, k, cr.Token, once.Result{Data: []byte("ok")}); err != nil {
		tb.Fatalf("Complete(%s): %v", id, err)
	}
}

// BenchmarkClaimComplete measures claim+complete pairs on fresh keys with
// exactly 1, 8 and 64 goroutines. (b.SetParallelism only multiplies
// GOMAXPROCS, so it cannot give 1 goroutine on a machine with 2 cores.)
func BenchmarkClaimComplete(b *testing.B) {
	for _, g := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("p%d", g), func(b *testing.B) {
			s := memstore.New(memstore.Config{})
			defer s.Close()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range g {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						benchPair(b, s, i)
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
		})
	}
}

var benchResult = once.Result{Data: []byte(`{"ok":true}`), Meta: map[string]string{"Content-Type": "application/json"}}

func benchPair(b *testing.B, s once.Store, i int64) {
	ctx := context.Background()
	var buf [24]byte // one allocation for the key, as a caller that formats it would make
	k := once.Key{Scope: "bench", ID: string(strconv.AppendInt(append(buf[:0], "k-"...), i, 10))}
	cr, err := s.Claim(ctx, once.ClaimRequest{Key: k, Lease: time.Minute, Retention: time.Hour})
	if err != nil || cr.Outcome != once.Acquired {
		b.Errorf("Claim = %v, %v", cr.Outcome, err)
		return
	}
	if err := s.Complete(ctx, k, cr.Token, benchResult); err != nil {
		b.Error(err)
	}
}

// TestConformanceSystemClock runs the suite the way server-clock stores run
// it, with real sleeps, so that RunServerClock is exercised without a server.
func TestConformanceSystemClock(t *testing.T) {
	if testing.Short() {
		t.Skip("sleeps for a few seconds")
	}
	storetest.RunServerClock(t, func(tb testing.TB) once.Store {
		return memstore.New(memstore.Config{})
	})
}

// TestConformanceInexactTimes runs the suite with a clock whose readings
// alternate between two locations, so that a record written at every other
// reading keeps its times aside rather than as offsets from the first.
func TestConformanceInexactTimes(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, clock once.Clock) once.Store {
		east := time.FixedZone("east", 3600)
		var n atomic.Int64
		return memstore.New(memstore.Config{Clock: func() time.Time {
			if n.Add(1)%2 == 0 {
				return clock().In(east)
			}
			return clock()
		}})
	})
}

// TestCenturiesOfRetention: a retention too long for the store's offsets
// still holds exactly, and the record is never purged early.
func TestCenturiesOfRetention(t *testing.T) {
	ctx := t.Context()
	clock := storetest.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := memstore.New(memstore.Config{Clock: clock.Clock()})
	k := once.Key{ID: "forever"}
	req := once.ClaimRequest{Key: k, Lease: time.Minute, Retention: math.MaxInt64}
	cr, err := s.Claim(ctx, req)
	if err != nil || cr.Outcome != once.Acquired || !cr.Record.ExpiresAt.Equal(clock.Now().Add(math.MaxInt64)) {
		t.Fatalf("Claim = %+v, %v", cr, err)
	}
	if err := s.Complete(ctx, k, cr.Token, once.Result{Data: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(200 * 365 * 24 * time.Hour)
	if n, _ := s.Sweep(ctx, 10); n != 0 {
		t.Fatalf("Sweep forgot %d records 200 years into a 292-year retention", n)
	}
	if cr, err := s.Claim(ctx, req); err != nil || cr.Outcome != once.Completed || string(cr.Record.Result.Data) != "ok" {
		t.Fatalf("Claim 200 years on = %+v, %v; want the completed record", cr, err)
	}
}
