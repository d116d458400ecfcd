package memstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/storetest"
)

// After Delete, a Claim on the tombstone drops the counter protection that
// Delete set up for a holder whose lease is still running: the record is
// purged before that holder's lease ends, the counter restarts, and the
// zombie's token is handed out again.
func TestDeleteThenShortClaimKeepsTombstone(t *testing.T) {
	ctx := context.Background()
	c := storetest.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := memstore.New(memstore.Config{Clock: c.Clock()})
	k := once.Key{ID: "k"}
	long := once.ClaimRequest{Key: k, Lease: time.Hour, Retention: time.Hour}
	short := once.ClaimRequest{Key: k, Lease: time.Second, Retention: time.Second}

	zombie, _ := s.Claim(ctx, long) // token 1, lease until +1h
	c.Advance(time.Second)
	if err := s.Delete(ctx, k); err != nil { // tombstone kept until ~+2h
		t.Fatal(err)
	}
	c.Advance(time.Second)
	r2, _ := s.Claim(ctx, short) // token 2 on the tombstone; purge at +4s
	c.Advance(3 * time.Second)
	s.Sweep(ctx, 100)
	r3, _ := s.Claim(ctx, long) // zombie's lease runs until +1h
	t.Logf("zombie token %d, after delete %d, after purge %d", zombie.Token, r2.Token, r3.Token)
	if r3.Token <= r2.Token {
		t.Errorf("token went backwards %d -> %d while holder token %d still had %v of lease",
			r2.Token, r3.Token, zombie.Token, zombie.Record.LeaseExpiresAt.Sub(c.Now()))
	}
	if err := s.Complete(ctx, k, zombie.Token, once.Result{Data: []byte("zombie")}); err == nil {
		r, _ := s.Get(ctx, k)
		t.Errorf("zombie Complete(token %d) succeeded on the new holder's record: %q", zombie.Token, r.Result.Data)
	}
}
