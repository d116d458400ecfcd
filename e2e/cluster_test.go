package e2e

import (
	"sync"
	"testing"
	"time"
)

// TestCluster runs three gateways on one shared store: storms of identical
// requests spread across all three execute the upstream once per key, a
// record completed through one gateway replays through the others, and a
// duplicate waiting on another gateway is woken when the first completes.
func TestCluster(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s sharedStore) {
		// The upstream is slow enough that duplicates overlap the execution.
		up := newUpstream(t, 100*time.Millisecond)
		gws := startGateways(t, 3, s.url, up.url, "--wait", "30s", "--ttl", "10m")
		t.Run("storm", func(t *testing.T) { testStorm(t, gws, up) })
		t.Run("replay-elsewhere", func(t *testing.T) { testReplayElsewhere(t, gws, up) })
		t.Run("wakeup", func(t *testing.T) { testWakeup(t, gws, up, wakeBound(s)) })
	})
}

// testStorm releases 300 requests at once, round-robin across the gateways,
// on 10 keys (each key reaches every gateway, since 3 and 10 are coprime).
func testStorm(t *testing.T, gws []*gateway, up *upstream) {
	const requests, nkeys = 300, 10
	keys := newKeys("storm")
	replies := make([]reply, requests)
	errs := make([]error, requests)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			<-start
			replies[i], errs[i] = post(gws[i%len(gws)].proxy, keys.id(i%nkeys), orderBody(i%nkeys))
		})
	}
	close(start)
	wg.Wait()
	byKey := map[string][]reply{}
	for i, r := range replies {
		if errs[i] != nil {
			t.Fatalf("request %d via gateway %s: %v", i, gws[i%len(gws)].name, errs[i])
		}
		if r.status != 201 {
			t.Errorf("request %d (key %d) via gateway %s: %v, want 201", i, i%nkeys, gws[i%len(gws)].name, r)
		}
		byKey[keys.id(i%nkeys)] = append(byKey[keys.id(i%nkeys)], r)
	}
	for k := range nkeys {
		checkOneExecution(t, keys.id(k), byKey[keys.id(k)], up)
	}
}

