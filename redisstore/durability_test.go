package redisstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// TestAOFKillRestart: with appendfsync always, a redis-server killed with
// SIGKILL in the middle of a Claim/Complete load loses no acknowledged
// Complete and no acknowledged Claim once restarted on the same directory.
func TestAOFKillRestart(t *testing.T) {
	needBinaries(t, "redis-server")
	srv := startRedis(t, t.TempDir(), freePort(t), "--appendonly", "yes", "--appendfsync", "always")
	url := "redis://" + srv.addr() + "/0?dial_timeout=500ms"
	s := openTest(t, url, Config{Prefix: "aof:"})

	var mu sync.Mutex
	claimed := map[string]uint64{} // acknowledged claims: key ID → token
	completed := map[string]string{}
	var acked atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	const workers = 32
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if !loadOne(s, id, &mu, claimed, completed) {
					return
				}
				acked.Add(1)
			}
		}()
	}
	waitUntil(t, 20*time.Second, "500 acknowledged completions", func() bool { return acked.Load() >= 500 })
	srv.kill() // SIGKILL, mid-load
	stop.Store(true)
	wg.Wait()
	srv.restart()

	check := openTest(t, url, Config{Prefix: "aof:"})
	for id, token := range claimed {
		r, err := check.Get(ctx, once.Key{ID: id})
		if err != nil || r.Token != token {
			t.Fatalf("acknowledged claim %s (token %d) lost: %+v, %v", id, token, r, err)
		}
	}
	for id, want := range completed {
		res := mustClaim(t, check, claimReq(once.Key{ID: id}, time.Minute, time.Hour))
		if res.Outcome != once.Completed || string(res.Record.Result.Data) != want || res.Record.Result.Meta["id"] != id {
			t.Fatalf("acknowledged completion %s lost: %v %+v", id, res.Outcome, res.Record)
		}
	}
	t.Logf("%d acknowledged claims and %d acknowledged completions survived SIGKILL", len(claimed), len(completed))
}

// loadOne claims id and completes it, recording what was acknowledged. It
// returns false once the server is gone.
func loadOne(s *Store, id string, mu *sync.Mutex, claimed map[string]uint64, completed map[string]string) bool {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	k := once.Key{ID: id}
	res, err := s.Claim(c, claimReq(k, time.Minute, time.Hour))
	if err != nil {
		return false
	}
	mu.Lock()
	claimed[id] = res.Token
	mu.Unlock()
	data := strings.Repeat(id, 4)
	if err := s.Complete(c, k, res.Token, once.Result{Data: []byte(data), Meta: map[string]string{"id": id}}); err != nil {
		return false
	}
	mu.Lock()
	completed[id] = data
	mu.Unlock()
	return true
}

// TestWaitReplicas: with a real replica, wait_replicas=1 writes succeed and
// are on the replica when they return; with the replica gone they fail with
// ErrUnavailable.
func TestWaitReplicas(t *testing.T) {
	needBinaries(t, "redis-server")
	dir := t.TempDir()
	primary := startRedis(t, dir+"/primary", freePort(t), "--appendonly", "no", "--repl-diskless-sync-delay", "0")
	replica := startRedis(t, dir+"/replica", freePort(t), "--appendonly", "no",
		"--replicaof", "127.0.0.1", fmt.Sprint(primary.port))
	waitUntil(t, 20*time.Second, "the replica to sync", func() bool {
		info, err := replica.command("INFO replication")
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	s := openTest(t, "redis://"+primary.addr()+"/0?wait_replicas=1&wait_timeout=5s", Config{})
	// Get is a read-only script: it runs on the replica too.
	onReplica, err := Open(ctx, "redis://"+replica.addr()+"/0", Config{Prefix: s.prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer onReplica.Close()
	k := freshKey(t)
	res := mustClaim(t, s, claimReq(k, time.Minute, time.Hour))
	var r once.Record
	if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte("replicated")}); err != nil {
		t.Fatal(err)
	}
	r, err = onReplica.Get(ctx, k)
	if err != nil || r.State != once.StateCompleted || string(r.Result.Data) != "replicated" {
		t.Fatalf("replica has %+v, %v right after Complete returned", r, err)
	}
	if applied, _, err := s.Advance(ctx, "", "v", 7); err != nil || !applied {
		t.Fatalf("Advance: %v %v", applied, err)
	}
	// The script cache is per server: a fresh primary falls back to EVAL.
	if reply, err := primary.command("SCRIPT FLUSH"); err != nil || reply != "+OK" {
		t.Fatalf("SCRIPT FLUSH: %q, %v", reply, err)
	}
	wantOutcome(t, mustClaim(t, s, claimReq(freshKey(t), time.Minute, time.Hour)), once.Acquired)
	replica.kill()
	short, err := New(s.client, Config{Prefix: s.prefix, WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	k2 := freshKey(t)
	_, err = short.Claim(ctx, claimReq(k2, time.Minute, time.Hour))
	wantErr(t, err, once.ErrUnavailable)
	if !strings.Contains(err.Error(), "0 of 1 replicas") {
		t.Fatalf("error %q does not say how many replicas acknowledged", err)
	}
}
