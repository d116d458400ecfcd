package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/oncehttp"
)

func init() {
	register("serve", "run the gateway: a reverse proxy that makes keyed requests take effect once",
		func(m *Main) Command { return &serveCommand{m: m} })
}

const serveUsage = `serve --listen ADDR --upstream URL [--api-listen ADDR] [--store URL] [flags]

Proxies every request on --listen to --upstream. Requests whose method needs a
key (--methods) take effect once per Idempotency-Key and scope: retries and
concurrent duplicates get the first response replayed (Idempotent-Replayed:
true). --api-listen serves /metrics, /healthz, /readyz and the key API (/v1/,
see keyapi/openapi.json). See docs/gateway.md.`

// serveCommand is "once serve".
type serveCommand struct {
	m *Main

	listen, apiListen, upstream, store, config string
	ttl, lease, wait                           time.Duration
	upstreamTimeout, shutdownTimeout           time.Duration
	abandoned                                  policyValue
	methods                                    methodsValue
	scopeHeader, logLevel                      string
	requireKey                                 bool
	maxRequestBody, maxResponseBody            sizeValue
	apiTokens                                  tokensValue
	apiTokensFile                              string
}

func (c *serveCommand) flags() *flag.FlagSet {
	fs := c.m.newFlagSet("serve", serveUsage)
	c.methods = methodsValue{"POST", "PATCH"}
	c.maxRequestBody, c.maxResponseBody = oncehttp.DefaultMaxBody, oncehttp.DefaultMaxBody
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "proxy address; every path on it belongs to the upstream")
	fs.StringVar(&c.upstream, "upstream", "", "origin base URL, e.g. http://127.0.0.1:3000 (without it only the API listener runs)")
	fs.StringVar(&c.apiListen, "api-listen", "127.0.0.1:8081", "operator address: /metrics, /healthz, /readyz (empty: off)")
	fs.StringVar(&c.store, "store", "file:once.db", "store URL: file:PATH (embedded, durable), mem:, redis://…, postgres://…")
	fs.DurationVar(&c.ttl, "ttl", once.DefaultRetention, "how long a key's response is kept for replay")
	fs.DurationVar(&c.lease, "lease", once.DefaultLease, "how long a request holds its key before it counts as abandoned (renewed while the upstream works)")
	fs.DurationVar(&c.wait, "wait", once.DefaultWait, "how long a concurrent duplicate waits for the first request (0: answer 409 at once)")
	fs.Var(&c.abandoned, "abandoned", "`policy` for a retry of an abandoned key: reject (409 outcome-unknown, at most once) or retry (execute again) (default reject)")
	fs.Var(&c.methods, "methods", "`methods` that need a key, comma separated")
	fs.StringVar(&c.scopeHeader, "scope-header", "Authorization", "header whose value (SHA-256 only) scopes keys")
	fs.BoolVar(&c.requireKey, "require-key", true, "answer 400 to a keyed method without a key (false: pass it through untouched)")
	fs.Var(&c.maxRequestBody, "max-request-body", "largest keyed request body `size`, e.g. 1MiB, 512KiB, 1048576 (larger: 413)")
	fs.Var(&c.maxResponseBody, "max-response-body", "largest response body `size` stored for replay, e.g. 1MiB (larger: streamed, not replayable)")
	fs.StringVar(&c.config, "config", "", "YAML file: per-route rules and defaults for these flags")
	fs.DurationVar(&c.upstreamTimeout, "upstream-timeout", gateway.DefaultUpstreamTimeout, "bound on one upstream call (past it: 504, outcome unknown)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", gateway.DefaultShutdownTimeout, "on SIGTERM, how long in-flight requests may take to finish (then once exits 1, their keys left to become abandoned)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	c.apiTokens = tokensValue{}
	fs.Var(c.apiTokens, "api-token", "key API bearer token and the scope of its keys, `TOKEN=SCOPE` (repeatable; SCOPE * may name any scope); without any, the key API answers loopback clients only")
	fs.StringVar(&c.apiTokensFile, "api-tokens-file", "", "file of key API tokens, one \"TOKEN SCOPE\" per line")
	fs.VisitAll(func(f *flag.Flag) { f.Usage += " [" + envName(f.Name) + "]" })
	return fs
}

