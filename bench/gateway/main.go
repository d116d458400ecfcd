// Command gateway benchmarks "once serve" against a bare httputil.ReverseProxy
// in front of the same trivial upstream, side by side in one run, alternating
// rounds so that both see the same machine. The gateway runs on the embedded
// durable store (file:) with a fresh key per request, and writes its request
// log as once serve does (JSON, here to io.Discard). With several -store
// entries, each is a gateway of its own in the rotation, and each is also
// compared with the first (issue 4: Redis and PostgreSQL against the
// embedded store). Then it fires 1,000
// identical requests at once through the gateway at a slow upstream, over
// connections dialled beforehand, and counts upstream calls and distinct
// answers.
//
//	go run ./bench/gateway [-clients 32] [-rounds 6] [-duration 2s] [-store file[,mem,redis://...,postgres://...]] [-log json] [-procs]
//
// With -procs, each part runs in a process of its own (see procs.go).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/stores"
)

func main() {
	clients := flag.Int("clients", 32, "concurrent clients")
	rounds := flag.Int("rounds", 6, "rounds per contender (alternating)")
	duration := flag.Duration("duration", 2*time.Second, "length of one round")
	storeKind := flag.String("store", "file", "gateway stores, comma-separated, each a contender: file (embedded, durable), mem, or a store URL (redis://..., postgres://...)")
	identical := flag.Int("identical", 1000, "identical concurrent requests in the coalescing check (0: skip)")
	latency := flag.Duration("latency", 100*time.Millisecond, "upstream latency in the coalescing check")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	logFormat := flag.String("log", "json", "gateway request log: json (once serve's handler, to io.Discard) or none")
	procs := flag.Bool("procs", false, "run the upstream, the bare proxy, each gateway (the once serve binary) and each round's load in processes of their own")
	role := flag.String("role", "", "internal (-procs): run one part: upstream, bare or load")
	listen := flag.String("listen", "", "internal (-procs): address of the upstream or bare proxy")
	target := flag.String("target", "", "internal (-procs): URL the bare proxy or the load goes to")
	flag.Parse()
	if *role != "" {
		if err := runRole(*role, *listen, *target, *clients, *duration); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *procs {
		if err := runProcs(*clients, *rounds, *duration, *storeKind); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	logger := slog.New(gateway.NewLogHandler(io.Discard, nil))
	if *logFormat == "none" {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := run(*clients, *rounds, *duration, *storeKind, logger, *identical, *latency); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(clients, rounds int, duration time.Duration, storeKind string, logger *slog.Logger, identical int, latency time.Duration) error {
	up := &upstream{latency: latency}
	upURL, stopUp := serve(up)
	defer stopUp()
	bareURL, stopBare := serve(bareProxy(upURL))
	defer stopBare()
	dir, err := os.MkdirTemp("", "once-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sent := &sentTransport{RoundTripper: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second}}
	type contender struct {
		r   *result
		url *url.URL
	}
	bare := &result{name: "bare ReverseProxy"}
	order := []contender{{bare, bareURL}}
	var onces []*result
	for _, kind := range strings.Split(storeKind, ",") {
		store, err := stores.Open(context.Background(), storeURL(kind, dir))
		if err != nil {
			return err
		}
		defer store.Close()
		gw, err := gateway.New(gateway.Config{Upstream: upURL, Store: store, Logger: logger, Transport: sent})
		if err != nil {
			return err
		}
		u, stop := serveGateway(gw)
		defer stop()
		r := &result{name: "once serve, " + storeName(kind)}
		onces = append(onces, r)
		order = append(order, contender{r, u})
	}

	fmt.Printf("gateway benchmark: %d clients, %d alternating rounds of %v each, once on %s, GOMAXPROCS=%d\n\n",
		clients, rounds, duration, storeKind, runtimeProcs())
	for i := range rounds {
		for j := range order {
			c := order[(i+j)%len(order)] // a different contender goes first each round
			c.r.add(load(c.url, clients, duration))
		}
	}
	if rounds > 0 {
		report(bare, onces)
	}
	onceURL := order[1].url
	if identical > 0 {
		return coalesce(onceURL, up, sent, identical, latency)
	}
	return nil
}

// sentTransport is the gateway's transport (the settings of its own, for
// one upstream), noting when the gateway sent its latest /slow request.
type sentTransport struct {
	http.RoundTripper
	slowAt atomic.Int64 // UnixNano
}

func (t *sentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/slow" {
		t.slowAt.Store(time.Now().UnixNano())
	}
	return t.RoundTripper.RoundTrip(r)
}

// upstream answers POST / at once and POST /slow after latency, counting
// the slow calls.
type upstream struct {
	latency time.Duration
	slow    atomic.Int64
	slowAt  atomic.Int64 // UnixNano of the latest slow call's arrival
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/slow" {
		u.slow.Add(1)
		u.slowAt.Store(time.Now().UnixNano())
		time.Sleep(u.latency)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"ok":true,"id":"ord_123"}`))
}

// bareProxy is the baseline: a ReverseProxy set up as the gateway's is
// (Rewrite, the same transport limits, pooled copy buffers), without once.
func bareProxy(target *url.URL) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport:  &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second},
		BufferPool: pool{},
	}
}

type pool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (pool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (pool) Put(b []byte) { buffers.Put(&b) }

func serve(h http.Handler) (*url.URL, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	u, _ := url.Parse("http://" + ln.Addr().String())
	return u, func() { srv.Close() }
}

func serveGateway(gw *gateway.Gateway) (*url.URL, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { gw.Serve(ctx, ln, nil); close(done) }()
	u, _ := url.Parse("http://" + ln.Addr().String())
	return u, func() { cancel(); <-done }
}

// round is one contender's round: requests done and their latencies.
type round struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration // this process's CPU time (clients, proxy, upstream)
	lat     []time.Duration
	errs    int
}

type result struct {
	name   string
	rounds []round
}

func (r *result) add(x round) { r.rounds = append(r.rounds, x) }

func (r *result) throughputs() []float64 {
	var out []float64
	for _, x := range r.rounds {
		out = append(out, float64(x.n)/x.elapsed.Seconds())
	}
	slices.Sort(out)
	return out
}

func (r *result) latencies() []time.Duration {
	var all []time.Duration
	for _, x := range r.rounds {
		all = append(all, x.lat...)
	}
	slices.Sort(all)
	return all
}

// cpuPerRequest is the process's CPU time per request over all rounds: a
// figure that other load on the machine moves far less than throughput.
func (r *result) cpuPerRequest() time.Duration {
	var cpu time.Duration
	n := 0
	for _, x := range r.rounds {
		cpu += x.cpu
		n += x.n
	}
	if n == 0 {
		return 0
	}
	return cpu / time.Duration(n)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r *result) errors() int {
	n := 0
	for _, x := range r.rounds {
		n += x.errs
	}
	return n
}

// load runs clients loops of POSTs, each with a fresh key, for d.
func load(target *url.URL, clients int, d time.Duration) round {
	tr := &http.Transport{MaxIdleConnsPerHost: clients * 2}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var all round
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	start, cpu0 := time.Now(), cpuTime()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := post(c, target.String()+"/", newKey()); err != nil {
					errs++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all.lat = append(all.lat, lat...)
			all.errs += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	all.elapsed, all.cpu = time.Since(start), cpuTime()-cpu0
	all.n = len(all.lat)
	return all
}

func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func post(c *http.Client, u, key string) error {
	req, err := http.NewRequest("POST", u, stringsReader(`{"item":"book","qty":1}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

func pct(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func median(s []float64) float64 {
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// report prints every contender's row, each gateway's ratio to the bare
// proxy, and, with several stores, each one's ratio to the first.
func report(bare *result, onces []*result) {
	fmt.Printf("| contender | median req/s | rounds (req/s) | p50 | p99 | CPU/request | errors |\n|---|---|---|---|---|---|---|\n")
	for _, r := range append([]*result{bare}, onces...) {
		t, lt := r.throughputs(), r.latencies()
		fmt.Printf("| %s | %.0f | %s | %v | %v | %v | %d |\n", r.name, median(t), fmtRates(t), round3(pct(lt, .5)), round3(pct(lt, .99)),
			r.cpuPerRequest().Round(time.Microsecond), r.errors())
	}
	bt, bl := bare.throughputs(), bare.latencies()
	for _, o := range onces {
		ot, ol := o.throughputs(), o.latencies()
		fmt.Printf("\n%s:\n", o.name)
		fmt.Printf("  throughput ratio once/bare: %.2f (goal ≥ 0.80)\n", median(ot)/median(bt))
		if o != onces[0] {
			fmt.Printf("  throughput ratio to %s: %.2f\n", onces[0].name, median(ot)/median(onces[0].throughputs()))
		}
		fmt.Printf("  added latency: p50 %v, p99 %v\n", round3(pct(ol, .5)-pct(bl, .5)), round3(pct(ol, .99)-pct(bl, .99)))
		fmt.Printf("  CPU per request (clients + proxy + upstream): once/bare %.2f, once adds %v\n",
			float64(o.cpuPerRequest())/float64(bare.cpuPerRequest()), (o.cpuPerRequest() - bare.cpuPerRequest()).Round(time.Microsecond))
	}
	fmt.Println()
}

// storeURL is the store URL of a -store entry.
func storeURL(kind, dir string) string {
	switch kind {
	case "file":
		return "file:" + filepath.Join(dir, "once.db")
	case "mem":
		return "mem:"
	}
	return kind
}

// storeName is how a -store entry is shown: URLs without their user info.
func storeName(kind string) string {
	u, err := url.Parse(kind)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return kind
	}
	u.User = nil
	return u.Scheme + "://" + u.Host
}

func fmtRates(s []float64) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.0f", v)
	}
	return out
}

func round3(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }

// coalesce fires n identical requests through the gateway at once and
// checks that the upstream was called once and every answer is identical.
// As "once race" does, it dials the connections first (and serves one
// request on each, so that the gateway has accepted them all), writes the
// request out to bytes, and holds the senders at a barrier: after it, each
// request is one write on a connection of its own. It times from the release
// to the last answer, so it measures the gateway, not TCP handshakes.
func coalesce(target *url.URL, up *upstream, sent *sentTransport, n int, latency time.Duration) error {
	conns, err := dialWarm(target, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return err
	}
	key := newKey()
	body := `{"item":"book","qty":1}`
	wire := []byte(fmt.Sprintf("POST /slow HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n%s",
		target.Host, key, len(body), body))
	answers := make([]string, n)
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	release := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i, c := range conns {
		go func() {
			defer done.Done()
			ready.Done()
			<-release
			answers[i], errs[i] = c.roundTrip(wire)
		}()
	}
	ready.Wait()
	before := up.slow.Load()
	t0, cpu0 := time.Now(), cpuTime()
	close(release)
	done.Wait()
	took, cpu := time.Since(t0), cpuTime()-cpu0
	distinct := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			return fmt.Errorf("identical request %d: %w", i, errs[i])
		}
		distinct[answers[i]] = true
	}
	calls := up.slow.Load() - before
	forwarded := time.Unix(0, sent.slowAt.Load()).Sub(t0)
	arrived := time.Unix(0, up.slowAt.Load()).Sub(t0)
	fmt.Printf("%d identical concurrent requests (upstream latency %v, pre-dialled connections, released at once): %d upstream call(s), %d distinct answer(s), all answered in %v (upstream latency + %v; goal + 50ms)\n",
		n, latency, calls, len(distinct), took.Round(time.Millisecond), (took - latency).Round(time.Millisecond))
	fmt.Printf("  the gateway forwarded the request %v after the release, the upstream (in this process, behind the gateway's goroutines) began %v after it; the last answer arrived %v after the upstream answered\n",
		forwarded.Round(time.Millisecond), (arrived - forwarded).Round(time.Millisecond), (took - arrived - latency).Round(time.Millisecond))
	fmt.Printf("  CPU time of the storm (clients, gateway, upstream, one process): %v, %v per request\n",
		cpu.Round(time.Millisecond), (cpu / time.Duration(n)).Round(time.Microsecond))
	if calls != 1 || len(distinct) != 1 {
		return fmt.Errorf("coalescing failed: %d calls, %d distinct answers", calls, len(distinct))
	}
	return nil
}

// conn is a kept-alive connection to the gateway.
type conn struct {
	net.Conn
	br *bufio.Reader
}

// roundTrip writes a request already written out and returns the status and
// body of its answer.
func (c *conn) roundTrip(wire []byte) (string, error) {
	if _, err := c.Write(wire); err != nil {
		return "", err
	}
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return fmt.Sprintf("%d %s", res.StatusCode, b), err
}

// dialWarm dials n connections to target, 64 at a time, and serves a GET on
// each.
func dialWarm(target *url.URL, n int) ([]*conn, error) {
	conns := make([]*conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	warm := []byte("GET /warm HTTP/1.1\r\nHost: " + target.Host + "\r\n\r\n")
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			nc, err := net.DialTimeout("tcp", target.Host, 10*time.Second)
			if err != nil {
				errs[i] = err
				return
			}
			conns[i] = &conn{Conn: nc, br: bufio.NewReader(nc)}
			_, errs[i] = conns[i].roundTrip(warm)
		}()
	}
	wg.Wait()
	live := conns[:0]
	for _, c := range conns {
		if c != nil {
			live = append(live, c)
		}
	}
	return live, errors.Join(errs...)
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
