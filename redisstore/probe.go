package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// probeKeys is how many keys, each under a hash tag of its own, the probe
// sends. A proxy that spreads keys evenly over two servers sends them all to
// one with a chance of 2^-63, one that sends 90% of keys to one server with
// a chance of 0.1%.
const probeKeys = 64

// probeRetry is how long after a probe that got no answer the writes go one
// by one before the next probe.
const probeRetry = time.Second

// probeScript returns the run ID of the server that runs it, drawn at random
// whenever redis-server starts, so that no two servers share one. The flag
// lets it run where a write would not (a server out of memory).
const probeScript = "#!lua flags=no-writes\nreturn string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')"

// safe reports whether one call may carry several writes. With BatchAuto the
// first caller probes the server (Store.oneServer), and a probe that answers
// decides for the store's life: a failover that promotes a replica still
// leaves every key on one server. A probe that gets no answer (the
// connection, ctx) says no for now, and a caller after probeRetry probes
// again. The callers of a probe under way wait for its answer.
func (b *batcher) safe(ctx context.Context) bool {
	if m := Batching(b.mode.Load()); m != BatchAuto {
		return m == BatchOn
	}
	b.probing.Lock()
	defer b.probing.Unlock()
	if m := Batching(b.mode.Load()); m != BatchAuto || time.Now().Before(b.retryAt) {
		return m == BatchOn
	}
	one, err := b.s.oneServer(ctx)
	switch {
	case err != nil:
		b.retryAt = time.Now().Add(probeRetry)
	case one:
		b.mode.CompareAndSwap(int32(BatchAuto), int32(BatchOn)) // unless CROSSSLOT came first
	default:
		b.mode.Store(int32(BatchOff))
	}
	return Batching(b.mode.Load()) == BatchOn
}

// oneServer reports whether keys under probeKeys hash tags, drawn at random,
// all reach one and the same server. Each key goes in a script call of its
// own, as a lone write does, and the calls go in one round trip: a proxy
// that routes a script by its first key to one of several servers (as
// twemproxy and Envoy do) gets answers from several servers. Any error reply
// (a proxy that refuses scripts, or INFO in them, or a server that does)
// also makes it false; the error of a probe that got no reply is returned.
func (s *Store) oneServer(ctx context.Context) (bool, error) {
	var seed [8]byte
	rand.Read(seed[:])
	scope := hex.EncodeToString(seed[:])
	cmds := make(rueidis.Commands, probeKeys)
	for i := range cmds {
		key := hashKey(s.prefix, 'p', scope, strconv.Itoa(i))
		cmds[i] = s.client.B().Eval().Script(probeScript).Numkeys(1).Key(key).Build()
	}
	var first string
	for i, r := range s.client.DoMulti(ctx, cmds...) {
		if err := r.NonRedisError(); err != nil {
			return false, err
		}
		id, err := r.ToString()
		if err != nil || id == "" || (i > 0 && id != first) {
			return false, nil
		}
		first = id
	}
	return true, nil
}