// Run parses the flags and runs the gateway until ctx is done.
func (c *serveCommand) Run(ctx context.Context, args []string) error {
	cfg, addrs, log, err := c.parse(args)
	if err != nil {
		return err
	}
	store, err := c.openStore(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	cfg.Store = store
	g, err := gateway.New(cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	c.mountKeyAPI(g, store, log)
	proxyLn, apiLn, err := listen(addrs)
	if err != nil {
		return err
	}
	log.Info("once serve: listening", "proxy", lnAddr(proxyLn), "api", lnAddr(apiLn), "upstream", c.upstream, "store", storeScheme(c.store))
	err = g.Serve(ctx, proxyLn, apiLn)
	log.Info("once serve: stopped")
	return err
}

// openStore opens --store. A store that is down (rather than misnamed) does
// not stop the gateway: it starts and answers 503 until the store is back.
func (c *serveCommand) openStore(ctx context.Context, log *slog.Logger) (once.Store, error) {
	store, err := c.m.openStore(ctx, c.store)
	switch {
	case err == nil:
		return store, nil
	case !errors.Is(err, once.ErrUnavailable):
		return nil, usageError(fmt.Sprintf("--store: %v", err))
	}
	log.Warn("once serve: store unreachable; answering 503 until it is back", "store", storeScheme(c.store), "error", err)
	url := c.store
	return &lazyStore{open: func(ctx context.Context) (once.Store, error) { return c.m.openStore(ctx, url) },
		lastTry: time.Now(), lastErr: err}, nil
}

// serveAddrs are the addresses to listen on ("" for none).
type serveAddrs struct{ proxy, api string }

// parse turns the command line (then the environment, then the config file)
// into the gateway's config.
func (c *serveCommand) parse(args []string) (gateway.Config, serveAddrs, *slog.Logger, error) {
	fs := c.flags()
	if wantsHelp(args) {
		fs.SetOutput(c.m.Stdout) // asked for: the help is the output
	}
	if err := c.m.parse(fs, args); err != nil {
		return gateway.Config{}, serveAddrs{}, nil, err
	}
	if fs.NArg() > 0 {
		return gateway.Config{}, serveAddrs{}, nil, usageError(fmt.Sprintf("serve: unexpected argument %q (flags only)", fs.Arg(0)))
	}
	if c.apiTokensFile != "" {
		if err := c.apiTokens.loadFile(c.apiTokensFile); err != nil {
			return gateway.Config{}, serveAddrs{}, nil, usageError(err.Error())
		}
	}
	var rules []gateway.Rule
	if c.config != "" {
		var err error
		if rules, err = c.applyConfig(fs); err != nil {
			return gateway.Config{}, serveAddrs{}, nil, err
		}
	}
	cfg, addrs, err := c.gatewayConfig()
	if err != nil {
		return gateway.Config{}, serveAddrs{}, nil, err
	}
	cfg.Rules = rules
	return cfg, addrs, cfg.Logger, nil
}

// wantsHelp reports whether args ask for help before any other flag error.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--h", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}

// applyConfig loads --config: its settings fill the flags not given on the
// command line or in the environment.
func (c *serveCommand) applyConfig(fs *flag.FlagSet) ([]gateway.Rule, error) {
	f, err := gateway.LoadConfig(c.config)
	if err != nil {
		return nil, usageError("--config: " + err.Error())
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for name, v := range f.Settings {
		if fs.Lookup(name) == nil || name == "config" {
			return nil, usageError(fmt.Sprintf("--config %s: unknown setting %q (want a flag of once serve, or routes)", c.config, name))
		}
		if set[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return nil, usageError(fmt.Sprintf("--config %s: %s: %v", c.config, name, err))
		}
	}
	return f.Rules, nil
}

// gatewayConfig checks the flags' values together and builds the config.
func (c *serveCommand) gatewayConfig() (gateway.Config, serveAddrs, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return gateway.Config{}, serveAddrs{}, usageError(fmt.Sprintf("--log-level %q: want debug, info, warn or error", c.logLevel))
	}
	cfg := gateway.Config{
		TTL: c.ttl, Lease: c.lease, Wait: c.wait, Abandoned: once.AbandonPolicy(c.abandoned),
		Methods: c.methods, KeyOptional: !c.requireKey, ScopeHeader: c.scopeHeader,
		MaxRequestBody: int64(c.maxRequestBody), MaxResponseBody: int64(c.maxResponseBody),
		UpstreamTimeout: c.upstreamTimeout, ShutdownTimeout: c.shutdownTimeout,
		Logger: slog.New(gateway.NewLogHandler(c.m.Stderr, level)),
	}
	if c.wait == 0 {
		cfg.Wait = once.NoWait
	}
	for name, d := range map[string]time.Duration{"ttl": c.ttl, "lease": c.lease, "wait": c.wait, "shutdown-timeout": c.shutdownTimeout} {
		if d < 0 || (d == 0 && name != "wait") {
			return gateway.Config{}, serveAddrs{}, usageError(fmt.Sprintf("--%s %v: must be positive", name, d))
		}
	}
	if strings.TrimSpace(c.scopeHeader) == "" {
		return gateway.Config{}, serveAddrs{}, usageError("--scope-header: empty; name a header, e.g. Authorization")
	}
	if !isToken(c.scopeHeader) {
		return gateway.Config{}, serveAddrs{}, usageError(fmt.Sprintf("--scope-header %q: not a header name (letters, digits and !#$%%&'*+-.^_`|~ only), e.g. Authorization", c.scopeHeader))
	}
	if c.ttl < c.lease {
		cfg.Logger.Warn("once serve: --ttl is shorter than --lease: a key is kept until its lease deadline at least", "ttl", c.ttl.String(), "lease", c.lease.String())
	}
	addrs := serveAddrs{api: c.apiListen}
	if c.upstream != "" {
		u, err := url.Parse(c.upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return gateway.Config{}, serveAddrs{}, usageError(fmt.Sprintf("--upstream %q: want an http:// or https:// URL, e.g. http://127.0.0.1:3000", c.upstream))
		}
		cfg.Upstream, addrs.proxy = u, c.listen
	}
	if addrs.proxy == "" && addrs.api == "" {
		return gateway.Config{}, serveAddrs{}, usageError("nothing to serve: give --upstream URL (and --listen), or --api-listen")
	}
	if addrs.proxy != "" && addrs.proxy == addrs.api {
		return gateway.Config{}, serveAddrs{}, usageError(fmt.Sprintf("--api-listen %s is the proxy's --listen: every path of the proxy belongs to the upstream; use another port", addrs.api))
	}
	return cfg, addrs, nil
}

// listen opens the listeners.
func listen(a serveAddrs) (proxyLn, apiLn net.Listener, err error) {
	if a.proxy != "" {
		if proxyLn, err = net.Listen("tcp", a.proxy); err != nil {
			return nil, nil, fmt.Errorf("--listen: %w", err)
		}
	}
	if a.api != "" {
		if apiLn, err = net.Listen("tcp", a.api); err != nil {
			if proxyLn != nil {
				proxyLn.Close()
			}
			return nil, nil, fmt.Errorf("--api-listen: %w", err)
		}
	}
	return proxyLn, apiLn, nil
}

func lnAddr(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// storeScheme names a store URL's kind without its credentials.
func storeScheme(u string) string {
	scheme, _, _ := strings.Cut(u, ":")
	return scheme
}

// sizeValue is a byte size flag: 1MiB, 512KiB, 1048576.
type sizeValue int64

func (s *sizeValue) String() string { return gateway.FormatSize(int64(*s)) }

func (s *sizeValue) Set(v string) error {
	n, err := gateway.ParseSize(v)
	if err != nil {
		return err
	}
	if n <= 0 {
		return errors.New("must be positive")
	}
	*s = sizeValue(n)
	return nil
}

// methodsValue is a comma-separated list of methods.
type methodsValue []string

func (m *methodsValue) String() string { return strings.Join(*m, ",") }

func (m *methodsValue) Set(v string) error {
	ms, err := gateway.ParseMethods(v)
	if err != nil {
		return err
	}
	*m = ms
	return nil
}

// policyValue is reject or retry.
type policyValue once.AbandonPolicy

func (p *policyValue) String() string { return once.AbandonPolicy(*p).String() }

func (p *policyValue) Set(v string) error {
	pol, err := once.ParseAbandonPolicy(v)
	if err != nil {
		return errors.New("want reject or retry")
	}
	*p = policyValue(pol)
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2), the
// syntax of a header name.
func isToken(s string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}
