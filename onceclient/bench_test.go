package onceclient_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/boltstore"
	"github.com/oncehq/once/keyapi"
	"github.com/oncehq/once/onceclient"
)

// BenchmarkClaimComplete compares claim+complete pairs made through the key
// API (onceclient → HTTP over loopback → keyapi) with the same pairs made
// through the library on the same embedded store, 64 goroutines each:
//
//	go test -run='^$' -bench=ClaimComplete -benchtime=3s -count=3 ./onceclient/
func BenchmarkClaimComplete(b *testing.B) {
	store, err := boltstore.Open(filepath.Join(b.TempDir(), "once.db"), boltstore.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	srv := httptest.NewServer(keyapi.New(keyapi.Config{Store: store}))
	b.Cleanup(srv.Close)
	client, err := onceclient.Open("once+" + srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Uint64
	for _, s := range []struct {
		name  string
		store once.Store
	}{{"library", store}, {"http", client}} {
		b.Run(s.name+"/p64", func(b *testing.B) {
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					key := once.Key{ID: fmt.Sprintf("bench-%d", seq.Add(1))}
					res, err := s.store.Claim(ctx, once.ClaimRequest{Key: key, Lease: time.Minute, Retention: time.Hour})
					if err != nil || res.Outcome != once.Acquired {
						b.Errorf("claim: %v %v", res.Outcome, err)
						return
					}
					if err := s.store.Complete(ctx, key, res.Token, once.Result{Data: []byte(`{"ok":true}`)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
		})
	}
}
