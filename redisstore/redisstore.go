// Package redisstore is a once.Store kept in Redis (7.0 or later, or a
// compatible server such as Valkey), standalone or Redis Cluster, through
// the rueidis client.
//
// # Semantics
//
// Every operation runs atomically in a Lua script on the server, in one
// round trip, and the scripts take the same decisions as internal/fsm,
// branch for branch. Lease and retention decisions use the Redis server's
// clock (TIME inside the script, allowed since scripts replicate their
// effects), never the client's: clients with skewed clocks agree on who
// holds a key. On a standalone server, the writes (Claim, Complete, Release,
// Extend, Delete) that goroutines start while earlier ones are on their way
// go together in one script call, each still atomic: under load, Redis then
// pays the cost of a script call and a clock reading once per batch rather
// than once per write (see Batching and proxies).
//
// A record is one string value under PREFIX + "r{H}", where H is a hash of
// the scope and ID, read with one GET and written with one SET by each
// operation; its change channel has the same name (channels are a namespace
// apart from keys) and a version lives under PREFIX + "v{H'}". The braces
// are a Redis Cluster hash tag: a record and its channel share one slot. The
// record key expires (PXAT) at the record's PurgeAt, retention plus lease, so
// its fencing token outlives its retention and tokens never go backwards.
// Redis expires keys by itself, so the store needs no sweeping and does not
// implement once.Sweeper. Times are kept in microseconds of the server's
// clock; scripts.go describes the value's layout.
//
// Store also implements once.Lister, for operators, by SCAN over the
// primaries: its cost grows with the whole database, not with the scope.
// It skips keys that hold no record of this version (see Upgrading).
//
// # Batching and proxies
//
// A script call of several writes names the keys of all of them, so it needs
// one server that holds them all. A redis+cluster:// store never batches, but
// a redis:// URL may name a proxy that presents one endpoint and spreads keys
// over several servers: Redis Enterprise without the OSS Cluster API,
// twemproxy, Envoy's Redis proxy. twemproxy and Envoy route a script by its
// first key and check no other: a batch there runs on its first key's
// server, and the records of the other keys land where their later calls
// never look, so that those keys can be claimed, and their effects run,
// twice.
//
// So a Store asks before it batches (batch=auto, the default; BatchAuto):
// Open, or for a Store made by New the first call that would carry several
// writes, sends 64 script calls in one round trip, each with one key under a
// hash tag of its own, drawn at random, and routed as a lone write is; each
// returns the run ID of the server that ran it (INFO server, random at every
// start of redis-server). The Store batches only if all name one server.
// If they name several, or if any call is refused (a proxy that refuses
// scripts, or INFO in them; an ACL that forbids INFO), it never batches:
// every write is a call of its own, which the proxy routes by its one key. A
// probe that gets no reply (a broken connection) leaves writes unbatched
// and is tried again at most once a second. Behind a proxy that spreads
// keys evenly over two servers, the probe misses with a chance of 2^-63;
// over a server that takes 90% of the keys and another, of 0.1%. It costs
// one round trip and under a millisecond of the server's time.
//
// The answer holds for the Store's life. A failover that promotes a replica
// changes the server, not the fact that one server holds every key. A proxy
// given more servers after Open is not probed again, but spreading keys anew
// parts them from their records, which breaks the store, batch or no batch;
// so does a load balancer that spreads connections over servers that do not
// share their data, which the probe does not look for. (rueidis's standalone
// client connects to its first address only, over one or a few
// connections; a redis:// URL names one host.)
//
// batch=on (BatchOn) batches without asking: use it only for a direct
// connection to one Redis primary. batch=off (BatchOff) never batches. A
// proxy that refuses a call whose keys are in different slots (CROSSSLOT, as
// a Redis Cluster node or the Redis Enterprise proxy does) is handled in
// every mode: the store runs the writes of the refused call one by one and
// stops batching.
//
// # Durability
//
// A claim is only as durable as Redis makes it. A Redis restarted without
// persistence forgets every claim and result: a retry then runs the effect
// again. Configure persistence for the guarantee you need:
//
//   - appendonly yes, appendfsync always: every acknowledged write (an
//     acquired claim, a completion) is on disk before the reply. A crash of
//     the server loses nothing that was acknowledged. Slowest.
//   - appendonly yes, appendfsync everysec (the usual setting): a crash of the
//     machine (not just of redis-server) can lose the last second of writes.
//     A claim lost that way lets a retry run the effect again.
//   - RDB snapshots only, or no persistence: a restart loses everything since
//     the last snapshot. Use only where a duplicate effect is harmless.
//
// With replicas, a failover can promote a replica that had not yet received
// the latest writes. The URL option wait_replicas=N (Config.WaitReplicas)
// makes every write script wait, on the same connection, for N replicas to
// acknowledge it (WAIT N timeout). If fewer acknowledge within wait_timeout
// (default 1s), the operation returns an error wrapping once.ErrUnavailable:
// the write did happen on the primary but may be lost in a failover. A Claim
// that acquired the key in that case releases it again before returning the
// error, so the caller, who never learns the token, does not leave the key
// held until its lease passes. A Complete that gets this error may be
// repeated with the same token and result, which is a no-op success once the
// result is stored. WAIT does not make Redis strongly consistent: it narrows
// the window, no more.
//
// # Watching
//
// Store implements once.Watcher: Watch subscribes to the record's channel
// with SSUBSCRIBE (sharded Pub/Sub, routed to the record's shard in a cluster
// and plain Pub/Sub otherwise) and then marks the record as watched; the
// scripts that complete, release or delete a marked record publish on its
// channel with SPUBLISH. A record nobody watches costs no publish. The mark
// stays until the key is purged, so a watcher that loses the race for a
// released key hears about its next holder too. Watchers of one key in one
// process share a subscription. Messages can be lost (a reconnect, a
// failover), so callers keep polling, only more slowly.
//
// # Upgrading from hash records
//
// Earlier versions of this package kept each record as a Redis hash, under
// the same key; this one keeps a string. Neither reads the other's records:
// on a key that holds a hash, Claim, Complete, Release, Extend, Delete, Get
// and Watch fail with an error wrapping once.ErrUnavailable that names the
// key, until the hash expires at its record's PurgeAt (retention plus lease
// after its last claim or extension), and an old version fails the same way
// on the strings of this one. List skips such keys. Version keys (Advance)
// are unchanged.
//
// So an old and a new version must never share a Redis under one prefix: a
// rolling deploy that runs both fails every key one writes and the other
// then reads. Upgrade instead in three steps: stop every process of the old
// version; let their records expire (wait for the longest retention plus
// lease in use), or delete them; start the new version. These commands list
// the hashes under the prefix once: of the Redis at $URL in the file old,
// then delete them (run them on every primary of a cluster):
//
//	redis-cli -u "$URL" --scan --pattern 'once:r{*}' > keys
//	sed 's/^/TYPE /' keys | redis-cli -u "$URL" | paste keys - | awk '$2 == "hash" { print $1 }' > old
//	xargs -r redis-cli -u "$URL" unlink < old
//
// Deleting forgets those records: a retry of a request they completed runs
// its effect again, and so may one of a request in progress.
//
// Another prefix (prefix=...) for the new version avoids the failures without
// stopping the old one first: the new version never reads the old keys, which
// expire by themselves. It forgets the old records just as deleting them does,
// and while both versions run, one key can be claimed once under each prefix.
//
// # Errors
//
// Connection failures, timeouts and errors Redis answers with (OOM, READONLY,
// CLUSTERDOWN, ...) wrap once.ErrUnavailable; the script replies map to the
// once sentinels (ErrFenced, ErrNotFound). A Store is safe for concurrent use.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oncehq/once"
	"github.com/redis/rueidis"
)

