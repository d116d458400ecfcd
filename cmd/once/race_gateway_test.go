package main

import (
	"net/http"
	"net/url"
	"testing"
)

// newTestGateway returns the gateway the race tests put in front of the
// racy server. The real gateway package was not buildable when these tests
// were written, so a stand-in that does what it does for a keyed POST is
// used; the lead wires gateway.New here.
func newTestGateway(t *testing.T, upstream *url.URL) http.Handler {
	return standInGateway(upstream)
}
