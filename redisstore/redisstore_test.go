package redisstore

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
)

var ctx = context.Background()

func TestClaimFreshThenInProgress(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	before := time.Now()
	res := mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("fp"), Lease: 10 * time.Second, Retention: time.Hour})
	wantOutcome(t, res, once.Acquired)
	r := res.Record
	if res.Token != 1 || r.Token != 1 || r.Attempts != 1 || r.State != once.StateInProgress || r.Key != k {
		t.Fatalf("fresh claim: %+v", res)
	}
	if !bytes.Equal(r.Fingerprint, []byte("fp")) || r.Lease != 10*time.Second {
		t.Fatalf("fingerprint %q lease %v", r.Fingerprint, r.Lease)
	}
	// The server's clock, not ours, but the two are on one machine here.
	if d := r.CreatedAt.Sub(before); d < -2*time.Second || d > 2*time.Second {
		t.Fatalf("CreatedAt %v is %v from the client clock", r.CreatedAt, d)
	}
	if r.LeaseExpiresAt != r.CreatedAt.Add(10*time.Second) || r.ExpiresAt != r.CreatedAt.Add(time.Hour) || r.UpdatedAt != r.CreatedAt {
		t.Fatalf("times: %+v", r)
	}
	got, err := s.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != 1 || got.LeaseExpiresAt != r.LeaseExpiresAt || !got.CompletedAt.IsZero() {
		t.Fatalf("Get: %+v, want %+v", got, r)
	}
	res = mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("fp"), Lease: time.Second, Retention: time.Hour})
	wantOutcome(t, res, once.InProgress)
	if res.RetryAfter <= 9*time.Second || res.RetryAfter > 10*time.Second || res.Token != 0 {
		t.Fatalf("in progress: RetryAfter %v token %d", res.RetryAfter, res.Token)
	}
}

func TestMismatchComesFirst(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("a"), Lease: time.Minute, Retention: time.Hour})
	wantOutcome(t, mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("b"), Lease: time.Minute, Retention: time.Hour}), once.Mismatch)
	// An empty fingerprint opts out of the check.
	wantOutcome(t, mustClaim(t, s, claimReq(k, time.Minute, time.Hour)), once.InProgress)
	if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte("done")}); err != nil {
		t.Fatal(err)
	}
	mm := mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("b"), Lease: time.Minute, Retention: time.Hour})
	wantOutcome(t, mm, once.Mismatch)
	if string(mm.Record.Result.Data) != "done" || string(mm.Record.Fingerprint) != "a" {
		t.Fatalf("mismatch record: %+v", mm.Record)
	}
	wantOutcome(t, mustClaim(t, s, claimReq(k, time.Minute, time.Hour)), once.Completed)
}

func TestCompleteReplaysAndFences(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	result := once.Result{Data: []byte("body\x00\xff"), Meta: map[string]string{"status": "201", "b\x00in": "v\xff"}}
	wantErr(t, s.Complete(ctx, k, res.Token+1, result), once.ErrFenced)
	if err := s.Complete(ctx, k, res.Token, result); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, k, res.Token, result.Clone()); err != nil {
		t.Fatalf("repeat with equal result: %v", err)
	}
	wantErr(t, s.Complete(ctx, k, res.Token, once.Result{Data: []byte("other")}), once.ErrFenced)
	wantErr(t, s.Complete(ctx, k, res.Token, once.Result{Data: result.Data}), once.ErrFenced)
	wantErr(t, s.Release(ctx, k, res.Token), once.ErrFenced)
	wantErr(t, s.Extend(ctx, k, res.Token, time.Minute), once.ErrFenced)
	c := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	wantOutcome(t, c, once.Completed)
	if !c.Record.Result.Equal(result) || c.Record.State != once.StateCompleted || c.Record.CompletedAt.IsZero() {
		t.Fatalf("replayed %+v", c.Record)
	}
	if c.Record.CompletedAt != c.Record.UpdatedAt || c.Record.CompletedAt.Before(c.Record.CreatedAt) {
		t.Fatalf("times %+v", c.Record)
	}
}

func TestEmptyResultsAreEqual(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	if err := s.Complete(ctx, k, res.Token, once.Result{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte{}, Meta: map[string]string{}}); err != nil {
		t.Fatalf("empty vs nil: %v", err)
	}
	wantErr(t, s.Complete(ctx, k, res.Token, once.Result{Meta: map[string]string{"": ""}}), once.ErrFenced)
}

