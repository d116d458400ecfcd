package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
)

var fmtSscan = fmt.Sscan

func newServeTestMain(env map[string]string) (*Main, *bytes.Buffer) {
	var errOut bytes.Buffer
	return &Main{Stdout: &bytes.Buffer{}, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}, &errOut
}

func TestServeFlagsDefaults(t *testing.T) {
	m, _ := newServeTestMain(nil)
	c := &serveCommand{m: m}
	cfg, addrs, _, err := c.parse([]string{"--upstream", "http://127.0.0.1:3000"})
	if err != nil {
		t.Fatal(err)
	}
	if addrs.proxy != "127.0.0.1:8080" || addrs.api != "127.0.0.1:8081" || c.store != "file:once.db" {
		t.Errorf("addresses %+v store %q", addrs, c.store)
	}
	if cfg.TTL != 24*time.Hour || cfg.Lease != 30*time.Second || cfg.Wait != 10*time.Second || cfg.Abandoned != once.AbandonReject {
		t.Errorf("durations/policy %v %v %v %v", cfg.TTL, cfg.Lease, cfg.Wait, cfg.Abandoned)
	}
	if strings.Join(cfg.Methods, ",") != "POST,PATCH" || cfg.ScopeHeader != "Authorization" || cfg.KeyOptional {
		t.Errorf("methods %v scope %q optional %v", cfg.Methods, cfg.ScopeHeader, cfg.KeyOptional)
	}
	if cfg.MaxRequestBody != 1<<20 || cfg.MaxResponseBody != 1<<20 || cfg.Upstream.String() != "http://127.0.0.1:3000" {
		t.Errorf("sizes %d %d upstream %v", cfg.MaxRequestBody, cfg.MaxResponseBody, cfg.Upstream)
	}
}

func TestServeFlagsAndEnv(t *testing.T) {
	m, _ := newServeTestMain(map[string]string{
		"ONCE_UPSTREAM": "http://up:1", "ONCE_WAIT": "0", "ONCE_REQUIRE_KEY": "false",
		"ONCE_MAX_REQUEST_BODY": "512KiB", "ONCE_METHODS": "post,put", "ONCE_TTL": "1h",
	})
	c := &serveCommand{m: m}
	cfg, _, _, err := c.parse([]string{"--ttl", "2h", "--abandoned", "retry", "--max-response-body", "2MiB", "--scope-header", "X-Tenant"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream.Host != "up:1" || cfg.Wait != once.NoWait || !cfg.KeyOptional || cfg.MaxRequestBody != 512<<10 ||
		strings.Join(cfg.Methods, ",") != "POST,PUT" || cfg.TTL != 2*time.Hour || cfg.Abandoned != once.AbandonRetry ||
		cfg.MaxResponseBody != 2<<20 || cfg.ScopeHeader != "X-Tenant" {
		t.Errorf("config %+v", cfg)
	}
}

func TestServeConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "once.yaml")
	os.WriteFile(path, []byte(`
upstream: http://from-file:1
lease: 5s
ttl: 3h
routes:
  - path: /webhooks/github
    key: header:X-GitHub-Delivery
`), 0o600)
	m, _ := newServeTestMain(map[string]string{"ONCE_TTL": "4h"})
	c := &serveCommand{m: m}
	cfg, _, _, err := c.parse([]string{"--config", path, "--lease", "7s"})
	if err != nil {
		t.Fatal(err)
	}
	// Command line > environment > file > default.
	if cfg.Upstream.Host != "from-file:1" || cfg.Lease != 7*time.Second || cfg.TTL != 4*time.Hour {
		t.Errorf("upstream %v lease %v ttl %v", cfg.Upstream, cfg.Lease, cfg.TTL)
	}
	if len(cfg.Rules) != 1 || cfg.Rules[0].Key.Header != "X-Github-Delivery" {
		t.Errorf("rules %+v", cfg.Rules)
	}
}

func TestServeUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("routes:\n  - path: /a\n    colour: red\n"), 0o600)
	unknown := filepath.Join(t.TempDir(), "unknown.yaml")
	os.WriteFile(unknown, []byte("listne: :80\n"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--upstream", "ftp://x"}, "--upstream"},
		{[]string{"--upstream", "http://x", "--listen", "127.0.0.1:9", "--api-listen", "127.0.0.1:9"}, "--api-listen"},
		{[]string{"--upstream", "http://x", "--abandoned", "maybe"}, "abandoned"},
		{[]string{"--upstream", "http://x", "--max-request-body", "lots"}, "max-request-body"},
		{[]string{"--upstream", "http://x", "--methods", ","}, "methods"},
		{[]string{"--upstream", "http://x", "--lease", "0s"}, "--lease"},
		{[]string{"--upstream", "http://x", "--log-level", "loud"}, "--log-level"},
		{[]string{"--upstream", "http://x", "--scope-header", "bad header"}, "--scope-header"},
		{[]string{"--upstream", "http://x", "--config", bad}, "colour"},
		{[]string{"--upstream", "http://x", "--config", unknown}, "listne"},
		{[]string{"--upstream", "http://x", "extra"}, "extra"},
		{[]string{"--api-listen", ""}, "nothing to serve"},
	} {
		m, errOut := newServeTestMain(nil)
		err := m.Run(context.Background(), append([]string{"serve"}, c.args...))
		code := m.exitCode(err)
		if code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}
}

func TestServeHelp(t *testing.T) {
	m, _ := newServeTestMain(nil)
	errOut := m.Stdout.(*bytes.Buffer) // help asked for goes to stdout
	err := m.Run(context.Background(), []string{"serve", "-h"})
	if code := m.exitCode(err); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, flag := range []string{"listen", "upstream", "api-listen", "store", "ttl", "lease", "wait", "abandoned", "methods",
		"scope-header", "require-key", "max-request-body", "max-response-body", "config"} {
		if !strings.Contains(errOut.String(), "  -"+flag) || !strings.Contains(errOut.String(), envName(flag)) {
			t.Errorf("help lacks -%s or %s", flag, envName(flag))
		}
	}
}

func TestLazyStoreOpensWhenBack(t *testing.T) {
	var up atomic.Bool
	l := &lazyStore{open: func(context.Context) (once.Store, error) {
		if !up.Load() {
			return nil, fmt.Errorf("%w: connection refused", once.ErrUnavailable)
		}
		return memstore.New(memstore.Config{}), nil
	}}
	ctx := context.Background()
	req := once.ClaimRequest{Key: once.Key{ID: "k"}, Lease: time.Second, Retention: time.Hour}
	if _, err := l.Claim(ctx, req); !errors.Is(err, once.ErrUnavailable) {
		t.Fatalf("store down: %v", err)
	}
	if err := l.Ping(ctx); !errors.Is(err, once.ErrUnavailable) {
		t.Fatalf("ping with the store down: %v", err)
	}
	up.Store(true)
	time.Sleep(lazyRetry + 50*time.Millisecond)
	if res, err := l.Claim(ctx, req); err != nil || res.Outcome != once.Acquired {
		t.Fatalf("store back: %v %v", res.Outcome, err)
	}
	if err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := l.Get(ctx, req.Key); !errors.Is(err, once.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
