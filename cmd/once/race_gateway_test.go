package main

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/memstore"
)

// newTestGateway returns the once gateway ("once serve"), in-process over a
// memory store, in front of upstream.
func newTestGateway(t *testing.T, upstream *url.URL) http.Handler {
	t.Helper()
	store := memstore.New(memstore.Config{})
	g, err := gateway.New(gateway.Config{Upstream: upstream, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); store.Close() })
	return g.Handler()
}
