package boltstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// TestListChunks lists a scope larger than a chunk, next to scopes that
// share its first bytes, and writes to the store from inside fn.
func TestListChunks(t *testing.T) {
	ctx := context.Background()
	s := MustOpen(t, Config{NoSync: true})
	const n = 2*listChunk + 17
	for i := range n {
		MustClaim(t, s, once.ClaimRequest{Key: once.Key{Scope: "a", ID: fmt.Sprint(i)}, Lease: time.Hour, Retention: time.Hour}, once.Acquired)
	}
	for _, scope := range []string{"", "ab", "b"} {
		MustClaim(t, s, once.ClaimRequest{Key: once.Key{Scope: scope, ID: "x"}, Lease: time.Hour, Retention: time.Hour}, once.Acquired)
	}
	if err := s.Delete(ctx, once.Key{Scope: "a", ID: "7"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	err := s.List(ctx, "a", func(r once.Record) bool {
		if r.Key.Scope != "a" || seen[r.Key.ID] {
			t.Errorf("List: %+v from another scope or twice", r.Key)
		}
		seen[r.Key.ID] = true
		// fn runs outside any transaction, so it may write.
		if _, _, err := s.Advance(ctx, "a", "listed", uint64(len(seen))); err != nil {
			t.Errorf("Advance inside List: %v", err)
		}
		return true
	})
	if err != nil || len(seen) != n-1 || seen["7"] {
		t.Fatalf("List = %d records (deleted one seen: %v), %v; want %d", len(seen), seen["7"], err, n-1)
	}
}
