package onceclient_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/keyapi"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/onceclient"
	"github.com/oncehq/once/storetest"
)

// serve starts a key API over a memstore on the given clock and returns a
// client for it.
func serve(tb testing.TB, clock once.Clock, tokens map[string]string, token string) *onceclient.Client {
	tb.Helper()
	store := memstore.New(memstore.Config{Clock: clock})
	srv := httptest.NewServer(keyapi.New(keyapi.Config{Store: store, Tokens: tokens, Now: clock, MaxBody: 4 << 20}))
	tb.Cleanup(srv.Close)
	c, err := onceclient.Open("once+" + srv.URL + "?token=" + token)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestConformance runs the whole store suite through the HTTP API: the
// client is a once.Store like any other.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, clock once.Clock) once.Store {
		return serve(tb, clock, map[string]string{"ops": keyapi.AnyScope}, "ops")
	})
}

func TestDoOverHTTP(t *testing.T) {
	c := serve(t, nil, nil, "")
	o := once.New(c, once.Config{})
	runs := 0
	for range 3 {
		x, err := o.Do(context.Background(), once.Key{ID: "job-1"}, []byte("fp"), func(ctx context.Context) (once.Result, error) {
			runs++
			return once.Result{Data: []byte{0, 1, 2, 0xff}}, nil
		})
		if err != nil || string(x.Data) != "\x00\x01\x02\xff" {
			t.Fatalf("Do: %v %q", err, x.Data)
		}
	}
	if runs != 1 {
		t.Fatalf("fn ran %d times", runs)
	}
}

func TestTenantTokenCannotLeaveItsScope(t *testing.T) {
	c := serve(t, nil, map[string]string{"tenant": "tenant-a"}, "tenant")
	ctx := context.Background()
	req := once.ClaimRequest{Key: once.Key{Scope: "tenant-b", ID: "k"}, Lease: time.Second, Retention: time.Hour}
	if _, err := c.Claim(ctx, req); !errors.Is(err, once.ErrInvalidKey) {
		t.Fatalf("claim in another scope: %v", err)
	}
	req.Key.Scope = ""
	if res, err := c.Claim(ctx, req); err != nil || res.Outcome != once.Acquired {
		t.Fatalf("claim in own scope: %v %v", res.Outcome, err)
	}
}

func TestServerDown(t *testing.T) {
	srv := httptest.NewServer(nil)
	srv.Close()
	c, _ := onceclient.New(onceclient.Config{BaseURL: srv.URL, Retries: -1})
	_, err := c.Claim(context.Background(), once.ClaimRequest{Key: once.Key{ID: "k"}, Lease: time.Second, Retention: time.Hour})
	if !errors.Is(err, once.ErrUnavailable) {
		t.Fatalf("claim against a closed server: %v", err)
	}
}
