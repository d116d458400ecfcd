package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
)

// nopClose keeps a shared store open across CLI runs.
type nopClose struct{ *memstore.Store }

func (nopClose) Close() error { return nil }

// runCLI runs once with args against store, returning stdout, stderr and the
// exit code.
func runCLI(t *testing.T, store *memstore.Store, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
		OpenStore: func(context.Context, string) (once.Store, error) { return nopClose{store}, nil }}
	code := m.exitCode(m.Run(context.Background(), args))
	return out.String(), errb.String(), code
}

func TestKeysCommand(t *testing.T) {
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	claim := func(id string, lease time.Duration) uint64 {
		res, err := store.Claim(ctx, once.ClaimRequest{Key: once.Key{ID: id}, Lease: lease, Retention: time.Hour})
		if err != nil || res.Outcome != once.Acquired {
			t.Fatalf("claim %s: %v %v", id, res.Outcome, err)
		}
		return res.Token
	}
	done := claim("done", time.Minute)
	if err := store.Complete(ctx, once.Key{ID: "done"}, done, once.Result{Data: []byte(`{"ok":true}`)}); err != nil {
		t.Fatal(err)
	}
	claim("live", time.Hour)
	claim("dead", time.Millisecond)
	time.Sleep(5 * time.Millisecond)

	out, _, code := runCLI(t, store, "keys", "list", "--store", "mem:")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[1], "dead") || !strings.Contains(lines[1], "abandoned") || !strings.HasPrefix(lines[2], "live") {
		t.Fatalf("list (exit %d):\n%s", code, out)
	}
	out, _, code = runCLI(t, store, "keys", "get", "done", "--format", "json")
	var got map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got["state"] != "completed" {
		t.Fatalf("get (exit %d): %s", code, out)
	}

	_, errOut, code := runCLI(t, store, "keys", "delete", "live")
	if code != 1 || !strings.Contains(errOut, "--force") {
		t.Fatalf("delete of a live lease: exit %d, %q", code, errOut)
	}
	if _, err := store.Get(ctx, once.Key{ID: "live"}); err != nil {
		t.Fatalf("refused delete removed the key: %v", err)
	}
	if _, _, code = runCLI(t, store, "keys", "delete", "--force", "live"); code != 0 {
		t.Fatalf("delete --force: exit %d", code)
	}
	if _, err := store.Get(ctx, once.Key{ID: "live"}); !errors.Is(err, once.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}

	out, errOut, code = runCLI(t, store, "keys", "resolve", "dead", "--completed", `{"charge":"ch_1"}`)
	if code != 0 {
		t.Fatalf("resolve: exit %d %s %s", code, out, errOut)
	}
	res, err := store.Claim(ctx, once.ClaimRequest{Key: once.Key{ID: "dead"}, Lease: time.Minute, Retention: time.Hour})
	if err != nil || res.Outcome != once.Completed || string(res.Record.Result.Data) != `{"charge":"ch_1"}` {
		t.Fatalf("after resolve: %v %v %q", res.Outcome, err, res.Record.Result.Data)
	}
}

func TestKeysUsageErrors(t *testing.T) {
	store := memstore.New(memstore.Config{})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"keys"}, "subcommand"},
		{[]string{"keys", "explode"}, "unknown subcommand"},
		{[]string{"keys", "get"}, "exactly one KEY"},
		{[]string{"keys", "get", "a\x01b"}, "KEY"},
		{[]string{"keys", "list", "--state", "weird"}, "--state"},
		{[]string{"keys", "get", "k", "--format", "xml"}, "--format"},
		{[]string{"keys", "resolve", "k"}, "--completed"},
		{[]string{"keys", "get", "--bogus", "k"}, "bogus"},
	} {
		_, errOut, code := runCLI(t, store, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 naming %q", c.args, code, errOut, c.want)
		}
	}
}

func TestMigratePrint(t *testing.T) {
	out, errOut, code := runCLI(t, memstore.New(memstore.Config{}), "migrate", "--print", "--prefix", "app.once_")
	if code != 0 || !strings.Contains(out, "CREATE TABLE IF NOT EXISTS") || !strings.Contains(out, "app") {
		t.Fatalf("migrate --print: exit %d %s\n%s", code, errOut, out)
	}
	if _, errOut, code = runCLI(t, memstore.New(memstore.Config{}), "migrate", "--store", "redis://x"); code != 2 || !strings.Contains(errOut, "--store") {
		t.Fatalf("migrate on redis: exit %d %q", code, errOut)
	}
}
