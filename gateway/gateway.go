// Package gateway is once's reverse proxy ("once serve"): oncehttp's
// middleware around an httputil.ReverseProxy, so that any HTTP API, in any
// language, gets idempotency keys without changing a line. It also serves the
// operator listener: Prometheus metrics, health and readiness.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/oncehq/once"
	"github.com/oncehq/once/oncehttp"
)

// Defaults for the zero values of Config.
const (
	// DefaultUpstreamTimeout bounds an upstream call: past it the outcome
	// is unknown (504).
	DefaultUpstreamTimeout = 60 * time.Second
	// DefaultShutdownTimeout bounds how long shutdown waits for in-flight
	// requests.
	DefaultShutdownTimeout = 30 * time.Second
)

// Config configures a Gateway. Zero values mean the documented defaults.
type Config struct {
	// Upstream is the origin's base URL. Nil means no proxy: only the
	// operator API is served.
	Upstream *url.URL
	// Store keeps the records. Required. The Gateway does not close it.
	Store once.Store
	// TTL is how long a key's record is kept (0: 24h).
	TTL time.Duration
	// Lease is how long an execution holds its key before it counts as
	// abandoned; it is renewed while the upstream works (0: 30s).
	Lease time.Duration
	// Wait is how long a concurrent duplicate waits for the first request
	// (0: 10s; negative: not at all, 409 at once).
	Wait time.Duration
	// Abandoned says what to do with a key whose holder died mid-request.
	Abandoned once.AbandonPolicy
	// Methods, KeyOptional, ScopeHeader, MaxRequestBody and MaxResponseBody
	// are as in oncehttp.Config.
	Methods         []string
	KeyOptional     bool
	ScopeHeader     string
	MaxRequestBody  int64
	MaxResponseBody int64
	// Rules are per-route settings (see ParseConfig).
	Rules []Rule
	// UpstreamTimeout bounds each upstream call (0: DefaultUpstreamTimeout;
	// negative: none).
	UpstreamTimeout time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests on shutdown (0:
	// DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// Transport carries upstream requests. Nil means a transport tuned for
	// one upstream.
	Transport http.RoundTripper
	// Logger receives the request log (one line per keyed request) and
	// warnings. Nil means discard.
	Logger *slog.Logger
}

// Gateway is a configured proxy and operator API. Create it with New, run it
// with Serve, and close it after Serve returns.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	store   once.Store // instrumented
	execs   []*once.Executor
	handler http.Handler
	api     *http.ServeMux
	metrics *metrics
	closed  sync.Once
	// draining is set when shutdown begins: /readyz fails from then on, so
	// that a load balancer stops sending requests.
	draining atomic.Bool
}

// New returns a Gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	if cfg.Store == nil {
		return nil, errors.New("gateway: Config.Store is required")
	}
	if cfg.Upstream != nil && (cfg.Upstream.Scheme != "http" && cfg.Upstream.Scheme != "https" || cfg.Upstream.Host == "") {
		return nil, fmt.Errorf("gateway: upstream %q: want an http:// or https:// URL with a host", cfg.Upstream)
	}
	cfg = withDefaults(cfg)
	g := &Gateway{cfg: cfg, log: cfg.Logger, metrics: newMetrics()}
	g.store = g.metrics.instrumentStore(cfg.Store)
	def := g.newExecutor(cfg.TTL)
	hc := oncehttp.Config{
		Methods: cfg.Methods, KeyOptional: cfg.KeyOptional, ScopeHeader: cfg.ScopeHeader,
		MaxRequestBody: cfg.MaxRequestBody, MaxResponseBody: cfg.MaxResponseBody,
		Logger: cfg.Logger, Observe: g.metrics.observe,
	}
	for _, r := range cfg.Rules {
		hc.Routes = append(hc.Routes, g.route(r))
	}
	if cfg.Upstream != nil {
		proxy := newProxy(cfg.Upstream, cfg.Transport, cfg.UpstreamTimeout, cfg.Logger)
		g.handler = oncehttp.Middleware(def, hc)(g.metrics.instrumentUpstream(proxy))
	}
	g.api = g.newAPI()
	return g, nil
}