func TestReleaseLetsTheNextClaimIn(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	first := mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("fp"), Lease: time.Minute, Retention: time.Hour})
	wantErr(t, s.Release(ctx, k, 99), once.ErrFenced)
	for range 2 { // releasing twice is a no-op
		if err := s.Release(ctx, k, first.Token); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, k)
	if err != nil || got.State != once.StateReleased {
		t.Fatalf("Get after release: %+v, %v", got, err)
	}
	wantErr(t, s.Complete(ctx, k, first.Token, once.Result{}), once.ErrFenced)
	wantErr(t, s.Extend(ctx, k, first.Token, time.Minute), once.ErrFenced)
	// A released record takes any fingerprint.
	second := mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("other"), Lease: time.Minute, Retention: time.Hour})
	wantOutcome(t, second, once.Acquired)
	r := second.Record
	if second.Token != 2 || r.Attempts != 2 || !r.CreatedAt.Equal(first.Record.CreatedAt) || string(r.Fingerprint) != "other" {
		t.Fatalf("after release: %+v", second)
	}
	wantErr(t, s.Release(ctx, k, first.Token), once.ErrFenced)
}

func TestAbandoned(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	first := mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("fp"), Lease: 50 * time.Millisecond, Retention: time.Hour})
	time.Sleep(80 * time.Millisecond)
	ab := mustClaim(t, s, once.ClaimRequest{Key: k, Fingerprint: []byte("fp"), Lease: time.Minute, Retention: time.Hour})
	wantOutcome(t, ab, once.Abandoned)
	if ab.Record.Token != 1 || ab.RetryAfter != 0 {
		t.Fatalf("abandoned: %+v", ab)
	}
	// The holder whose lease passed, but whom nobody took over, still holds.
	if err := s.Extend(ctx, k, first.Token, 50*time.Millisecond); err != nil {
		t.Fatalf("late extend: %v", err)
	}
	time.Sleep(80 * time.Millisecond)
	// AbandonRetry takes over and keeps the fingerprint when none is given.
	retry := mustClaim(t, s, once.ClaimRequest{Key: k, Lease: time.Minute, Retention: time.Hour, Policy: once.AbandonRetry})
	wantOutcome(t, retry, once.Acquired)
	if retry.Token != 2 || retry.Record.Attempts != 2 || string(retry.Record.Fingerprint) != "fp" {
		t.Fatalf("take over: %+v", retry)
	}
	wantErr(t, s.Complete(ctx, k, first.Token, once.Result{}), once.ErrFenced)
	wantErr(t, s.Release(ctx, k, first.Token), once.ErrFenced)
	if err := s.Complete(ctx, k, retry.Token, once.Result{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

func TestLateCompleteSucceeds(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, 30*time.Millisecond, time.Hour))
	time.Sleep(50 * time.Millisecond)
	if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte("late")}); err != nil {
		t.Fatalf("complete after lease: %v", err)
	}
}

func TestExtend(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, 300*time.Millisecond, 600*time.Millisecond))
	wantErr(t, s.Extend(ctx, k, res.Token, 0), once.ErrInvalidArgument)
	wantErr(t, s.Extend(ctx, k, res.Token+1, time.Second), once.ErrFenced)
	if err := s.Extend(ctx, k, res.Token, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	r, err := s.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if r.Lease != 5*time.Second || r.ExpiresAt != r.LeaseExpiresAt || r.UpdatedAt != r.LeaseExpiresAt.Add(-5*time.Second) {
		t.Fatalf("after extend: %+v", r)
	}
	// Retention was pushed out to the new lease: the record outlives its
	// original 600ms.
	time.Sleep(700 * time.Millisecond)
	wantOutcome(t, mustClaim(t, s, claimReq(k, time.Second, time.Second)), once.InProgress)
	pttl := s.pttl(t, k)
	if want := time.Until(r.ExpiresAt.Add(5 * time.Second)); pttl < want-time.Second || pttl > want+time.Second {
		t.Fatalf("PTTL %v, want about %v (retention + lease)", pttl, want)
	}
}

