// Package stores opens a once.Store from a URL, choosing the backend by
// scheme. It is the one place that imports every backend, so that library
// users who need one store do not link the others.
//
//	mem:                                  memstore (in memory, this process only)
//	file:PATH                             boltstore (embedded, durable; the CLI default)
//	redis://[user:pass@]host:port/db      redisstore (rediss:// for TLS)
//	redis+cluster://host:port,host:port   redisstore on a Redis Cluster (rediss+cluster:// for TLS)
//	postgres://… or postgresql://…        pgstore
//	once+http://host:port?token=T         onceclient (a once server's key API; once+https too)
package stores

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/boltstore"
	"github.com/oncehq/once/memstore"
	"github.com/oncehq/once/onceclient"
	"github.com/oncehq/once/pgstore"
	"github.com/oncehq/once/redisstore"
)

// Schemes lists the URL forms Open accepts, for messages.
const Schemes = "mem:, file:PATH, redis://, rediss://, redis+cluster://, postgres://, once+http://"

// Open returns the store that rawURL names. The caller closes it.
func Open(ctx context.Context, rawURL string) (once.Store, error) {
	scheme, rest, ok := strings.Cut(rawURL, ":")
	if !ok {
		return nil, fmt.Errorf("store URL %q has no scheme (want %s)", rawURL, Schemes)
	}
	switch strings.ToLower(scheme) {
	case "mem", "memory":
		return memstore.New(memstore.Config{}), nil
	case "file":
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return nil, fmt.Errorf("store URL %q: file: needs a path, e.g. file:once.db", rawURL)
		}
		return nonNil(boltstore.Open(path, boltstore.Config{}))
	case "redis", "rediss", "redis+cluster", "rediss+cluster":
		return nonNil(redisstore.Open(ctx, rawURL, redisstore.Config{}))
	case "postgres", "postgresql":
		return nonNil(pgstore.Open(ctx, rawURL, pgstore.Config{SweepInterval: time.Minute}))
	case "once+http", "once+https":
		return nonNil(onceclient.Open(rawURL))
	}
	return nil, fmt.Errorf("store URL %q: unknown scheme %q (want %s)", redact(rawURL), scheme, Schemes)
}

// nonNil turns a backend's (*T)(nil), err into a nil interface, so that
// callers never hold a non-nil once.Store wrapping a nil pointer.
func nonNil[S once.Store](s S, err error) (once.Store, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// redact hides a password in a URL for messages.
func redact(raw string) string {
	if at := strings.LastIndex(raw, "@"); at > 0 {
		if i := strings.Index(raw, "://"); i >= 0 && i < at {
			return raw[:i+3] + "…" + raw[at:]
		}
	}
	return raw
}
