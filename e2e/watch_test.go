package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// TestConcurrentWatchers watches one in-progress key from several stores at
// the same moment, as gateways waiting on another's execution do. No watcher
// may be woken before the key changes: Executor.Do takes a closed channel as
// the end of notifications for that wait and falls back to slow polling (up
// to 2s between looks), so a premature wake delays the duplicate's replay.
// Every watcher is woken once the key completes.
func TestConcurrentWatchers(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s sharedStore) {
		const nstores, perStore, rounds = 3, 3, 5
		sts := make([]once.Store, nstores)
		for i := range sts {
			sts[i] = openStore(t, s.url)
		}
		keys := newKeys("watch")
		for round := range rounds {
			watchRound(t, sts, perStore, once.Key{ID: keys.id(round)})
		}
	})
}

// watchRound claims key in the first store, watches it from every store at
// once, then completes it.
func watchRound(t *testing.T, sts []once.Store, perStore int, key once.Key) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cr, err := sts[0].Claim(ctx, once.ClaimRequest{Key: key, Lease: 30 * time.Second, Retention: 10 * time.Minute})
	if err != nil || cr.Outcome != once.Acquired {
		t.Fatalf("claim %s: %v %v", key.ID, cr.Outcome, err)
	}
	chans := make([]<-chan struct{}, len(sts)*perStore)
	errs := make([]error, len(chans))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range chans {
		w := sts[i%len(sts)].(once.Watcher)
		wg.Go(func() {
			<-start
			var stop func()
			chans[i], stop, errs[i] = w.Watch(ctx, key)
			if stop != nil {
				t.Cleanup(stop)
			}
		})
	}
	close(start)
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // a wake would come in milliseconds
	for i, ch := range chans {
		if errs[i] != nil {
			t.Fatalf("watch %d of %s: %v", i, key.ID, errs[i])
		}
		select {
		case <-ch:
			t.Errorf("watcher %d (store %d) of %s woken while the key is still in progress", i, i%len(sts), key.ID)
		default:
		}
	}
	if err := sts[0].Complete(ctx, key, cr.Token, once.Result{Data: []byte("done")}); err != nil {
		t.Fatalf("complete %s: %v", key.ID, err)
	}
	for i, ch := range chans {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Errorf("watcher %d (store %d) of %s not woken after the key completed", i, i%len(sts), key.ID)
		}
	}
}
