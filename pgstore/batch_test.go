package pgstore_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
)

// batchSizes records the size of every batch a store runs.
type batchSizes struct {
	mu    sync.Mutex
	sizes map[string][]int
}

func (b *batchSizes) add(op string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sizes == nil {
		b.sizes = map[string][]int{}
	}
	b.sizes[op] = append(b.sizes[op], n)
}

func (b *batchSizes) get(op string) []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.sizes[op]...)
}

// hold locks the row of k (which must exist) in a transaction of its own,
// so that a statement that needs the row waits; the returned function ends
// the transaction.
func hold(tb testing.TB, db *testDB, k once.Key) (release func()) {
	tb.Helper()
	ctx := context.Background()
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	records := pgx.Identifier{db.schema, "once_records"}.Sanitize()
	if _, err := tx.Exec(ctx, "SELECT 1 FROM "+records+" WHERE scope = $1 AND key = $2 FOR UPDATE", []byte(k.Scope), k.ID); err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback(ctx) }) }
	tb.Cleanup(release)
	return release
}

// waitLocked waits until n statements on the test's tables wait for a lock.
func waitLocked(tb testing.TB, db *testDB, n int) {
	tb.Helper()
	waitFor(tb, "a statement waiting for a lock", func() bool {
		var got int
		err := db.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND position($1 in query) > 0`, db.schema).Scan(&got)
		return err == nil && got >= n
	})
}

func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// gated makes s run one statement of each kind at a time, blocks its claim
// slot (or complete slot) on a held row, and returns a function that lets it
// go: the calls queued meanwhile then run as one batch.
func gated(t *testing.T, db *testDB, s *pgstore.Store, sizes *batchSizes, op string) (open func()) {
	t.Helper()
	pgstore.SetInFlight(s, 1, sizes.add)
	ctx := t.Context()
	g := key(t, "gate")
	r := mustClaim(t, s, claimReq(g, "", time.Hour, time.Hour), once.Acquired)
	if op == "claim" {
		if err := s.Release(ctx, g, r.Token); err != nil {
			t.Fatal(err)
		}
	}
	release := hold(t, db, g)
	done := make(chan error, 1)
	go func() {
		var err error
		if op == "claim" {
			_, err = s.Claim(context.Background(), claimReq(g, "", time.Hour, time.Hour))
		} else {
			err = s.Complete(context.Background(), g, r.Token, once.Result{})
		}
		done <- err
	}()
	waitLocked(t, db, 1)
	return func() {
		release()
		if err := <-done; err != nil {
			t.Errorf("gate %s: %v", op, err)
		}
	}
}

// TestBatchedClaims: claims of keys in every state, queued together, run as
// one statement and each gets the answer it would get alone.
func TestBatchedClaims(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	ctx := t.Context()
	claim := func(k once.Key, fp string, lease time.Duration) once.ClaimResult {
		return mustClaim(t, s, claimReq(k, fp, lease, time.Hour), once.Acquired)
	}
	type tc struct {
		name     string
		setup    func(k once.Key)
		fp       string
		retry    bool
		want     once.Outcome
		token    uint64
		attempts uint32
		wantFP   string
	}
	cases := []tc{
		{name: "fresh", setup: func(once.Key) {}, fp: "a", want: once.Acquired, token: 1, attempts: 1, wantFP: "a"},
		{name: "completed", setup: func(k once.Key) {
			r := claim(k, "a", time.Hour)
			if err := s.Complete(ctx, k, r.Token, once.Result{Data: []byte("done"), Meta: map[string]string{"m": "1"}}); err != nil {
				t.Fatal(err)
			}
		}, fp: "a", want: once.Completed, token: 1, attempts: 1, wantFP: "a"},
		{name: "mismatch", setup: func(k once.Key) { claim(k, "a", time.Hour) }, fp: "b", want: once.Mismatch, token: 1, attempts: 1, wantFP: "a"},
		{name: "in progress", setup: func(k once.Key) { claim(k, "a", time.Hour) }, fp: "a", want: once.InProgress, token: 1, attempts: 1, wantFP: "a"},
		{name: "abandoned", setup: func(k once.Key) { claim(k, "a", time.Millisecond) }, fp: "a", want: once.Abandoned, token: 1, attempts: 1, wantFP: "a"},
		{name: "abandoned retry", setup: func(k once.Key) { claim(k, "a", time.Millisecond) }, retry: true, want: once.Acquired, token: 2, attempts: 2, wantFP: "a"},
		{name: "released", setup: func(k once.Key) {
			r := claim(k, "a", time.Hour)
			if err := s.Release(ctx, k, r.Token); err != nil {
				t.Fatal(err)
			}
		}, fp: "b", want: once.Acquired, token: 2, attempts: 2, wantFP: "b"},
		{name: "deleted", setup: func(k once.Key) {
			claim(k, "a", time.Hour)
			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}, fp: "b", want: once.Acquired, token: 2, attempts: 1, wantFP: "b"},
	}
	keys := make([]once.Key, len(cases))
	for i, c := range cases {
		keys[i] = key(t, c.name)
		c.setup(keys[i])
	}
	// The same ID in another scope: the key of another batch.
	twin := once.Key{Scope: "twin-" + keys[0].Scope, ID: keys[0].ID}
	time.Sleep(20 * time.Millisecond) // the 1ms leases pass
	var sizes batchSizes
	open := gated(t, db, s, &sizes, "claim")
	results := make([]once.ClaimResult, len(cases)+1)
	errs := make([]error, len(cases)+1)
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() {
			req := claimReq(keys[i], c.fp, time.Hour, time.Hour)
			if c.retry {
				req.Policy = once.AbandonRetry
			}
			results[i], errs[i] = s.Claim(ctx, req)
		})
	}
	wg.Go(func() { results[len(cases)], errs[len(cases)] = s.Claim(ctx, claimReq(twin, "", time.Hour, time.Hour)) })
	waitFor(t, "the claims to queue", func() bool { return pgstore.Queued(s) == len(cases)+1 })
	open()
	wg.Wait()

	for i, c := range cases {
		res, err := results[i], errs[i]
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		r := res.Record
		if res.Outcome != c.want || r.Token != c.token || r.Attempts != c.attempts || string(r.Fingerprint) != c.wantFP {
			t.Errorf("%s: %v token %d attempts %d fingerprint %q; want %v token %d attempts %d fingerprint %q",
				c.name, res.Outcome, r.Token, r.Attempts, r.Fingerprint, c.want, c.token, c.attempts, c.wantFP)
		}
		if (res.Outcome == once.Acquired) != (res.Token == c.token) || (res.Outcome == once.InProgress) != (res.RetryAfter > 0) {
			t.Errorf("%s: Token %d RetryAfter %v for %v", c.name, res.Token, res.RetryAfter, res.Outcome)
		}
	}
	if done := results[1].Record.Result; string(done.Data) != "done" || done.Meta["m"] != "1" {
		t.Errorf("completed: replayed result %q %v", done.Data, done.Meta)
	}
	if res := results[len(cases)]; errs[len(cases)] != nil || res.Outcome != once.Acquired || res.Token != 1 {
		t.Errorf("twin: %v token %d, %v; want Acquired token 1", res.Outcome, res.Token, errs[len(cases)])
	}
	if got := sizes.get("claim"); len(got) < 2 || got[len(got)-2] != len(cases) || got[len(got)-1] != 1 {
		t.Errorf("claim batches %v, want the cases in one batch and the twin in the next", got)
	}
}

// TestBatchedCompletes: completions of keys in every state, queued
// together, run as one statement and each gets the answer it would get
// alone; a watched key's watcher is woken.
func TestBatchedCompletes(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	ctx := t.Context()
	var sizes batchSizes
	type tc struct {
		name   string
		setup  func(k once.Key) uint64 // returns the token to complete with
		result once.Result
		want   error
	}
	x := once.Result{Data: []byte("x")}
	claim := func(k once.Key) uint64 {
		return mustClaim(t, s, claimReq(k, "", time.Hour, time.Hour), once.Acquired).Token
	}
	completed := func(k once.Key) uint64 {
		tok := claim(k)
		if err := s.Complete(ctx, k, tok, x); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cases := []tc{
		{name: "holder", setup: claim, result: once.Result{Data: []byte("x"), Meta: map[string]string{"k": "v"}}},
		{name: "watched", setup: claim, result: x},
		{name: "stale token", setup: func(k once.Key) uint64 { return claim(k) + 1 }, result: x, want: once.ErrFenced},
		{name: "repeat", setup: completed, result: x},
		{name: "other result", setup: completed, result: once.Result{Data: []byte("y")}, want: once.ErrFenced},
		{name: "released", setup: func(k once.Key) uint64 {
			tok := claim(k)
			if err := s.Release(ctx, k, tok); err != nil {
				t.Fatal(err)
			}
			return tok
		}, result: x, want: once.ErrFenced},
		{name: "deleted", setup: func(k once.Key) uint64 {
			tok := claim(k)
			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			return tok
		}, result: x, want: once.ErrFenced},
	}
	keys, tokens := make([]once.Key, len(cases)), make([]uint64, len(cases))
	for i, c := range cases {
		keys[i] = key(t, c.name)
		tokens[i] = c.setup(keys[i])
	}
	woken, stop, err := s.Watch(ctx, keys[1])
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	open := gated(t, db, s, &sizes, "complete")
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() {
			errs[i] = s.Complete(ctx, keys[i], tokens[i], c.result)
		})
	}
	waitFor(t, "the completions to queue", func() bool { return pgstore.Queued(s) == len(cases) })
	open()
	wg.Wait()
	for i, c := range cases {
		if !errors.Is(errs[i], c.want) || (c.want == nil) != (errs[i] == nil) {
			t.Errorf("%s: Complete = %v, want %v", c.name, errs[i], c.want)
		}
	}
	r, err := s.Get(ctx, keys[0])
	if err != nil || r.State != once.StateCompleted || string(r.Result.Data) != "x" || r.Result.Meta["k"] != "v" {
		t.Errorf("holder after Complete: %v %q %v, %v", r.State, r.Result.Data, r.Result.Meta, err)
	}
	waitClosed(t, woken, "watched key completed in a batch")
	if got := sizes.get("complete"); len(got) == 0 || got[len(got)-1] != len(cases) {
		t.Errorf("complete batches %v, want the cases in one batch", got)
	}
}

// oneSlot returns a store that runs one statement of each kind at a time,
// whose batches give up on a lock after 200ms.
func oneSlot(t *testing.T) (*testDB, *pgstore.Store) {
	t.Helper()
	restore := pgstore.SetBatchLockTimeout("200ms")
	defer restore() // the statements are made in New
	db := newTestDB(t, 8)
	s := db.store(t)
	pgstore.SetInFlight(s, 1, nil)
	return db, s
}

// TestBatchBehindDoTx: a batch that waits for a key DoTx holds gives up
// after the lock timeout and its calls run alone, so that DoTx's function
// can itself claim and complete other keys through the same store (with
// one slot, it would otherwise wait for itself).
func TestBatchBehindDoTx(t *testing.T) {
	db, s := oneSlot(t)
	ctx := t.Context()
	k, inner := key(t, "order"), key(t, "payment")
	other := make(chan once.ClaimResult, 1)
	ex, err := s.DoTx(ctx, k, nil, func(ctx context.Context, tx pgx.Tx) (once.Result, error) {
		go func() {
			res, err := s.Claim(context.Background(), claimReq(k, "", time.Hour, time.Hour))
			if err != nil {
				t.Error(err)
			}
			other <- res
		}()
		waitLocked(t, db, 1) // the claim of k holds the only slot, waiting for this transaction
		r, err := s.Claim(ctx, claimReq(inner, "", time.Hour, time.Hour))
		if err != nil {
			return once.Result{}, err
		}
		return once.Result{Data: []byte("placed")}, s.Complete(ctx, inner, r.Token, once.Result{Data: []byte("paid")})
	})
	if err != nil || ex.Replayed {
		t.Fatalf("DoTx = %+v, %v", ex, err)
	}
	if res := <-other; res.Outcome != once.Completed || string(res.Record.Result.Data) != "placed" {
		t.Errorf("concurrent claim of the DoTx key: %v %q, want the committed result", res.Outcome, res.Record.Result.Data)
	}
}

// TestBatchCallerLeaves: a call whose context ends while it is queued
// returns at once and is never run.
func TestBatchCallerLeaves(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	var sizes batchSizes
	open := gated(t, db, s, &sizes, "claim")
	k := key(t, "left")
	cctx, cancel := context.WithCancel(t.Context())
	var returned atomic.Bool
	errc := make(chan error, 1)
	go func() {
		_, err := s.Claim(cctx, claimReq(k, "", time.Hour, time.Hour))
		returned.Store(true)
		errc <- err
	}()
	waitFor(t, "the claim to queue", func() bool { return pgstore.Queued(s) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, once.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Claim after its context ended = %v, want ErrUnavailable wrapping context.Canceled", err)
	}
	open()
	if _, err := s.Get(t.Context(), k); !errors.Is(err, once.ErrNotFound) {
		t.Errorf("Get of the abandoned call's key = %v, want ErrNotFound: the claim was never run", err)
	}
}

// TestBatchClose: Close fails the queued calls with ErrClosed and returns.
func TestBatchClose(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.open(t, pgstore.Config{}, 8)
	var sizes batchSizes
	pgstore.SetInFlight(s, 1, sizes.add)
	g := key(t, "gate")
	r := mustClaim(t, s, claimReq(g, "", time.Hour, time.Hour), once.Acquired)
	if err := s.Release(t.Context(), g, r.Token); err != nil {
		t.Fatal(err)
	}
	release := hold(t, db, g)
	defer release()
	errc := make(chan error, 3)
	for _, id := range []string{"gate", "a", "b"} {
		k := g
		if id != "gate" {
			k = key(t, id)
		}
		go func() { _, err := s.Claim(context.Background(), claimReq(k, "", time.Hour, time.Hour)); errc <- err }()
		if id == "gate" {
			waitLocked(t, db, 1)
		}
	}
	waitFor(t, "the claims to queue", func() bool { return pgstore.Queued(s) == 2 })
	s.Close()
	for range 3 {
		if err := <-errc; !errors.Is(err, once.ErrClosed) {
			t.Errorf("queued Claim at Close = %v, want ErrClosed", err)
		}
	}
}

// TestBatchedClaimsOfOneKey: claims of one key queued together run as one
// claim in the statement; the others are answered as if they ran just after
// it, except one that would acquire the key, which runs in the next batch.
func TestBatchedClaimsOfOneKey(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	ctx := t.Context()
	fresh, abandoned := key(t, "fresh"), key(t, "abandoned")
	mustClaim(t, s, claimReq(abandoned, "a", time.Millisecond, time.Hour), once.Acquired)
	time.Sleep(20 * time.Millisecond) // the lease passes

	var sizes batchSizes
	open := gated(t, db, s, &sizes, "claim")
	type tc struct {
		name  string
		req   once.ClaimRequest
		want  once.Outcome
		token uint64
	}
	retry := func(r once.ClaimRequest) once.ClaimRequest { r.Policy = once.AbandonRetry; return r }
	cases := []tc{
		{"first", claimReq(fresh, "a", time.Hour, time.Hour), once.Acquired, 1},
		{"same fingerprint", claimReq(fresh, "a", time.Hour, time.Hour), once.InProgress, 1},
		{"other fingerprint", claimReq(fresh, "b", time.Hour, time.Hour), once.Mismatch, 1},
		{"no fingerprint, retry", retry(claimReq(fresh, "", time.Hour, time.Hour)), once.InProgress, 1},
		{"abandoned", claimReq(abandoned, "a", time.Hour, time.Hour), once.Abandoned, 1},
		{"abandoned, retry", retry(claimReq(abandoned, "a", time.Hour, time.Hour)), once.Acquired, 2},
	}
	results := make([]once.ClaimResult, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Go(func() { results[i], errs[i] = s.Claim(ctx, c.req) })
		waitFor(t, "the claim to queue", func() bool { return pgstore.Queued(s) == i+1 })
	}
	open()
	wg.Wait()
	for i, c := range cases {
		res, err := results[i], errs[i]
		if err != nil || res.Outcome != c.want || res.Record.Token != c.token {
			t.Errorf("%s: %v token %d, %v; want %v token %d", c.name, res.Outcome, res.Record.Token, err, c.want, c.token)
		}
		if c.want == once.InProgress && res.RetryAfter <= 0 {
			t.Errorf("%s: RetryAfter %v", c.name, res.RetryAfter)
		}
	}
	if got := sizes.get("claim"); len(got) < 2 || got[len(got)-2] != 2 || got[len(got)-1] != 1 {
		t.Errorf("claim batches %v, want one of the two keys, then the retry alone", got)
	}
	if res := mustClaim(t, s, claimReq(abandoned, "a", time.Hour, time.Hour), once.InProgress); res.Record.Token != 2 {
		t.Errorf("after the takeover: token %d, want 2", res.Record.Token)
	}
}

// TestBatchCompleteBehindLock: a completion that waits for a row another
// transaction holds gives up its batch after the lock timeout and waits
// alone, so that the completions of other keys go on.
func TestBatchCompleteBehindLock(t *testing.T) {
	db, s := oneSlot(t)
	ctx := t.Context()
	held, other := key(t, "held"), key(t, "other")
	rh := mustClaim(t, s, claimReq(held, "", time.Hour, time.Hour), once.Acquired)
	ro := mustClaim(t, s, claimReq(other, "", time.Hour, time.Hour), once.Acquired)
	release := hold(t, db, held)
	errc := make(chan error, 1)
	go func() { errc <- s.Complete(ctx, held, rh.Token, once.Result{Data: []byte("x")}) }()
	waitLocked(t, db, 1)
	if err := s.Complete(ctx, other, ro.Token, once.Result{Data: []byte("y")}); err != nil {
		t.Fatalf("Complete of another key behind a held row: %v", err)
	}
	select {
	case err := <-errc:
		t.Fatalf("Complete of the held row returned %v before the row was released", err)
	default:
	}
	release()
	if err := <-errc; err != nil {
		t.Fatalf("Complete of the held row: %v", err)
	}
	mustClaim(t, s, claimReq(held, "", time.Hour, time.Hour), once.Completed)
}

// TestBatchedFollowersOwnTheirResults: claims of one completed key in one
// batch each get a result of their own; the first caller changing its copy
// at once changes nobody else's (race detector, and the replays' bytes).
func TestBatchedFollowersOwnTheirResults(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	ctx := t.Context()
	k := key(t, "done")
	r := mustClaim(t, s, claimReq(k, "a", time.Hour, time.Hour), once.Acquired)
	if err := s.Complete(ctx, k, r.Token, once.Result{Data: []byte("stored"), Meta: map[string]string{"m": "1"}}); err != nil {
		t.Fatal(err)
	}
	var sizes batchSizes
	open := gated(t, db, s, &sizes, "claim")
	const n = 4
	results := make([]once.ClaimResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = s.Claim(ctx, claimReq(k, "a", time.Hour, time.Hour))
			if i == 0 && errs[i] == nil {
				// The lead's caller owns its result: it may change it.
				results[i].Record.Result.Data[0] = 'X'
				results[i].Record.Result.Meta["m"] = "changed"
			}
		})
		waitFor(t, "the claim to queue", func() bool { return pgstore.Queued(s) == i+1 })
	}
	open()
	wg.Wait()
	for i := 1; i < n; i++ {
		got := results[i].Record.Result
		if errs[i] != nil || results[i].Outcome != once.Completed || string(got.Data) != "stored" || got.Meta["m"] != "1" {
			t.Errorf("claim %d: %v %q %v, %v; want the stored result", i, results[i].Outcome, got.Data, got.Meta, errs[i])
		}
	}
}

// TestBatchPoisonedRow: a row no statement can process (an infinite time,
// as a hand edit could leave) fails the calls of its key alone, not those
// batched with it.
func TestBatchPoisonedRow(t *testing.T) {
	db := newTestDB(t, 8)
	s := db.store(t)
	ctx := t.Context()
	records := pgx.Identifier{db.schema, "once_records"}.Sanitize()
	for _, tc := range []struct{ name, set string }{
		// The claim's own arithmetic fails in the server.
		{"server error", "state = 3, purge_at = 'infinity'"},
		// The statement succeeds; the row's time does not fit a time.Time.
		{"scan error", "lease_expires_at = 'infinity'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad, good := key(t, "bad"), key(t, "good")
			mustClaim(t, s, claimReq(bad, "", time.Hour, time.Hour), once.Acquired)
			if _, err := db.pool.Exec(ctx, "UPDATE "+records+" SET "+tc.set+" WHERE scope = $1 AND key = $2", []byte(bad.Scope), bad.ID); err != nil {
				t.Fatal(err)
			}
			var sizes batchSizes
			open := gated(t, db, s, &sizes, "claim")
			var badErr, goodErr error
			var goodRes once.ClaimResult
			var wg sync.WaitGroup
			wg.Go(func() { _, badErr = s.Claim(ctx, claimReq(bad, "", time.Hour, time.Hour)) })
			waitFor(t, "the claim to queue", func() bool { return pgstore.Queued(s) == 1 })
			wg.Go(func() { goodRes, goodErr = s.Claim(ctx, claimReq(good, "", time.Hour, time.Hour)) })
			waitFor(t, "the claim to queue", func() bool { return pgstore.Queued(s) == 2 })
			open()
			wg.Wait()
			if goodErr != nil || goodRes.Outcome != once.Acquired || goodRes.Token != 1 {
				t.Errorf("claim batched with the poisoned key: %v token %d, %v; want Acquired token 1", goodRes.Outcome, goodRes.Token, goodErr)
			}
			if !errors.Is(badErr, once.ErrUnavailable) {
				t.Errorf("claim of the poisoned key: %v, want ErrUnavailable", badErr)
			}
			if got := sizes.get("claim"); len(got) < 2 || got[len(got)-1] != 2 {
				t.Errorf("claim batches %v, want the gate, then the two keys together", got)
			}
			pgstore.SetInFlight(s, 2, nil)
		})
	}
}
