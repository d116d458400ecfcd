package redisstore

import (
	"bytes"
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
	if m := batchMode(s); m != BatchOn {
		t.Fatalf("batching mode %d after Open of a direct Redis, want BatchOn", m)
	}
	bad := once.Key{ID: "bad"}
	if err := s.client.Do(ctx, s.client.B().Set().Key(s.recordKey(bad)).Value("not a record").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 64, 20
	inParallel(t, goroutines, each, func(id string) error {
		if err := claimComplete(s, once.Key{ID: id}); err != nil {
			return err
		}
		if _, err := s.Claim(ctx, claimReq(bad, time.Minute, time.Minute)); !errors.Is(err, once.ErrUnavailable) {
			return fmt.Errorf("claim of a foreign value: %v", err)
		}
		return nil
	})
	writes := goroutines * each * 3
	if calls := scriptCalls(t, srv); calls >= writes {
		t.Fatalf("%d writes made %d script calls: no batching", writes, calls)
	} else {
		t.Logf("%d writes in %d script calls", writes, calls)
	}
}

// inParallel runs fn in goroutines at once, each times in each, with an ID
// unique to the call, and fails t with the errors it returns.
func inParallel(t *testing.T, goroutines, each int, fn func(id string) error) {
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := fn(fmt.Sprintf("%d-%d", g, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestBatchOff: with batch=off, every write is a script call of its own.
func TestBatchOff(t *testing.T) {
	needBinaries(t, "redis-server")
	srv := startRedis(t, t.TempDir(), freePort(t))
	s := openTest(t, "redis://"+srv.addr()+"/0?batch=off", Config{})
	if s.batch != nil {
		t.Fatal("batch=off, but the store batches")
	}
	if err := claimComplete(s, once.Key{ID: "warm-up"}); err != nil { // loads the scripts
		t.Fatal(err)
	}
	if reply, err := srv.command("CONFIG RESETSTAT"); err != nil || reply != "+OK" {
		t.Fatalf("CONFIG RESETSTAT: %q, %v", reply, err)
	}
	const goroutines, each = 32, 10
	inParallel(t, goroutines, each, func(id string) error { return claimComplete(s, once.Key{ID: id}) })
	if calls, want := scriptCalls(t, srv), goroutines*each*2; calls != want { // reads run EVALSHA_RO
		t.Fatalf("%d script calls for %d claims and completions", calls, want)
	}
}

// TestCrossSlotFallback: behind a server that refuses a call whose keys are
// in several slots (CROSSSLOT), as a proxy that shards by slot does, the
// writes of a refused call run one by one, and the store stops batching.
// A Redis Cluster of one node that holds every slot, reached through a
// redis:// URL, stands for such a proxy.
func TestCrossSlotFallback(t *testing.T) {
	needBinaries(t, "redis-server")
	srv := startClusterNode(t, t.TempDir())
	if reply, err := srv.command("CLUSTER ADDSLOTSRANGE 0 16383"); err != nil || reply != "+OK" {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %q, %v", reply, err)
	}
	waitClusterOK(t, srv)
	url := "redis://" + srv.addr() + "/0"
	t.Run("RefusedBatch", func(t *testing.T) {
		s := openTest(t, url, Config{})
		b := s.batch
		b.mu.Lock()
		b.inFlight = maxInFlight // two calls on their way: the claims queue
		b.mu.Unlock()
		errs := make(chan error, 2)
		for _, id := range []string{"a", "b"} {
			go func() { errs <- claimComplete(s, once.Key{ID: id}) }()
		}
		waitUntil(t, 5*time.Second, "two queued claims", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.queue) == 2
		})
		b.next() // sends both claims in one call, which the server refuses
		b.next()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if batchMode(s) != BatchOff {
			t.Fatal("the store still batches after CROSSSLOT")
		}
		if info, err := srv.command("INFO errorstats"); err != nil || !strings.Contains(info, "errorstat_CROSSSLOT:count=1") {
			t.Fatalf("no CROSSSLOT (%v):\n%s", err, info)
		}
	})
	t.Run("UnderLoad", func(t *testing.T) {
		s := openTest(t, url, Config{})
		inParallel(t, 64, 10, func(id string) error { return claimComplete(s, once.Key{ID: id}) })
		if batchMode(s) != BatchOff {
			t.Fatal("no batch was refused: did no batch form?")
		}
	})
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

// TestLargeResultsBatch: completions of large results that goroutines start
// at once do not all go in one call. Redis counts a command's arguments
// against its client's memory, and one that evicts clients over 40 MB
// (maxmemory-clients) would close the connection of a call carrying them
// all, failing every write on it, though each alone fits.
func TestLargeResultsBatch(t *testing.T) {
	needBinaries(t, "redis-server")
	srv := startRedis(t, t.TempDir(), freePort(t), "--maxmemory-clients", "40mb")
	s := openTest(t, "redis://"+srv.addr()+"/0", Config{})
	const goroutines, size = 32, 3 << 20
	tokens := make([]uint64, goroutines)
	for i := range tokens {
		tokens[i] = mustClaim(t, s, claimReq(once.Key{ID: strconv.Itoa(i)}, time.Minute, time.Minute)).Token
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte(i)}, size)
			<-start
			if err := s.Complete(ctx, once.Key{ID: strconv.Itoa(i)}, tokens[i], once.Result{Data: data}); err != nil {
				t.Errorf("complete %d: %v", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if info, err := srv.command("INFO stats"); err != nil || !strings.Contains(info, "evicted_clients:0") {
		t.Errorf("Redis evicted a client (%v)", err)
	}
}

// TestTakeBoundsBytes: a call carries at most maxBatchBytes of writes, but
// its first write whatever its size, and the writes keep their order.
func TestTakeBoundsBytes(t *testing.T) {
	const mib = 1 << 20
	b := &batcher{}
	for _, n := range []int{10 * mib, 5 * mib, 2 * mib, 20 * mib, 1} {
		b.queue = append(b.queue, &write{ctx: ctx, key: "k", args: []string{"complete", "1", strings.Repeat("x", n)}})
	}
	var got [][]int
	for len(b.queue) > 0 {
		var sizes []int
		for _, w := range b.take() {
			sizes = append(sizes, len(w.args[2])/mib)
		}
		got = append(got, sizes)
	}
	if want := "[[10 5] [2] [20] [0]]"; fmt.Sprint(got) != want {
		t.Fatalf("batches (MiB) %v, want %s", got, want)
	}
}