func TestRetentionAndTombstone(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	// Retention shorter than the lease is raised to the lease.
	first := mustClaim(t, s, claimReq(k, 500*time.Millisecond, time.Millisecond))
	if first.Record.ExpiresAt != first.Record.LeaseExpiresAt {
		t.Fatalf("retention not raised: %+v", first.Record)
	}
	if err := s.Complete(ctx, k, first.Token, once.Result{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	// Past retention (but not retention + lease): absent to every operation, but the token counter lives.
	_, err := s.Get(ctx, k)
	wantErr(t, err, once.ErrNotFound)
	wantErr(t, s.Complete(ctx, k, first.Token, once.Result{Data: []byte("x")}), once.ErrFenced)
	wantErr(t, s.Delete(ctx, k), once.ErrNotFound)
	second := mustClaim(t, s, claimReq(k, 50*time.Millisecond, 50*time.Millisecond))
	wantOutcome(t, second, once.Acquired)
	if second.Token != 2 || second.Record.Attempts != 1 || !second.Record.CreatedAt.After(first.Record.CreatedAt) || second.Record.Result.Data != nil {
		t.Fatalf("over a tombstone: %+v", second)
	}
	// Past the first record's retention + lease (the purge time never moves
	// earlier, whatever the second claim asked) the key is purged: the
	// counter starts again.
	time.Sleep(time.Until(first.Record.PurgeAt()) + 150*time.Millisecond)
	if n := s.exists(t, k); n != 0 {
		t.Fatalf("key still exists after PurgeAt")
	}
	third := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	if third.Token != 1 {
		t.Fatalf("after purge: token %d", third.Token)
	}
}

func TestDeleteKeepsTheCounter(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	wantErr(t, s.Delete(ctx, k), once.ErrNotFound)
	first := mustClaim(t, s, claimReq(k, 10*time.Second, time.Hour))
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, k)
	wantErr(t, err, once.ErrNotFound)
	wantErr(t, s.Delete(ctx, k), once.ErrNotFound)
	wantErr(t, s.Complete(ctx, k, first.Token, once.Result{}), once.ErrFenced)
	// The tombstone lasts the remaining lease plus the lease.
	if pttl := s.pttl(t, k); pttl < 19*time.Second || pttl > 21*time.Second {
		t.Fatalf("tombstone PTTL %v, want about 20s", pttl)
	}
	second := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	if second.Token != 2 || second.Record.Attempts != 1 {
		t.Fatalf("after delete: %+v", second)
	}
}

func TestAdvance(t *testing.T) {
	s := newTestStore(t)
	steps := []struct {
		scope, entity string
		v             uint64
		applied       bool
		cur           uint64
	}{
		{"s", "sub_1", 0, false, 0},
		{"s", "sub_1", 5, true, 5},
		{"s", "sub_1", 3, false, 5},
		{"s", "sub_1", 5, false, 5},
		{"s", "sub_1", 1 << 53, true, 1 << 53},
		{"s", "sub_1", 1<<53 + 1, true, 1<<53 + 1},
		{"s", "sub_1", math.MaxUint64 - 1, true, math.MaxUint64 - 1},
		{"s", "sub_1", 9999999999, false, math.MaxUint64 - 1},
		{"s", "sub_1", math.MaxUint64, true, math.MaxUint64},
		{"other", "sub_1", 1, true, 1},
		{"", "sub_1", 2, true, 2},
	}
	for i, st := range steps {
		applied, cur, err := s.Advance(ctx, st.scope, st.entity, st.v)
		if err != nil || applied != st.applied || cur != st.cur {
			t.Fatalf("step %d: Advance(%q,%q,%d) = %v, %d, %v; want %v, %d", i, st.scope, st.entity, st.v, applied, cur, err, st.applied, st.cur)
		}
	}
	_, _, err := s.Advance(ctx, "s", "", 1)
	wantErr(t, err, once.ErrInvalidKey)
}

func TestBadInputAndClose(t *testing.T) {
	s := newTestStore(t)
	bad := []once.Key{{ID: ""}, {ID: "tab\there"}, {ID: string(make([]byte, 256))}, {Scope: string(make([]byte, 1025)), ID: "x"}}
	for _, k := range bad {
		_, err := s.Claim(ctx, claimReq(k, time.Second, time.Second))
		wantErr(t, err, once.ErrInvalidKey)
		wantErr(t, s.Complete(ctx, k, 1, once.Result{}), once.ErrInvalidKey)
		wantErr(t, s.Release(ctx, k, 1), once.ErrInvalidKey)
		wantErr(t, s.Extend(ctx, k, 1, time.Second), once.ErrInvalidKey)
		wantErr(t, s.Delete(ctx, k), once.ErrInvalidKey)
		_, err = s.Get(ctx, k)
		wantErr(t, err, once.ErrInvalidKey)
		_, _, err = s.Watch(ctx, k)
		wantErr(t, err, once.ErrInvalidKey)
	}
	k := freshKey(t)
	_, err := s.Claim(ctx, claimReq(k, 0, time.Second))
	wantErr(t, err, once.ErrInvalidArgument)
	_, err = s.Claim(ctx, claimReq(k, time.Second, -1))
	wantErr(t, err, once.ErrInvalidArgument)
	if _, err := s.Get(ctx, k); !errors.Is(err, once.ErrNotFound) {
		t.Fatalf("bad claims stored something: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	_, err = s.Claim(ctx, claimReq(k, time.Second, time.Second))
	wantErr(t, err, once.ErrClosed)
	wantErr(t, s.Complete(ctx, k, 1, once.Result{}), once.ErrClosed)
	_, err = s.Get(ctx, k)
	wantErr(t, err, once.ErrClosed)
	_, _, err = s.Advance(ctx, "", "e", 1)
	wantErr(t, err, once.ErrClosed)
	wantErr(t, s.Ping(ctx), once.ErrClosed)
	_, _, err = s.Watch(ctx, k)
	wantErr(t, err, once.ErrClosed)
}

func TestHugeDurations(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)))
	if res.Record.Lease != maxDuration || !res.Record.ExpiresAt.After(time.Now().AddDate(99, 0, 0)) {
		t.Fatalf("huge lease: %+v", res.Record)
	}
	if err := s.Extend(ctx, k, res.Token, time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Get(ctx, k)
	if d := r.LeaseExpiresAt.Sub(r.UpdatedAt); d != time.Microsecond {
		t.Fatalf("1ns lease rounds up to %v", d)
	}
	if r.Lease < res.Record.Lease {
		t.Fatalf("Extend moved the purge time earlier: lease slack %v, was %v", r.Lease, res.Record.Lease)
	}
}

func TestScopesAreSeparate(t *testing.T) {
	s := newTestStore(t)
	a := once.Key{Scope: "a", ID: "same"}
	b := once.Key{Scope: "b", ID: "same"}
	// Length-prefixing keeps ("ab","c") apart from ("a","bc").
	c := once.Key{Scope: "ab", ID: "c"}
	d := once.Key{Scope: "a", ID: "bc"}
	for _, k := range []once.Key{a, b, c, d} {
		wantOutcome(t, mustClaim(t, s, claimReq(k, time.Minute, time.Minute)), once.Acquired)
	}
}

// TestClaimStorm: hundreds of goroutines released together claim one key;
// exactly one acquires it.
func TestClaimStorm(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	const n = 300
	var acquired, inProgress atomic.Int32
	var start, done sync.WaitGroup
	start.Add(1)
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			res, err := s.Claim(ctx, claimReq(k, time.Minute, time.Minute))
			if err != nil {
				t.Error(err)
				return
			}
			switch res.Outcome {
			case once.Acquired:
				acquired.Add(1)
			case once.InProgress:
				inProgress.Add(1)
			}
		}()
	}
	start.Done()
	done.Wait()
	if acquired.Load() != 1 || inProgress.Load() != n-1 {
		t.Fatalf("acquired %d, in progress %d; want 1, %d", acquired.Load(), inProgress.Load(), n-1)
	}
}