// DefaultPrefix starts every key when Config.Prefix is empty.
const DefaultPrefix = "once:"

// DefaultWaitTimeout bounds WAIT when Config.WaitTimeout is zero.
const DefaultWaitTimeout = time.Second

// Config configures a Store. The zero value is ready to use.
type Config struct {
	// Prefix starts every key and channel, so that several stores can share
	// a database. Empty means DefaultPrefix. It may not contain '{' or '}'.
	Prefix string
	// WaitReplicas, if positive, makes every write wait for that many
	// replicas to acknowledge it (see the package documentation).
	WaitReplicas int
	// WaitTimeout bounds that wait. Zero means DefaultWaitTimeout.
	WaitTimeout time.Duration
	// Batching says whether writes of concurrent goroutines may share a
	// script call on a standalone server. The zero value, BatchAuto, asks
	// the server first (see Batching and proxies in the package
	// documentation). A cluster client never batches.
	Batching Batching
}

// Batching says whether a Store on a standalone server may run the writes
// of concurrent goroutines in one script call (group commit).
type Batching int32

const (
	// BatchAuto batches once a probe has found that keys of different hash
	// tags all reach one and the same server, and never otherwise.
	BatchAuto Batching = iota
	// BatchOn batches without asking: only for a direct connection to one
	// Redis primary. Behind a proxy that routes a script by its first key,
	// it writes records to servers where they will not be found.
	BatchOn
	// BatchOff makes every write a script call of its own.
	BatchOff
)

