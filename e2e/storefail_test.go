package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
)

// Flags of the gateways whose store goes away: a short wait, so that a retry
// of a key left in progress answers 409 quickly, and a lease that outlasts
// the outage, so that an execution under way keeps its key.
var failureFlags = []string{"--lease", "5s", "--wait", "1s", "--ttl", "10m"}

// TestRedisGoesAway kills the Redis server under three gateways mid-load and
// restarts it on the same port. While it is gone, requests get 503
// store-unavailable and nothing is forwarded; every key the upstream saw was
// claimed in the store; the gateways recover by themselves. The server is
// the test's own, with appendfsync always, so that what it acknowledged
// survives the kill (the shared server on 6379 is never touched).
func TestRedisGoesAway(t *testing.T) {
	t.Parallel()
	srv := startRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	up := newUpstream(t, 5*time.Millisecond)
	gws := startGateways(t, 3, srv.url(), up.url, failureFlags...)
	l := startLoad(gws, newKeys("redis-down"))
	defer l.finish()
	l.waitFor(t, "executions before the kill", func(s loadStats) bool { return s.executed >= 30 })
	st := startStraddler(t, gws, up, l.keys)
	srv.kill()
	down := time.Now()
	waitUntil(t, 20*time.Second, "every gateway's /readyz answers 503", allReady(gws, 503))
	notReady := time.Since(down)
	l.waitFor(t, "503s while Redis is gone", func(s loadStats) bool { return s.unavailable >= 30 })
	time.Sleep(time.Until(down.Add(2 * straddleTime))) // the straddler's Complete meets the outage
	srv.start()
	outage, back := time.Since(down), time.Now()
	waitUntil(t, 30*time.Second, "every gateway's /readyz answers 200 again", allReady(gws, 200))
	t.Logf("Redis was gone for %v (every /readyz 503 after %v); every /readyz 200 again %v after the restart",
		outage.Round(time.Millisecond), notReady.Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	before := l.stats()
	l.waitFor(t, "executions after the restart", func(s loadStats) bool { return s.executed >= before.executed+30 })
	results := l.finish()
	st.check(t, gws, up, outage)
	checkLoad(t, results, up, l.keys, openStore(t, srv.url()))
	retryAll(t, results, gws, up)
	checkExecutes(t, gws, up)
}

// TestPostgresBackendsTerminated terminates the gateways' own PostgreSQL
// backends (found by an application_name of this run) again and again
// mid-load. Requests get 503 store-unavailable or succeed, never executing a
// key twice; every key the upstream saw was claimed; the gateways recover.
func TestPostgresBackendsTerminated(t *testing.T) {
	t.Parallel()
	base := testenv.PostgresURL(t)
	app := "once-e2e-" + runID + "-" + randHex(3)
	storeURL := withQuery(t, base, "application_name", app)
	up := newUpstream(t, 5*time.Millisecond)
	gws := startGateways(t, 3, storeURL, up.url, failureFlags...)
	l := startLoad(gws, newKeys("pg-terminate"))
	defer l.finish()
	l.waitFor(t, "executions before terminating", func(s loadStats) bool { return s.executed >= 30 })
	st := startStraddler(t, gws, up, l.keys)
	n := terminateFor(t, base, app, 1500*time.Millisecond)
	waitUntil(t, 30*time.Second, "every gateway's /readyz answers 200 again", allReady(gws, 200))
	before := l.stats()
	l.waitFor(t, "executions after terminating", func(s loadStats) bool { return s.executed >= before.executed+30 })
	results := l.finish()
	st.check(t, gws, up, 0)
	s := l.stats()
	t.Logf("terminated %d backends; %d requests: %d executed, %d answered 503", n, len(results), s.executed, s.unavailable)
	checkLoad(t, results, up, l.keys, openStore(t, base))
	retryAll(t, results, gws, up)
	checkExecutes(t, gws, up)
}

// straddler is a request whose upstream call spans the start of the store's
// outage: its Complete meets the outage and must be retried until the store
// is back.
type straddler struct {
	key  string
	done chan answer
}

// answer is a reply or the error that took its place.
type answer struct {
	r   reply
	err error
}

// straddleTime is how long the straddler's upstream call lasts after the
// outage starts: the outages last longer.
const straddleTime = 400 * time.Millisecond

// startStraddler sends the straddler through the first gateway and returns
// once the upstream has it.
func startStraddler(t *testing.T, gws []*gateway, up *upstream, keys keyset) *straddler {
	t.Helper()
	s := &straddler{key: keys.id(0), done: make(chan answer, 1)}
	arrived := up.slow(s.key, straddleTime)
	go func() {
		r, err := post(gws[0].proxy, s.key, orderBody(0))
		s.done <- answer{r, err}
	}()
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the straddling request never reached the upstream")
	}
	return s
}

