package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/onceclient"
)

// keyAPICall sends one request to the key API of a running "once serve".
func keyAPICall(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m
}

// TestE2EKeyAPI drives the key API of the real binary over loopback: tokens
// from a flag and from a file, scopes kept apart, the claim / complete /
// replay cycle, and 100 concurrent claims of one key giving one 201.
func TestE2EKeyAPI(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# token scope\ntok-file tenant-b\n"), 0o600)
	g := startServe(t, nil, "--store", "file:"+filepath.Join(dir, "once.db"),
		"--api-token", "tok-flag=tenant-a", "--api-tokens-file", tokens)
	keys := g.api + "/v1/keys/"

	if st, _ := keyAPICall(t, "POST", keys+"job-1/claim", "", `{}`); st != 401 {
		t.Fatalf("claim without a token: %d", st)
	}
	st, m := keyAPICall(t, "POST", keys+"job-1/claim", "tok-flag", `{"fingerprint":"f","lease_ms":30000}`)
	if st != 201 || m["state"] != "acquired" {
		t.Fatalf("claim: %d %v", st, m)
	}
	tok := m["token"]
	if st, _ := keyAPICall(t, "GET", keys+"job-1", "tok-file", ``); st != 404 {
		t.Fatalf("tenant-b sees tenant-a's key: %d", st)
	}
	if st, m := keyAPICall(t, "POST", keys+"job-1/claim", "tok-flag", `{"fingerprint":"f"}`); st != 409 || m["state"] != "in_progress" {
		t.Fatalf("second claim: %d %v", st, m)
	}
	if st, _ := keyAPICall(t, "POST", keys+"job-1/complete", "tok-flag", fmt.Sprintf(`{"token":%v,"result":{"sent":true}}`, tok)); st != 200 {
		t.Fatalf("complete: %d", st)
	}
	st, m = keyAPICall(t, "POST", keys+"job-1/claim", "tok-flag", `{"fingerprint":"f"}`)
	if st != 200 || m["state"] != "completed" || fmt.Sprint(m["result"]) != "map[sent:true]" {
		t.Fatalf("replay: %d %v", st, m)
	}
	if st, m := keyAPICall(t, "POST", g.api+"/v1/versions/sub-1", "tok-flag", `{"version":3}`); st != 200 || m["applied"] != true {
		t.Fatalf("versions: %d %v", st, m)
	}
	if st, _ := keyAPICall(t, "GET", g.api+"/v1/openapi.json", "", ``); st != 200 {
		t.Fatalf("openapi: %d", st)
	}

	var created atomic.Int32
	var start, done sync.WaitGroup
	start.Add(1)
	for range 100 {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			req, _ := http.NewRequest("POST", keys+"storm/claim", strings.NewReader(`{}`))
			req.Header.Set("Authorization", "Bearer tok-file")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 201 {
				created.Add(1)
			} else if resp.StatusCode != 409 {
				t.Errorf("storm claim: %d", resp.StatusCode)
			}
		}()
	}
	start.Done()
	done.Wait()
	if created.Load() != 1 {
		t.Fatalf("100 concurrent claims of one key gave %d × 201", created.Load())
	}
}

// TestE2EGoClient runs once.Do through the Go client against the binary.
func TestE2EGoClient(t *testing.T) {
	g := startServe(t, nil, "--store", "mem:", "--api-token", "ops=*")
	store, err := onceclient.Open("once+" + g.api + "?token=ops")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	o := once.New(store, once.Config{Lease: 5 * time.Second})
	var runs atomic.Int32
	for range 3 {
		x, err := o.Do(context.Background(), once.Key{Scope: "worker", ID: "email-7"}, nil, func(ctx context.Context) (once.Result, error) {
			runs.Add(1)
			return once.Result{Data: []byte("em_7")}, nil
		})
		if err != nil || string(x.Data) != "em_7" {
			t.Fatalf("Do: %v %q", err, x.Data)
		}
	}
	if runs.Load() != 1 {
		t.Fatalf("fn ran %d times", runs.Load())
	}
}

func TestServeTokenFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--api-token", "nosep"}, "TOKEN=SCOPE"},
		{[]string{"--api-tokens-file", "/nonexistent/tokens"}, "--api-tokens-file"},
	} {
		var out, errb strings.Builder
		m := &Main{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
		code := m.exitCode(m.Run(context.Background(), append([]string{"serve", "--store", "mem:"}, c.args...)))
		if code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 naming %q", c.args, code, errb.String(), c.want)
		}
	}
}