// Store is a once.Store in Redis. It is safe for concurrent use.
type Store struct {
	client rueidis.Client
	owned  bool
	prefix string
	waitN  int64
	waitMS int64
	hub    *hub
	batch  *batcher // nil in a cluster, or with BatchOff
	closed atomic.Bool
}

var (
	_ once.Store   = (*Store)(nil)
	_ once.Pinger  = (*Store)(nil)
	_ once.Watcher = (*Store)(nil)
)

// Open connects to the store that rawURL names (see ParseURL) and checks
// that the server answers. With BatchAuto on a standalone client, it also
// probes whether every key reaches one server (see Batching and proxies).
// Options in the URL's query override those in cfg. Closing the Store
// closes the connection.
func Open(ctx context.Context, rawURL string, cfg Config) (*Store, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	client, err := Dial(o)
	if err != nil {
		return nil, err
	}
	s, err := New(client, mergeConfig(cfg, o.Config))
	if err == nil {
		err = s.Ping(ctx)
	}
	if err != nil {
		client.Close()
		return nil, err
	}
	if s.batch != nil {
		s.batch.safe(ctx) // now rather than before the first batch
	}
	s.owned = true
	return s, nil
}

func mergeConfig(base, url Config) Config {
	if url.Prefix != "" {
		base.Prefix = url.Prefix
	}
	if url.WaitReplicas != 0 {
		base.WaitReplicas = url.WaitReplicas
	}
	if url.WaitTimeout != 0 {
		base.WaitTimeout = url.WaitTimeout
	}
	if url.Batching != BatchAuto {
		base.Batching = url.Batching
	}
	return base
}

// Dial returns a rueidis client for o: a single-node client for redis://, a
// cluster client for redis+cluster://. Client-side caching is off: the store
// reads only through scripts.
func Dial(o Options) (rueidis.Client, error) {
	opt := o.Client
	opt.DisableCache = true
	opt.ForceSingleClient = !o.Cluster
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("%w: redis: connect: %w", once.ErrUnavailable, err)
	}
	if o.Cluster && client.Mode() != rueidis.ClientModeCluster {
		client.Close()
		return nil, errors.New("redisstore: redis+cluster:// URL, but the server is not in cluster mode")
	}
	return client, nil
}