// check checks that the straddler executed once and, once the store is back,
// replays through another gateway. Executor.Do retries the Complete for 10s:
// only an outage longer than that may leave the result unstored.
func (s *straddler) check(t *testing.T, gws []*gateway, up *upstream, outage time.Duration) {
	t.Helper()
	var a answer
	select {
	case a = <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the straddling request was never answered")
	}
	if a.err != nil || a.r.status != 201 || a.r.replayed() {
		t.Fatalf("the request executing when the store went away: %v %v, want 201", a.r, a.err)
	}
	r := mustPost(t, gws[1], s.key, orderBody(0))
	switch {
	case r.status == 201 && r.replayed() && r.body == a.r.body:
	case r.status == 409 && outage > 9*time.Second:
		t.Logf("the outage (%v) outlasted the Complete's retries: %v", outage, r)
	default:
		t.Errorf("retry of the request executing when the store went away: %v, want the replay of %v", r, a.r)
	}
	if n := up.count(s.key); n != 1 {
		t.Errorf("the request executing when the store went away reached the upstream %d times", n)
	}
}

// terminateFor terminates, every 20ms for d, the backends whose
// application_name is app, and returns how many it terminated.
func terminateFor(t *testing.T, dsn, app string, d time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(context.Background())
	total := 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
			FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
		if err != nil {
			t.Fatalf("terminate the gateways' backends: %v", err)
		}
		total += n
	}
	if total == 0 {
		t.Fatalf("no backend had application_name %s: the gateways did not use it", app)
	}
	return total
}

// load sends requests, each with a fresh key, round-robin across the
// gateways, until finish. It is open-loop: a request starts every
// loadInterval whatever the others do (up to loadInFlight at once), so that
// requests held up in the gateway (a Complete retried while the store is
// gone) do not stop new ones from arriving.
type load struct {
	keys keyset
	gws  []*gateway
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	next atomic.Int64

	executed, unavailable, other atomic.Int64

	mu      sync.Mutex
	results []loadResult
}

// The load's pace: at most 125 requests a second, which bounds the requests
// to check and the gateways' logs.
const (
	loadInterval = 8 * time.Millisecond
	loadInFlight = 32
)

// loadResult is one request of the load.
type loadResult struct {
	key  string
	body string
	gw   *gateway
	r    reply
	err  error
	took time.Duration
}

type loadStats struct{ executed, unavailable, other int64 }

func startLoad(gws []*gateway, keys keyset) *load {
	l := &load{keys: keys, gws: gws, stop: make(chan struct{})}
	l.wg.Go(l.run)
	return l
}

func (l *load) run() {
	slots := make(chan struct{}, loadInFlight)
	tick := time.NewTicker(loadInterval)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default: // as many in flight as allowed: skip this tick
			continue
		}
		i := int(l.next.Add(1))
		l.wg.Go(func() {
			defer func() { <-slots }()
			l.send(i)
		})
	}
}

// send sends the load's request number i.
func (l *load) send(i int) {
	key, body, g := l.keys.id(i), orderBody(i), l.gws[i%len(l.gws)]
	start := time.Now()
	r, err := post(g.proxy, key, body)
	l.count(r, err)
	l.mu.Lock()
	l.results = append(l.results, loadResult{key, body, g, r, err, time.Since(start)})
	l.mu.Unlock()
}

func (l *load) count(r reply, err error) {
	switch {
	case err == nil && r.status == 201:
		l.executed.Add(1)
	case err == nil && r.status == 503:
		l.unavailable.Add(1)
	default:
		l.other.Add(1)
	}
}

func (l *load) stats() loadStats {
	return loadStats{l.executed.Load(), l.unavailable.Load(), l.other.Load()}
}

