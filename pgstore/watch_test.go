package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

func waitClosed(tb testing.TB, ch <-chan struct{}, what string) {
	tb.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		tb.Fatalf("%s: watcher not woken within 5s", what)
	}
}

func notClosed(tb testing.TB, ch <-chan struct{}, what string) {
	tb.Helper()
	select {
	case <-ch:
		tb.Fatalf("%s: watcher woken early", what)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestWatchAcrossStores: a store on one pool watches, another (its own
// connections) completes, releases or deletes.
func TestWatchAcrossStores(t *testing.T) {
	db := newTestDB(t, 4)
	watcher := db.open(t, pgstore.Config{}, 4)
	worker := db.open(t, pgstore.Config{}, 4)
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		end  func(k once.Key, token uint64) error
	}{
		{"complete", func(k once.Key, tok uint64) error {
			return worker.Complete(ctx, k, tok, once.Result{Data: []byte("r")})
		}},
		{"release", func(k once.Key, tok uint64) error { return worker.Release(ctx, k, tok) }},
		{"delete", func(k once.Key, _ uint64) error { return worker.Delete(ctx, k) }},
	} {
		k := key(t, tc.name)
		r := mustClaim(t, worker, claimReq(k, "", time.Minute, time.Minute), once.Acquired)
		ch1, stop1, err := watcher.Watch(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		ch2, stop2, err := watcher.Watch(ctx, k) // shares the listener and the mark
		if err != nil {
			t.Fatal(err)
		}
		notClosed(t, ch1, tc.name)
		if err := worker.Extend(ctx, k, r.Token, time.Minute); err != nil {
			t.Fatal(err)
		}
		notClosed(t, ch2, tc.name+" after Extend")
		if err := tc.end(k, r.Token); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ch1, tc.name)
		waitClosed(t, ch2, tc.name)
		stop1()
		stop1()
		stop2()
	}
}

// TestWatchNothingToWaitFor: a key that is absent or already completed wakes
// its watcher at once.
func TestWatchNothingToWaitFor(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	ctx := t.Context()
	ch, stop, err := s.Watch(ctx, key(t, "absent"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitClosed(t, ch, "absent key")
	k := key(t, "done")
	r := mustClaim(t, s, claimReq(k, "", time.Minute, time.Minute), once.Acquired)
	if err := s.Complete(ctx, k, r.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	ch, stop2, err := s.Watch(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	waitClosed(t, ch, "completed key")
}

// TestNotifyOnlyWatched: completing a key nobody watches sends no
// notification (a notifying commit serializes with every other one).
func TestNotifyOnlyWatched(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.store(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{db.prefix + "changed"}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	quiet := key(t, "quiet")
	r := mustClaim(t, s, claimReq(quiet, "", time.Minute, time.Minute), once.Acquired)
	if err := s.Complete(ctx, quiet, r.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	n, err := conn.WaitForNotification(wctx)
	cancel()
	if err == nil {
		t.Fatalf("notification %q for a key nobody watched", n.Payload)
	}
	watched := key(t, "watched")
	r = mustClaim(t, s, claimReq(watched, "", time.Minute, time.Minute), once.Acquired)
	_, stop, err := s.Watch(ctx, watched)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := s.Complete(ctx, watched, r.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err = conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Payload == "" || len(n.Payload) != 32 || n.Payload == watched.ID {
		t.Fatalf("payload %q, want a 32-hex-digit hash of the key", n.Payload)
	}
}

// TestWatchClose: Close wakes every watcher.
func TestWatchClose(t *testing.T) {
	db := newTestDB(t, 4)
	s := db.open(t, pgstore.Config{}, 4)
	k := key(t, "k")
	mustClaim(t, s, claimReq(k, "", time.Minute, time.Minute), once.Acquired)
	ch, stop, err := s.Watch(t.Context(), k)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	s.Close()
	waitClosed(t, ch, "Close")
	if _, _, err := s.Watch(t.Context(), k); err != once.ErrClosed {
		t.Fatalf("Watch after Close = %v, want ErrClosed", err)
	}
}