// New returns a Store over client, which the caller keeps owning: Close does
// not close it. It returns an error if cfg is invalid. It sends nothing:
// with BatchAuto, the probe of Batching and proxies runs before the first
// call that would carry several writes.
func New(client rueidis.Client, cfg Config) (*Store, error) {
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	if cfg.WaitReplicas < 0 || cfg.WaitTimeout < 0 {
		return nil, fmt.Errorf("%w: redisstore: negative WaitReplicas or WaitTimeout", once.ErrInvalidArgument)
	}
	if cfg.Batching < BatchAuto || cfg.Batching > BatchOff {
		return nil, fmt.Errorf("%w: redisstore: Batching %d", once.ErrInvalidArgument, cfg.Batching)
	}
	s := &Store{client: client, prefix: cfg.Prefix, waitN: int64(cfg.WaitReplicas)}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	wt := cfg.WaitTimeout
	if wt == 0 {
		wt = DefaultWaitTimeout
	}
	s.waitMS = max(1, wt.Milliseconds())
	s.hub = newHub(client)
	if client.Mode() != rueidis.ClientModeCluster && cfg.Batching != BatchOff {
		s.batch = &batcher{s: s}
		s.batch.mode.Store(int32(cfg.Batching))
	}
	return s, nil
}

// Client returns the rueidis client the store uses.
func (s *Store) Client() rueidis.Client { return s.client }

// recordKey names the record of k, and its channel.
func (s *Store) recordKey(k once.Key) string { return hashKey(s.prefix, 'r', k.Scope, k.ID) }

func (s *Store) versionKey(scope, entity string) string {
	return hashKey(s.prefix, 'v', scope, entity)
}

// check returns ErrClosed after Close, or the key's validation error.
func (s *Store) check(key once.Key) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	return key.Validate()
}

// checkToken is check for the operations of a holder. A token beyond
// maxExact gets ErrFenced: no claim hands it out, and the scripts, which
// compare tokens as doubles, would round it.
func (s *Store) checkToken(key once.Key, token uint64) error {
	if err := s.check(key); err != nil {
		return err
	}
	if token > maxExact {
		return once.ErrFenced
	}
	return nil
}

// Claim implements once.Store.
func (s *Store) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	if err := req.Validate(); err != nil {
		return once.ClaimResult{}, err
	}
	if err := s.check(req.Key); err != nil {
		return once.ClaimResult{}, err
	}
	policy := "0"
	if req.Policy == once.AbandonRetry {
		policy = "1"
	}
	rk := s.recordKey(req.Key)
	r := s.do(ctx, rk, "claim", string(req.Fingerprint), micros(req.Lease), micros(req.Retention), policy, encodeKey(req.Key))
	if !r.ran {
		return once.ClaimResult{}, r.err
	}
	if err := r.msg.Error(); err != nil {
		return once.ClaimResult{}, s.scriptError(rk, err)
	}
	res, err := claimResult(req.Key, r)
	if err != nil {
		return once.ClaimResult{}, s.corrupt(err)
	}
	if werr := r.err; werr != nil {
		if res.Outcome == once.Acquired {
			s.undoClaim(req.Key, res.Token)
		}
		return once.ClaimResult{}, werr
	}
	return res, nil
}

// undoClaim releases a claim whose write the replicas did not acknowledge:
// its caller gets an error and never learns the token.
func (s *Store) undoClaim(key once.Key, token uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.waitMS)*time.Millisecond)
	defer cancel()
	_ = s.Release(ctx, key, token)
}

// claimResult reads a claim's reply: its outcome and record.
func claimResult(key once.Key, r reply) (once.ClaimResult, error) {
	code, err1 := r.msg.ToInt64()
	v, err2 := r.rec.ToString()
	if err := errors.Join(err1, err2); err != nil {
		return once.ClaimResult{}, fmt.Errorf("%w: claim reply: %w", errCorrupt, err)
	}
	if code < int64(once.Acquired) || code > int64(once.Mismatch) {
		return once.ClaimResult{}, fmt.Errorf("%w: claim outcome %d", errCorrupt, code)
	}
	rec, err := decodeRecord(key, v)
	if err != nil {
		return once.ClaimResult{}, err
	}
	res := once.ClaimResult{Outcome: once.Outcome(code), Record: rec}
	switch res.Outcome {
	case once.Acquired:
		res.Token = rec.Token
	case once.InProgress:
		res.RetryAfter = rec.LeaseExpiresAt.Sub(time.UnixMicro(r.now))
	}
	return res, nil
}