// checkOneExecution checks the answers to one key's storm: one upstream call,
// byte-identical bodies, and exactly one answer that is not marked replayed
// (the execution itself; the others were replays or shared it).
func checkOneExecution(t *testing.T, key string, rs []reply, up *upstream) {
	t.Helper()
	if n := up.count(key); n != 1 {
		t.Errorf("key %s: the upstream was called %d times, want 1", key, n)
	}
	fresh := 0
	for _, r := range rs {
		if r.body != rs[0].body {
			t.Errorf("key %s: bodies differ:\n%s\n%s", key, rs[0].body, r.body)
		}
		if !r.replayed() {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("key %s: %d of %d answers lack Idempotent-Replayed: true, want 1 (the execution)", key, fresh, len(rs))
	}
}

// testReplayElsewhere executes a key through each gateway in turn and replays
// it through the two others; a changed body gets 422 through any of them.
func testReplayElsewhere(t *testing.T, gws []*gateway, up *upstream) {
	keys := newKeys("replay")
	for i, g := range gws {
		key := keys.id(i)
		first := mustPost(t, g, key, orderBody(i))
		if first.status != 201 || first.replayed() {
			t.Fatalf("key %d via gateway %s: %v, want 201, not replayed", i, g.name, first)
		}
		for _, other := range gws {
			if other == g {
				continue
			}
			r := mustPost(t, other, key, orderBody(i))
			if r.status != 201 || !r.replayed() || r.body != first.body {
				t.Errorf("key %d executed via %s, retried via %s: %v, want the replay of %v", i, g.name, other.name, r, first)
			}
		}
		other := gws[(i+1)%len(gws)]
		if r := mustPost(t, other, key, orderBody(i+100)); r.status != 422 || r.problem() != "idempotency-key-mismatch" {
			t.Errorf("key %d reused with another body via %s: %v, want 422 idempotency-key-mismatch", i, other.name, r)
		}
		if n := up.count(key); n != 1 {
			t.Errorf("key %d: the upstream was called %d times, want 1", i, n)
		}
	}
}

// wakeBound is how long after the first answer a woken duplicate may answer.
// A notification wakes it in milliseconds; the bound is loose, for loaded
// machines, yet below what the fallback polling (up to 2s between looks)
// often takes.
func wakeBound(s sharedStore) time.Duration {
	return time.Second
}

// testWakeup sends a duplicate to the two other gateways while the first
// executes a slow upstream call: they wait (the store's notifications wake
// them; polling is the fallback) and get the replay soon after the first
// completes. It checks the wake-up, not its speed: the bound is loose and the
// delay is logged.
func testWakeup(t *testing.T, gws []*gateway, up *upstream, bound time.Duration) {
	const hold = 800 * time.Millisecond
	key := newKeys("wake").id(0)
	arrived := up.slow(key, hold)
	first := make(chan answer, 1)
	go func() {
		r, err := post(gws[0].proxy, key, orderBody(0))
		first <- answer{r, err}
	}()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the first request never reached the upstream")
	}
	dups := make([]answer, len(gws)-1)
	var wg sync.WaitGroup
	for i := range dups {
		wg.Go(func() {
			r, err := post(gws[i+1].proxy, key, orderBody(0))
			dups[i] = answer{r, err}
		})
	}
	wg.Wait()
	a := <-first
	if a.err != nil || a.r.status != 201 || a.r.replayed() {
		t.Fatalf("first via %s: %v %v, want 201, not replayed", gws[0].name, a.r, a.err)
	}
	for i, d := range dups {
		g := gws[i+1]
		if d.err != nil || d.r.status != 201 || !d.r.replayed() || d.r.body != a.r.body {
			t.Errorf("duplicate via %s while %s executed: %v %v, want the replay of %v", g.name, gws[0].name, d.r, d.err, a.r)
			continue
		}
		delay := d.r.at.Sub(a.r.at)
		t.Logf("duplicate via gateway %s answered %v after the first request's answer (upstream held %v)", g.name, delay.Round(time.Millisecond), hold)
		if delay > bound {
			t.Errorf("duplicate via %s answered %v after the first, more than %v: not woken by the store's notification", g.name, delay, bound)
		}
	}
	if n := up.count(key); n != 1 {
		t.Errorf("the upstream was called %d times, want 1", n)
	}
}

// TestKillMidRequest SIGKILLs a gateway while the upstream executes its
// request: under the default policy (reject) the key becomes abandoned once
// the dead holder's lease passes, and the other gateways answer 409
// outcome-unknown rather than executing it again. Keys it completed before
// dying replay through the others.
func TestKillMidRequest(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, s sharedStore) {
		up := newUpstream(t, 0)
		gws := startGateways(t, 3, s.url, up.url, "--lease", "1s", "--wait", "5s", "--ttl", "10m")
		a := gws[0]
		keys := newKeys("kill")
		done, inflight := keys.id(0), keys.id(1)
		first := mustPost(t, a, done, orderBody(0))
		if first.status != 201 {
			t.Fatalf("completed key via %s: %v", a.name, first)
		}
		arrived := up.slow(inflight, 2*time.Second)
		lost := make(chan error, 1)
		go func() {
			_, err := post(a.proxy, inflight, orderBody(1))
			lost <- err
		}()
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("the in-flight request never reached the upstream")
		}
		a.kill()
		killed := time.Now()
		if err := <-lost; err == nil {
			t.Errorf("the client of the killed gateway got an answer")
		}
		for _, g := range gws[1:] {
			if r := mustPost(t, g, done, orderBody(0)); r.status != 201 || !r.replayed() || r.body != first.body {
				t.Errorf("completed key via %s after %s died: %v, want the replay of %v", g.name, a.name, r, first)
			}
		}
		// The lease (1s, renewed every 333ms) has passed by then.
		time.Sleep(time.Until(killed.Add(1500 * time.Millisecond)))
		for _, g := range gws[1:] {
			if r := mustPost(t, g, inflight, orderBody(1)); r.status != 409 || r.problem() != "outcome-unknown" {
				t.Errorf("retry via %s of the key %s held when killed: %v, want 409 outcome-unknown", g.name, a.name, r)
			}
		}
		for _, key := range []string{done, inflight} {
			if n := up.count(key); n != 1 {
				t.Errorf("key %s: the upstream was called %d times, want 1", key, n)
			}
		}
	})
}
