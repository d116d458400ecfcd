package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/oncehq/once"
	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/keyapi"
)

// tokensValue is the repeatable --api-token TOKEN=SCOPE.
type tokensValue map[string]string

func (t tokensValue) String() string {
	if len(t) == 0 {
		return ""
	}
	return fmt.Sprintf("%d token(s)", len(t)) // never the tokens themselves
}

func (t tokensValue) Set(v string) error {
	tok, scope, ok := strings.Cut(v, "=")
	if !ok || tok == "" {
		return fmt.Errorf("want TOKEN=SCOPE (SCOPE may be empty, or * for an operator token)")
	}
	return t.add(tok, scope)
}

func (t tokensValue) add(tok, scope string) error {
	if strings.ContainsAny(tok, " \t\r\n") {
		return fmt.Errorf("a token may not contain white space")
	}
	if _, dup := t[tok]; dup {
		return fmt.Errorf("a token is given twice")
	}
	t[tok] = scope
	return nil
}

// loadTokens reads a tokens file: one "TOKEN SCOPE" per line (SCOPE may be
// omitted for the empty scope); blank lines and lines starting with # are
// skipped.
func (t tokensValue) loadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--api-tokens-file: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) > 2 {
			return fmt.Errorf("--api-tokens-file %s:%d: want \"TOKEN SCOPE\", got %d fields", path, n, len(fields))
		}
		scope := ""
		if len(fields) == 2 {
			scope = fields[1]
		}
		if err := t.add(fields[0], scope); err != nil {
			return fmt.Errorf("--api-tokens-file %s:%d: %v", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("--api-tokens-file %s: %v", path, err)
	}
	return nil
}

// mountKeyAPI serves the key API on the gateway's API listener, with the
// gateway's lease, retention and abandoned policy as the defaults of a claim.
func (c *serveCommand) mountKeyAPI(g *gateway.Gateway, store once.Store, log *slog.Logger) {
	h := keyapi.New(keyapi.Config{
		Store: store, Tokens: c.apiTokens,
		Lease: c.lease, Retention: c.ttl, Abandoned: once.AbandonPolicy(c.abandoned),
		Logger: log,
	})
	g.APIMux().Handle("/v1/", h)
	if h.LoopbackOnly() {
		log.Warn("once serve: no --api-token configured: the key API (/v1/) answers loopback clients only")
	}
}