// Complete implements once.Store.
func (s *Store) Complete(ctx context.Context, key once.Key, token uint64, result once.Result) error {
	if err := s.checkToken(key, token); err != nil {
		return err
	}
	return s.doCode(ctx, s.recordKey(key), "complete", strconv.FormatUint(token, 10), encodeResult(result))
}

// Release implements once.Store.
func (s *Store) Release(ctx context.Context, key once.Key, token uint64) error {
	if err := s.checkToken(key, token); err != nil {
		return err
	}
	return s.doCode(ctx, s.recordKey(key), "release", strconv.FormatUint(token, 10))
}

// Extend implements once.Store. Returns an error wrapping
// ErrInvalidArgument if lease is not positive.
func (s *Store) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be positive, got %v", once.ErrInvalidArgument, lease)
	}
	if err := s.checkToken(key, token); err != nil {
		return err
	}
	return s.doCode(ctx, s.recordKey(key), "extend", strconv.FormatUint(token, 10), micros(lease))
}

// Delete implements once.Store.
func (s *Store) Delete(ctx context.Context, key once.Key) error {
	if err := s.check(key); err != nil {
		return err
	}
	return s.doCode(ctx, s.recordKey(key), "delete")
}

// Get implements once.Store.
func (s *Store) Get(ctx context.Context, key once.Key) (once.Record, error) {
	if err := s.check(key); err != nil {
		return once.Record{}, err
	}
	msg, err := s.run(ctx, getScript, []string{s.recordKey(key)}, nil)
	if err != nil {
		return once.Record{}, err
	}
	if msg.IsInt64() {
		return once.Record{}, once.ErrNotFound
	}
	v, err := msg.ToString()
	if err != nil {
		return once.Record{}, s.corrupt(err)
	}
	out, err := decodeRecord(key, v)
	if err != nil {
		return once.Record{}, s.corrupt(err)
	}
	return out, nil
}

// Advance implements once.Store.
func (s *Store) Advance(ctx context.Context, scope, entity string, version uint64) (bool, uint64, error) {
	if err := s.check(once.Key{Scope: scope, ID: entity}); err != nil {
		return false, 0, err
	}
	arg := fmt.Sprintf("%020d", version)
	msg, _, err := s.call(ctx, advanceScript, []string{s.versionKey(scope, entity)}, []string{arg})
	if err != nil {
		return false, 0, err
	}
	r, err := msg.ToArray()
	if err != nil || len(r) != 2 {
		return false, 0, s.corrupt(fmt.Errorf("%w: advance reply %v", errCorrupt, msg))
	}
	applied, err1 := r[0].ToInt64()
	cur, err2 := r[1].ToString()
	v, err3 := strconv.ParseUint(cur, 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return false, 0, s.corrupt(err)
	}
	return applied == 1, v, nil
}

// Ping implements once.Pinger.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	if err := s.client.Do(ctx, s.client.B().Ping().Build()).Error(); err != nil {
		return s.unavailable("ping", err)
	}
	return nil
}

// Close implements once.Store. It ends every Watch and, for a Store made by
// Open, closes the connection.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.hub.close()
	if s.owned {
		s.client.Close()
	}
	return nil
}

// do runs one write of writeScript: the operation args[0] on the record
// key, with the arguments that follow.
func (s *Store) do(ctx context.Context, key string, args ...string) reply {
	w := &write{ctx: ctx, key: key, args: args}
	if s.batch != nil && s.batch.mode.Load() != int32(BatchOff) {
		return s.batch.do(w)
	}
	s.send(ctx, []*write{w})
	return w.reply
}

// doCode runs a write that replies with a code.
func (s *Store) doCode(ctx context.Context, key string, args ...string) error {
	r := s.do(ctx, key, args...)
	if !r.ran {
		return r.err
	}
	if err := r.msg.Error(); err != nil {
		return s.scriptError(key, err)
	}
	code, err := r.msg.ToInt64()
	switch {
	case err != nil:
		return s.corrupt(err)
	case code == codeFenced:
		return once.ErrFenced
	case code == codeNotFound:
		return once.ErrNotFound
	case code != codeOK:
		return s.corrupt(fmt.Errorf("%w: reply code %d", errCorrupt, code))
	}
	return r.err
}

