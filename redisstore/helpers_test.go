package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
)

// testPrefix returns a key prefix unique to this test, so that runs sharing a
// server do not see each other's keys.
func testPrefix(tb testing.TB) string {
	var b [6]byte
	rand.Read(b[:])
	return "oncetest:" + hex.EncodeToString(b[:]) + ":"
}

// openTest opens a store at rawURL under a fresh prefix, closing it and
// deleting its keys when the test ends.
func openTest(tb testing.TB, rawURL string, cfg Config) *Store {
	tb.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, rawURL, cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		dropPrefix(tb, s, cfg.Prefix)
		s.Close()
	})
	return s
}

// newTestStore opens the store at ONCE_TEST_REDIS_URL (skipping when unset).
func newTestStore(tb testing.TB) *Store {
	tb.Helper()
	return openTest(tb, testenv.RedisURL(tb), Config{})
}

// dropPrefix deletes the keys under prefix on every node.
func dropPrefix(tb testing.TB, s *Store, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, node := range s.client.Nodes() {
		var cursor uint64
		for {
			e, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				tb.Logf("cleanup scan: %v", err)
				break
			}
			for _, k := range e.Elements {
				node.Do(ctx, node.B().Unlink().Key(k).Build())
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
}

func mustClaim(tb testing.TB, s once.Store, req once.ClaimRequest) once.ClaimResult {
	tb.Helper()
	res, err := s.Claim(context.Background(), req)
	if err != nil {
		tb.Fatalf("Claim(%v): %v", req.Key, err)
	}
	return res
}

func wantOutcome(tb testing.TB, res once.ClaimResult, want once.Outcome) {
	tb.Helper()
	if res.Outcome != want {
		tb.Fatalf("outcome %v, want %v (record %+v)", res.Outcome, want, res.Record)
	}
}

func wantErr(tb testing.TB, err, want error) {
	tb.Helper()
	if !errors.Is(err, want) {
		tb.Fatalf("error %v, want %v", err, want)
	}
}

var keySeq atomic.Int64

// freshKey returns a key no other case uses.
func freshKey(tb testing.TB) once.Key {
	return once.Key{Scope: "tenant", ID: fmt.Sprintf("%s/%d", tb.Name(), keySeq.Add(1))}
}

func claimReq(k once.Key, lease, retention time.Duration) once.ClaimRequest {
	return once.ClaimRequest{Key: k, Lease: lease, Retention: retention}
}
