package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/oncehq/once/gateway"
)

func init() {
	register("demo", "watch a racy API create duplicate orders, then put once in front of it (10 s, loopback only)",
		func(m *Main) Command { return &demoCommand{m: m} })
}

// demoCommand is "once demo": it needs no setup and touches nothing but
// loopback ports and a temporary directory.
type demoCommand struct{ m *Main }

// demoWindow is the racy API's gap between its check and its insert.
const demoWindow = 50 * time.Millisecond

func (c *demoCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("demo", "demo [--requests N]")
	n := fs.Int("requests", 50, "identical concurrent requests per round")
	if err := c.m.parse(fs, args); err != nil {
		return err
	}
	if *n < 2 || *n > 1000 {
		return usageError(fmt.Sprintf("--requests %d: want 2 to 1000", *n))
	}
	ctx, cancel := context.WithTimeout(ctx, 9*time.Second)
	defer cancel()
	d, err := startDemo(ctx, c.m)
	if err != nil {
		return err
	}
	defer d.close()
	direct := d.round(ctx, d.apiURL, "order-direct", *n)
	gated := d.round(ctx, d.gatewayURL, "order-through-once", *n)
	if direct.err != nil || gated.err != nil {
		return fmt.Errorf("demo: %w", firstErr(direct.err, gated.err))
	}
	printDemo(c.m.Stdout, *n, d.storeName, direct, gated)
	return nil
}

// demo is the racy API and a gateway in front of it, on loopback.
type demo struct {
	api        *racyAPI
	apiURL     string
	gatewayURL string
	storeName  string
	closers    []func()
	client     *http.Client
}

func startDemo(ctx context.Context, m *Main) (*demo, error) {
	d := &demo{api: &racyAPI{orders: map[string][]int{}},
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000}, Timeout: 8 * time.Second}}
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	apiSrv := &http.Server{Handler: d.api}
	go apiSrv.Serve(apiLn)
	d.closers = append(d.closers, func() { apiSrv.Close() })
	d.apiURL = "http://" + apiLn.Addr().String()
	if err := d.startGateway(ctx, m); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// startGateway runs a gateway on a temporary embedded store.
func (d *demo) startGateway(ctx context.Context, m *Main) error {
	dir, err := os.MkdirTemp("", "once-demo-")
	if err != nil {
		return err
	}
	d.closers = append(d.closers, func() { os.RemoveAll(dir) })
	store, err := m.openStore(ctx, "file:"+filepath.Join(dir, "once.db"))
	d.storeName = "embedded file store (temporary)"
	if err != nil {
		return fmt.Errorf("demo: temporary store: %w", err)
	}
	d.closers = append(d.closers, func() { store.Close() })
	up, _ := url.Parse(d.apiURL)
	gw, err := gateway.New(gateway.Config{Upstream: up, Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	gctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { gw.Serve(gctx, ln, nil); close(done) }()
	// Run in reverse order: the gateway stops before the store closes.
	d.closers = append(d.closers, func() { stop(); <-done })
	d.gatewayURL = "http://" + ln.Addr().String()
	return nil
}

func (d *demo) close() {
	d.client.CloseIdleConnections()
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// roundResult is what one round of identical requests did.
type roundResult struct {
	created  int // orders the API created for the key
	replays  int // answers with Idempotent-Replayed: true
	statuses map[int]int
	err      error
}

// round fires n identical requests at base at once and counts the orders the
// API created for key.
func (d *demo) round(ctx context.Context, base, key string, n int) roundResult {
	res := roundResult{statuses: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			status, replayed, err := d.createOrder(ctx, base, key)
			mu.Lock()
			defer mu.Unlock()
			res.statuses[status]++
			if replayed {
				res.replays++
			}
			if err != nil && res.err == nil {
				res.err = err
			}
		}()
	}
	close(gate)
	wg.Wait()
	res.created = d.api.created(key)
	return res
}

func (d *demo) createOrder(ctx context.Context, base, key string) (int, bool, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/orders", strings.NewReader(`{"item":"book","qty":1}`))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	res, err := d.client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	return res.StatusCode, res.Header.Get("Idempotent-Replayed") == "true", nil
}

// racyAPI creates orders with a check-then-insert that is not atomic: the
// classic bug that lets concurrent duplicates through.
type racyAPI struct {
	mu     sync.Mutex
	orders map[string][]int // by idempotency key
	next   int
}

func (a *racyAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/orders" {
		http.NotFound(w, r)
		return
	}
	io.Copy(io.Discard, r.Body)
	key := r.Header.Get("Idempotency-Key")
	a.mu.Lock()
	existing := a.orders[key]
	a.mu.Unlock()
	if len(existing) > 0 { // check...
		writeOrder(w, http.StatusOK, existing[0])
		return
	}
	time.Sleep(demoWindow) // ...the window (a slow query, a payment call)...
	a.mu.Lock()
	a.next++
	id := a.next
	a.orders[key] = append(a.orders[key], id) // ...then insert
	a.mu.Unlock()
	writeOrder(w, http.StatusCreated, id)
}

func (a *racyAPI) created(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.orders[key])
}

func writeOrder(w http.ResponseWriter, status, id int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"order_id": id, "item": "book", "qty": 1})
}

func printDemo(w io.Writer, n int, store string, direct, gated roundResult) {
	fmt.Fprintf(w, "once demo: %d identical \"create order\" requests (same Idempotency-Key), fired at once,\n", n)
	fmt.Fprintf(w, "at an API whose check-then-insert has a %v window; first straight at it, then through once.\n\n", demoWindow)
	fmt.Fprintf(w, "  %-22s %15s %11s %8s\n", "", "orders created", "duplicates", "replays")
	for _, row := range []struct {
		name string
		r    roundResult
	}{{"straight to the API", direct}, {"through once serve", gated}} {
		fmt.Fprintf(w, "  %-22s %15d %11d %8d\n", row.name, row.r.created, max(row.r.created-1, 0), row.r.replays)
	}
	fmt.Fprintf(w, "\nWithout once: %d duplicate orders for one key.\n", max(direct.created-1, 0))
	fmt.Fprintf(w, "With once:    %d order; the other %d requests waited and got its response replayed\n", gated.created, gated.replays)
	fmt.Fprintf(w, "              (Idempotent-Replayed: true). Store: %s.\n", store)
	fmt.Fprintf(w, "\nPut it in front of your API:\n  once serve --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000\n")
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