// waitFor waits until cond holds of the load's counts, for up to 30 seconds.
func (l *load) waitFor(t *testing.T, what string, cond func(loadStats) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(l.stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (load so far: %s)", what, statsString(l))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func statsString(l *load) string {
	s := l.stats()
	return fmt.Sprintf("%d executed, %d 503, %d other", s.executed, s.unavailable, s.other)
}

// finish stops the load, waits for the requests in flight and returns
// every request's result. Safe to repeat.
func (l *load) finish() []loadResult {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.results
}

// checkLoad checks the load's answers against the upstream and the store:
// an execution (201) called the upstream once; a 503 is store-unavailable
// problem+json and forwarded nothing; every key the upstream saw has a
// record in the store (it was claimed first).
func checkLoad(t *testing.T, results []loadResult, up *upstream, keys keyset, st once.Store) {
	t.Helper()
	for _, res := range results {
		calls := up.count(res.key)
		switch r := res.r; {
		case res.err != nil:
			t.Errorf("key %s via %s: %v", res.key, res.gw.name, res.err)
		case r.status == 201 && !r.replayed():
			if calls != 1 {
				t.Errorf("key %s via %s: executed, and the upstream was called %d times", res.key, res.gw.name, calls)
			}
		case r.status == 503 && r.problem() == "store-unavailable":
			if calls != 0 {
				t.Errorf("key %s via %s: 503, yet forwarded %d times", res.key, res.gw.name, calls)
			}
			if r.header.Get("Retry-After") == "" {
				t.Errorf("key %s via %s: 503 without Retry-After", res.key, res.gw.name)
			}
		default:
			t.Errorf("key %s via %s: %v, want 201 or 503 store-unavailable", res.key, res.gw.name, r)
		}
	}
	logLatencies(t, results)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for key, n := range up.seen(string(keys)) {
		if n != 1 {
			t.Errorf("key %s: the upstream was called %d times", key, n)
		}
		rec, err := st.Get(ctx, once.Key{ID: key})
		switch {
		case errors.Is(err, once.ErrNotFound):
			t.Errorf("key %s reached the upstream but was never claimed: the store has no record", key)
		case err != nil:
			t.Errorf("key %s: store Get: %v", key, err)
		case rec.State != once.StateInProgress && rec.State != once.StateCompleted:
			t.Errorf("key %s reached the upstream; its record is %v", key, rec.State)
		}
	}
}

// logLatencies logs the slowest answer of each status: a store that went
// away should be answered 503 at once, not after a hang.
func logLatencies(t *testing.T, results []loadResult) {
	t.Helper()
	slowest := map[int]time.Duration{}
	for _, res := range results {
		slowest[res.r.status] = max(slowest[res.r.status], res.took)
	}
	t.Logf("slowest answers: 201 in %v, 503 in %v", slowest[201].Round(time.Millisecond), slowest[503].Round(time.Millisecond))
}

// retryAll retries every request of the load through another gateway, after
// the store came back: an executed key replays (or, if its result could not
// be stored, answers 409 without executing again); a key answered 503
// executes now, or answers 409 if its claim was stored although its answer
// was lost. No key reaches the upstream twice.
func retryAll(t *testing.T, results []loadResult, gws []*gateway, up *upstream) {
	t.Helper()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts := map[int]int{} // by the first answer's status
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if retryOne(t, results[i], gws, up) {
					mu.Lock()
					conflicts[results[i].r.status]++
					mu.Unlock()
				}
			}
		})
	}
	for i := range results {
		if results[i].err == nil {
			work <- i
		}
	}
	close(work)
	wg.Wait()
	t.Logf("retried %d requests after the store came back; answered 409 (claimed, outcome not stored): %d first answered 201, %d first answered 503",
		len(results), conflicts[201], conflicts[503])
}

// retryOne retries one request and reports whether it answered 409.
func retryOne(t *testing.T, res loadResult, gws []*gateway, up *upstream) (conflict bool) {
	g := gws[0]
	if res.gw == g {
		g = gws[1]
	}
	r, err := post(g.proxy, res.key, res.body)
	if err != nil {
		t.Errorf("retry of %s via %s: %v", res.key, g.name, err)
		return false
	}
	if r.status == 409 && (r.problem() == "request-in-progress" || r.problem() == "outcome-unknown") {
		conflict = true
		if res.r.status == 201 {
			t.Logf("key %s executed via %s but its result was not stored: the retry via %s answered 409 %s", res.key, res.gw.name, g.name, r.problem())
		}
	} else if res.r.status == 201 && (r.status != 201 || !r.replayed() || r.body != res.r.body) {
		t.Errorf("retry of %s (executed via %s) via %s: %v, want the replay of %v", res.key, res.gw.name, g.name, r, res.r)
	} else if res.r.status == 503 && (r.status != 201 || r.replayed()) {
		t.Errorf("retry of %s (503 via %s) via %s: %v, want 201 or 409", res.key, res.gw.name, g.name, r)
	}
	if n := up.count(res.key); n > 1 || (n == 0 && !conflict) {
		t.Errorf("retry of %s via %s: %v; the upstream was called %d times", res.key, g.name, r, n)
	}
	return conflict
}

// checkExecutes checks that a new key executes through every gateway.
func checkExecutes(t *testing.T, gws []*gateway, up *upstream) {
	t.Helper()
	keys := newKeys("after")
	for i, g := range gws {
		if r := mustPost(t, g, keys.id(i), orderBody(i)); r.status != 201 || r.replayed() || up.count(keys.id(i)) != 1 {
			t.Errorf("new key via %s after recovery: %v, upstream calls %d; want 201 executed once", g.name, r, up.count(keys.id(i)))
		}
	}
}