// run runs sc and returns its reply. A script error, or a failure to reach
// Redis, returns an error wrapping ErrUnavailable.
func (s *Store) run(ctx context.Context, sc *script, keys, args []string) (rueidis.RedisMessage, error) {
	msg, err := sc.lua.Exec(ctx, s.client, keys, args).ToMessage()
	if err != nil {
		return msg, s.scriptError(keys[0], err)
	}
	return msg, nil
}

// scriptError is unavailable for the error of a script on key. It names a
// key that holds no string, such as a record an earlier version of this
// package kept as a hash (see Upgrading in the package documentation).
func (s *Store) scriptError(key string, err error) error {
	if isRedisErr(err, "WRONGTYPE") {
		return fmt.Errorf("%w: redis: key %s holds no record of this version (a hash is a record of an earlier redisstore: delete it or let it expire): %w", once.ErrUnavailable, key, err)
	}
	return s.unavailable("script", err)
}

// isRedisErr reports whether err is, or wraps, an error reply of Redis
// whose code (its first word) is code.
func isRedisErr(err error, code string) bool {
	var rerr *rueidis.RedisError
	if !errors.As(err, &rerr) {
		return false
	}
	first, _, _ := strings.Cut(rerr.Error(), " ")
	return first == code
}

// call runs a script that writes, waiting for replicas if the store does.
// ran reports whether the script ran: then msg is its reply, and err, if
// any, says that the replicas did not acknowledge the write.
func (s *Store) call(ctx context.Context, sc *script, keys, args []string) (msg rueidis.RedisMessage, ran bool, err error) {
	if s.waitN > 0 {
		return s.execWait(ctx, sc, keys, args)
	}
	msg, err = s.run(ctx, sc, keys, args)
	return msg, err == nil, err
}

// execWait runs sc followed by WAIT on one connection: WAIT counts the
// replicas that acknowledged the writes of its own connection.
func (s *Store) execWait(ctx context.Context, sc *script, keys, args []string) (msg rueidis.RedisMessage, ran bool, err error) {
	derr := s.client.Dedicated(func(c rueidis.DedicatedClient) error {
		res := c.DoMulti(ctx,
			c.B().Evalsha().Sha1(sc.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(),
			c.B().Wait().Numreplicas(s.waitN).Timeout(s.waitMS).Build())
		if rerr, ok := rueidis.IsRedisErr(res[0].Error()); ok && rerr.IsNoScript() {
			res = c.DoMulti(ctx,
				c.B().Eval().Script(sc.src).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(),
				c.B().Wait().Numreplicas(s.waitN).Timeout(s.waitMS).Build())
		}
		if msg, err = res[0].ToMessage(); err != nil {
			err = s.unavailable("script", err)
			return nil
		}
		ran = true
		n, werr := res[1].AsInt64()
		switch {
		case werr != nil:
			err = s.unavailable("wait", werr)
		case n < s.waitN:
			err = fmt.Errorf("%w: redis: write acknowledged by %d of %d replicas within %dms", once.ErrUnavailable, n, s.waitN, s.waitMS)
		}
		return nil
	})
	if derr != nil && err == nil {
		return msg, false, s.unavailable("wait", derr)
	}
	return msg, ran, err
}

func (s *Store) unavailable(op string, err error) error {
	if s.closed.Load() && errors.Is(err, rueidis.ErrClosing) {
		return once.ErrClosed
	}
	return fmt.Errorf("%w: redis %s: %w", once.ErrUnavailable, op, err)
}

// corrupt reports a reply the store cannot read: something other than this
// package wrote the key, or a version of it with another layout.
func (s *Store) corrupt(err error) error {
	return fmt.Errorf("%w: %w", once.ErrUnavailable, err)
}
