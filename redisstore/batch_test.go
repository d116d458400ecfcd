package redisstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// TestBatchedWrites: goroutines that claim and complete at once share script
// calls, and a key holding something else fails only its own writes.
func TestBatchedWrites(t *testing.T) {
	needBinaries(t, "redis-server")
	srv := startRedis(t, t.TempDir(), freePort(t))
	s := openTest(t, "redis://"+srv.addr()+"/0", Config{})
	bad := once.Key{ID: "bad"}
	if err := s.client.Do(ctx, s.client.B().Set().Key(s.recordKey(bad)).Value("not a record").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 64, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := claimComplete(s, once.Key{ID: fmt.Sprintf("%d-%d", g, i)}); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Claim(ctx, claimReq(bad, time.Minute, time.Minute)); !errors.Is(err, once.ErrUnavailable) {
					t.Errorf("claim of a foreign value: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	writes := goroutines * each * 3
	if calls := scriptCalls(t, srv); calls >= writes {
		t.Fatalf("%d writes made %d script calls: no batching", writes, calls)
	} else {
		t.Logf("%d writes in %d script calls", writes, calls)
	}
}

func claimComplete(s *Store, k once.Key) error {
	res, err := s.Claim(ctx, claimReq(k, time.Minute, time.Minute))
	if err != nil || res.Outcome != once.Acquired {
		return fmt.Errorf("claim %v: %v, %v", k, res.Outcome, err)
	}
	if err := s.Complete(ctx, k, res.Token, once.Result{Data: []byte(k.ID)}); err != nil {
		return fmt.Errorf("complete %v: %v", k, err)
	}
	r, err := s.Get(ctx, k)
	if err != nil || string(r.Result.Data) != k.ID {
		return fmt.Errorf("get %v: %+v, %v", k, r, err)
	}
	return nil
}

// scriptCalls returns how many EVALSHA and EVAL commands srv has run.
func scriptCalls(t *testing.T, srv *redisServer) int {
	info, err := srv.command("INFO commandstats")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_evalsha:") && !strings.HasPrefix(line, "cmdstat_eval:") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(line[strings.IndexByte(line, ':')+1:], "calls="), ",")
		c, err := strconv.Atoi(calls)
		if err != nil {
			t.Fatalf("commandstats line %q", line)
		}
		n += c
	}
	return n
}
