package redisstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
)

// waitFor fails unless ch delivers (or closes) within d.
func waitFor(tb testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		tb.Fatalf("%s: no notification within %v", what, d)
	}
}

// mustWatch watches k, failing the test if Watch fails.
func mustWatch(tb testing.TB, s *Store, k once.Key) (<-chan struct{}, func()) {
	tb.Helper()
	ch, stop, err := s.Watch(ctx, k)
	if err != nil {
		tb.Fatal(err)
	}
	return ch, stop
}

func quiet(tb testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	tb.Helper()
	select {
	case _, ok := <-ch:
		tb.Fatalf("%s: notified (open %v), want nothing", what, ok)
	case <-time.After(d):
	}
}

// TestWatchWakesOnCompletionFromAnotherClient: a waiter on one connection
// hears about the completion made over another connection.
func TestWatchWakesOnCompletionFromAnotherClient(t *testing.T) {
	url := testenv.RedisURL(t)
	watcher := openTest(t, url, Config{})
	worker := openTest(t, url, Config{Prefix: watcher.prefix})
	k := freshKey(t)
	res := mustClaim(t, worker, claimReq(k, time.Minute, time.Hour))

	changed, stop := mustWatch(t, watcher, k)
	defer stop()
	otherKey := once.Key{Scope: k.Scope, ID: k.ID + "-other"}
	mustClaim(t, worker, claimReq(otherKey, time.Minute, time.Hour))
	other, stopOther := mustWatch(t, watcher, otherKey)
	defer stopOther()
	// Claims and extensions are not announced.
	if err := worker.Extend(ctx, k, res.Token, time.Minute); err != nil {
		t.Fatal(err)
	}
	quiet(t, changed, 50*time.Millisecond, "extend")
	if err := worker.Complete(ctx, k, res.Token, once.Result{Data: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changed, 5*time.Second, "complete")
	quiet(t, other, 50*time.Millisecond, "another key")
	// A no-op repeat publishes nothing.
	if err := worker.Complete(ctx, k, res.Token, once.Result{Data: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	quiet(t, changed, 50*time.Millisecond, "repeated complete")
	if err := worker.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changed, 5*time.Second, "delete")
}

// TestWatchRelease: a watcher woken by a release, who then loses the key to
// another claim, hears about that claim's completion too (the record stays
// marked).
func TestWatchRelease(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	changed, stop := mustWatch(t, s, k)
	if err := s.Release(ctx, k, res.Token); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changed, 5*time.Second, "release")
	second := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	wantOutcome(t, second, once.Acquired)
	if err := s.Complete(ctx, k, second.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, changed, 5*time.Second, "complete after a second claim")
	stop()
	stop() // safe twice
}

// TestWatchSharedAndResubscribed: watchers of one key share a subscription;
// stopping one leaves the others subscribed, and a new subscription after
// the last one stopped works (its SSUBSCRIBE is not undone by the previous
// SUNSUBSCRIBE).
func TestWatchSharedAndResubscribed(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	for round := range 20 {
		res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
		a, stopA := mustWatch(t, s, k)
		b, stopB := mustWatch(t, s, k)
		stopA()
		if err := s.Release(ctx, k, res.Token); err != nil {
			t.Fatal(err)
		}
		waitFor(t, b, 5*time.Second, "round "+string(rune('0'+round%10)))
		select {
		case _, ok := <-a:
			if ok {
				t.Fatal("a stopped watcher was notified")
			}
		default:
		}
		stopB()
	}
	s.hub.mu.Lock()
	n := len(s.hub.subs)
	s.hub.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d subscriptions left after every watcher stopped", n)
	}
}

// TestWatchManyWaiters: many goroutines wait on one key and all wake.
func TestWatchManyWaiters(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	const n = 100
	var ready, done sync.WaitGroup
	ready.Add(n)
	done.Add(n)
	for range n {
		go func() {
			defer done.Done()
			ch, stop, err := s.Watch(ctx, k)
			ready.Done()
			if err != nil {
				t.Error(err)
				return
			}
			defer stop()
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				t.Error("waiter not woken")
			}
		}()
	}
	ready.Wait()
	if err := s.Complete(ctx, k, res.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	done.Wait()
}

func TestWatchCloseEndsWaiters(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	ch, _ := mustWatch(t, s, k)
	s.Close()
	waitFor(t, ch, 5*time.Second, "close")
}

func TestWatchCancelledContext(t *testing.T) {
	s := newTestStore(t)
	c, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err := s.Watch(c, freshKey(t))
	// The subscription may be confirmed before the cancellation is seen.
	if err != nil {
		wantErr(t, err, once.ErrUnavailable)
	}
}

// TestWatchNothingToWaitFor: a record that is not in progress (absent,
// completed, released) wakes its watcher at once, without closing the
// channel.
func TestWatchNothingToWaitFor(t *testing.T) {
	s := newTestStore(t)
	completed, released := freshKey(t), freshKey(t)
	res := mustClaim(t, s, claimReq(completed, time.Minute, time.Hour))
	if err := s.Complete(ctx, completed, res.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	res = mustClaim(t, s, claimReq(released, time.Minute, time.Hour))
	if err := s.Release(ctx, released, res.Token); err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]once.Key{"absent": freshKey(t), "completed": completed, "released": released} {
		ch, stop := mustWatch(t, s, k)
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: channel closed, want a value", name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: watcher not woken at once", name)
		}
		stop()
	}
}

// TestUnwatchedRecordsDoNotPublish: a record nobody marked is completed
// without a message on its channel, even to a subscriber.
func TestUnwatchedRecordsDoNotPublish(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	// Subscribed, but without Watch's mark.
	w, sub, err := s.hub.join(s.recordKey(k))
	if err != nil {
		t.Fatal(err)
	}
	defer s.hub.leave(sub, w)
	waitFor(t, sub.ready, 5*time.Second, "subscribe")
	if err := s.Complete(ctx, k, res.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	quiet(t, w, 100*time.Millisecond, "unwatched complete")
}