// TestTakeoverStorm: many goroutines take over one abandoned key with
// AbandonRetry; exactly one wins, and the tokens never repeat.
func TestTakeoverStorm(t *testing.T) {
	s := newTestStore(t)
	k := freshKey(t)
	mustClaim(t, s, claimReq(k, 20*time.Millisecond, time.Minute))
	time.Sleep(40 * time.Millisecond)
	const n = 200
	var acquired atomic.Int32
	var start, done sync.WaitGroup
	start.Add(1)
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			req := claimReq(k, time.Minute, time.Minute)
			req.Policy = once.AbandonRetry
			res, err := s.Claim(ctx, req)
			if err != nil {
				t.Error(err)
				return
			}
			if res.Outcome == once.Acquired {
				acquired.Add(1)
				if res.Token != 2 {
					t.Errorf("token %d, want 2", res.Token)
				}
			}
		}()
	}
	start.Done()
	done.Wait()
	if acquired.Load() != 1 {
		t.Fatalf("acquired %d times, want 1", acquired.Load())
	}
}

func TestWaitReplicasWithoutReplicas(t *testing.T) {
	s := newTestStore(t)
	// The same server, but every write waits for a replica it does not have.
	w, err := New(s.client, Config{Prefix: s.prefix, WaitReplicas: 1, WaitTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	k := freshKey(t)
	_, err = w.Claim(ctx, claimReq(k, time.Minute, time.Hour))
	wantErr(t, err, once.ErrUnavailable)
	// The unacknowledged claim was released again.
	r, err := s.Get(ctx, k)
	if err != nil || r.State != once.StateReleased {
		t.Fatalf("after an unacknowledged claim: %+v, %v", r, err)
	}
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	err = w.Complete(ctx, k, res.Token, once.Result{Data: []byte("x")})
	wantErr(t, err, once.ErrUnavailable)
	// The write happened; repeating it is a no-op.
	if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// Script outcomes still win over the wait.
	wantErr(t, w.Release(ctx, k, 99), once.ErrFenced)
	_, _, err = w.Advance(ctx, "", "e", 1)
	wantErr(t, err, once.ErrUnavailable)
	if _, err := w.Get(ctx, k); err != nil {
		t.Fatalf("Get does not wait: %v", err)
	}
}

func (s *Store) pttl(tb testing.TB, k once.Key) time.Duration {
	tb.Helper()
	rec := s.recordKey(k)
	ms, err := s.client.Do(ctx, s.client.B().Pttl().Key(rec).Build()).AsInt64()
	if err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ms) * time.Millisecond
}

func (s *Store) exists(tb testing.TB, k once.Key) int64 {
	tb.Helper()
	rec := s.recordKey(k)
	n, err := s.client.Do(ctx, s.client.B().Exists().Key(rec).Build()).AsInt64()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestCorruptRecord: a record key holding something else (a foreign string,
// a hash) makes that key's operations fail with ErrUnavailable, and leaves
// the others alone.
func TestCorruptRecord(t *testing.T) {
	s := newTestStore(t)
	str, hash := freshKey(t), freshKey(t)
	if err := s.client.Do(ctx, s.client.B().Set().Key(s.recordKey(str)).Value("not a record").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if err := s.client.Do(ctx, s.client.B().Hset().Key(s.recordKey(hash)).FieldValue().FieldValue("s", "1").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []once.Key{str, hash} {
		_, err := s.Claim(ctx, claimReq(k, time.Minute, time.Hour))
		wantErr(t, err, once.ErrUnavailable)
		wantErr(t, s.Complete(ctx, k, 1, once.Result{}), once.ErrUnavailable)
		_, err = s.Get(ctx, k)
		wantErr(t, err, once.ErrUnavailable)
	}
	wantOutcome(t, mustClaim(t, s, claimReq(freshKey(t), time.Minute, time.Hour)), once.Acquired)
}

// TestReplayOutOfMemory: a Redis at its maxmemory (noeviction) refuses new
// claims but still replays stored results.
func TestReplayOutOfMemory(t *testing.T) {
	needBinaries(t, "redis-server")
	srv := startRedis(t, t.TempDir(), freePort(t), "--maxmemory-policy", "noeviction")
	s := openTest(t, "redis://"+srv.addr()+"/0", Config{})
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte("stored")}); err != nil {
		t.Fatal(err)
	}
	if reply, err := srv.command("CONFIG SET maxmemory 1"); err != nil || reply != "+OK" {
		t.Fatalf("CONFIG SET maxmemory: %q, %v", reply, err)
	}
	replay := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	if replay.Outcome != once.Completed || string(replay.Record.Result.Data) != "stored" {
		t.Fatalf("replay out of memory: %+v", replay)
	}
	_, err := s.Claim(ctx, claimReq(freshKey(t), time.Minute, time.Hour))
	wantErr(t, err, once.ErrUnavailable)
	if !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("fresh claim out of memory: %v, want Redis's OOM error", err)
	}
}