func withDefaults(cfg Config) Config {
	if cfg.UpstreamTimeout == 0 {
		cfg.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Transport == nil {
		cfg.Transport = newTransport()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// newExecutor returns an executor over the gateway's store with retention ttl.
func (g *Gateway) newExecutor(ttl time.Duration) *once.Executor {
	e := once.New(g.store, once.Config{
		Lease: g.cfg.Lease, Retention: ttl, Wait: g.cfg.Wait, Abandoned: g.cfg.Abandoned, Logger: g.log,
	})
	g.execs = append(g.execs, e)
	return e
}

// route turns a rule into an oncehttp.Route; a rule with its own TTL gets an
// executor of its own.
func (g *Gateway) route(r Rule) oncehttp.Route {
	rt := oncehttp.Route{Prefix: r.Prefix, Methods: r.Methods, Key: r.Key}
	if r.Required != nil {
		optional := !*r.Required
		rt.KeyOptional = &optional
	}
	if r.TTL > 0 && r.TTL != g.cfg.TTL {
		rt.Executor = g.newExecutor(r.TTL)
	}
	return rt
}

// Handler returns the proxy: every path belongs to the upstream. It is nil
// when Config.Upstream is nil.
func (g *Gateway) Handler() http.Handler { return g.handler }

// APIMux returns the operator API's mux (/metrics, /healthz, /readyz). Other
// operator endpoints, such as the key API, may be added to it before Serve.
func (g *Gateway) APIMux() *http.ServeMux { return g.api }

// Registry returns the registry holding the gateway's metrics.
func (g *Gateway) Registry() *prometheus.Registry { return g.metrics.reg }

// Serve serves the proxy on proxyLn (if not nil; it needs Config.Upstream) and
// the operator API on apiLn (if not nil) until ctx is done, then shuts down
// gracefully: it stops accepting, lets in-flight requests finish and store
// their records (up to Config.ShutdownTimeout), and returns nil. It returns
// an error if a listener fails. Serve closes the listeners.
func (g *Gateway) Serve(ctx context.Context, proxyLn, apiLn net.Listener) error {
	if proxyLn != nil && g.handler == nil {
		return errors.New("gateway: a proxy listener needs Config.Upstream")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	var proxySrv, apiSrv *http.Server
	if proxyLn != nil {
		proxySrv = g.server(g.handler)
		go func() { errc <- serveErr("proxy", proxySrv.Serve(problemListener{proxyLn})) }()
	}
	if apiLn != nil {
		apiSrv = g.server(g.api)
		go func() { errc <- serveErr("api", apiSrv.Serve(problemListener{apiLn})) }()
	}
	go g.sweep(ctx)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	return errors.Join(err, g.shutdown(proxySrv, apiSrv))
}

func serveErr(name string, err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("gateway: %s listener: %w", name, err)
}

// server returns a server for h. Slow and idle clients are bounded by
// ReadHeaderTimeout, IdleTimeout and, for keyed request bodies, oncehttp's
// BodyIdleTimeout (a bound on each pause, not on the whole body). There is
// no ReadTimeout, which would cut off a slow but live upload of a large
// body, and no WriteTimeout, which would cut off a slow upstream's response
// (UpstreamTimeout bounds that); see "Slow and idle clients" in
// docs/gateway.md.
func (g *Gateway) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
}

// shutdown stops the proxy first, so that in-flight requests complete their
// records, then the executors and the operator API, all within
// Config.ShutdownTimeout. A request still in flight then is left as a crash
// would leave it: its key stays in progress until its lease ends, and is
// abandoned then (a retry gets outcome-unknown, or executes again under
// Abandoned retry); shutdown returns ErrShutdownTimeout.
func (g *Gateway) shutdown(proxySrv, apiSrv *http.Server) error {
	g.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if proxySrv != nil {
		if err := proxySrv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			errs = append(errs, err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- g.Close() }()
	select {
	case err := <-closed:
		errs = append(errs, err)
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("%w (%v): requests still in flight are left in progress; their keys are abandoned when their leases end", ErrShutdownTimeout, g.cfg.ShutdownTimeout))
	}
	if apiSrv != nil {
		if err := apiSrv.Shutdown(ctx); err != nil {
			apiSrv.Close()
		}
	}
	return errors.Join(errs...)
}

// ErrShutdownTimeout is returned by Serve when requests were still in flight
// at the end of Config.ShutdownTimeout.
var ErrShutdownTimeout = errors.New("gateway: shutdown timeout")

// Close closes the gateway's executors, waiting for executions in flight. It
// does not close the store. It is safe to call more than once.
func (g *Gateway) Close() error {
	g.closed.Do(func() {
		for _, e := range g.execs {
			_ = e.Close()
		}
	})
	return nil
}

// sweepEvery is how often a store that reclaims space on request is swept.
const sweepEvery = time.Minute

// sweep reclaims expired records of a Sweeper store until ctx is done.
func (g *Gateway) sweep(ctx context.Context) {
	sw, ok := g.cfg.Store.(once.Sweeper)
	if !ok {
		return
	}
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			n, err := sw.Sweep(ctx, 1000)
			if err != nil {
				g.log.Warn("once: sweep failed", "error", err)
			}
			if err != nil || n < 1000 {
				break
			}
		}
	}
}
