// Package redisstore is a once.Store kept in Redis (7.0 or later, or a
// compatible server such as Valkey), standalone or Redis Cluster, through
// the rueidis client.
//
// # Semantics
//
// Every operation is one Lua script run atomically on the server in one round
// trip, and the scripts take the same decisions as internal/fsm, branch for
// branch. Lease and retention decisions use the Redis server's clock (TIME
// inside the script, allowed since scripts replicate their effects), never
// the client's: clients with skewed clocks agree on who holds a key.
//
// A record is a hash under PREFIX + "r{H}", where H is a hash of the scope and
// ID; its change channel is PREFIX + "w{H}" and a version lives under
// PREFIX + "v{H'}". The braces are a Redis Cluster hash tag: a record's keys
// share one slot. The record key expires (PEXPIREAT) at the record's PurgeAt,
// retention plus lease, so its fencing token outlives its retention and
// tokens never go backwards. Redis expires keys by itself, so the store needs
// no sweeping and does not implement once.Sweeper. Times are kept in
// microseconds of the server's clock; scripts.go lists the hash's fields.
//
// Store also implements once.Lister, for operators, by SCAN over the
// primaries: its cost grows with the whole database, not with the scope.
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
// Store implements once.Watcher: the scripts that complete, release or delete
// a record publish on the record's channel with SPUBLISH (sharded Pub/Sub,
// routed to the record's shard in a cluster and plain Pub/Sub otherwise), and
// Watch subscribes with SSUBSCRIBE. Watchers of one key in one process share
// a subscription. Messages can be lost (a reconnect, a failover), so callers
// keep polling, only more slowly.
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
}

// Store is a once.Store in Redis. It is safe for concurrent use.
type Store struct {
	client rueidis.Client
	owned  bool
	prefix string
	waitN  int64
	waitMS int64
	hub    *hub
	closed atomic.Bool
}

var (
	_ once.Store   = (*Store)(nil)
	_ once.Pinger  = (*Store)(nil)
	_ once.Watcher = (*Store)(nil)
)

// Open connects to the store that rawURL names (see ParseURL) and checks
// that the server answers. Options in the URL's query override those in cfg.
// Closing the Store closes the connection.
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
// not close it. It returns an error if cfg is invalid.
func New(client rueidis.Client, cfg Config) (*Store, error) {
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("redisstore: %w", err)
	}
	if cfg.WaitReplicas < 0 || cfg.WaitTimeout < 0 {
		return nil, fmt.Errorf("%w: redisstore: negative WaitReplicas or WaitTimeout", once.ErrInvalidArgument)
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
	return s, nil
}

// Client returns the rueidis client the store uses.
func (s *Store) Client() rueidis.Client { return s.client }

func (s *Store) recordKey(k once.Key) (rec, channel string) {
	h := slotHash(k.Scope, k.ID)
	return s.prefix + "r{" + h + "}", s.prefix + "w{" + h + "}"
}

func (s *Store) versionKey(scope, entity string) string {
	return s.prefix + "v{" + slotHash(scope, entity) + "}"
}

// check returns ErrClosed after Close, or the key's validation error.
func (s *Store) check(key once.Key) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	return key.Validate()
}

// Claim implements once.Store.
func (s *Store) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	if err := req.Validate(); err != nil {
		return once.ClaimResult{}, err
	}
	if err := s.check(req.Key); err != nil {
		return once.ClaimResult{}, err
	}
	rec, _ := s.recordKey(req.Key)
	policy := "0"
	if req.Policy == once.AbandonRetry {
		policy = "1"
	}
	args := []string{string(req.Fingerprint), micros(req.Lease), micros(req.Retention), policy, encodeKey(req.Key)}
	r, werr := s.exec(ctx, claimScript, []string{rec}, args)
	res, err := s.claimResult(req.Key, r)
	if err != nil {
		return once.ClaimResult{}, err
	}
	if werr != nil {
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

func (s *Store) claimResult(key once.Key, r reply) (once.ClaimResult, error) {
	if r == nil {
		return once.ClaimResult{}, nil
	}
	code, err := r.int(0)
	if err != nil || code < int64(once.Acquired) || code > int64(once.Mismatch) {
		return once.ClaimResult{}, s.corrupt(fmt.Errorf("%w: claim outcome %d", errCorrupt, code))
	}
	rec, err := r.record(key)
	if err != nil {
		return once.ClaimResult{}, s.corrupt(err)
	}
	res := once.ClaimResult{Outcome: once.Outcome(code), Record: rec}
	switch res.Outcome {
	case once.Acquired:
		res.Token = rec.Token
	case once.InProgress:
		now, _ := r.time(1)
		res.RetryAfter = rec.LeaseExpiresAt.Sub(now)
	}
	return res, nil
}

// Complete implements once.Store.
func (s *Store) Complete(ctx context.Context, key once.Key, token uint64, result once.Result) error {
	if err := s.check(key); err != nil {
		return err
	}
	rec, ch := s.recordKey(key)
	args := []string{strconv.FormatUint(token, 10), string(result.Data), encodeMeta(result.Meta)}
	return s.execCode(ctx, completeScript, []string{rec, ch}, args)
}

// Release implements once.Store.
func (s *Store) Release(ctx context.Context, key once.Key, token uint64) error {
	if err := s.check(key); err != nil {
		return err
	}
	rec, ch := s.recordKey(key)
	return s.execCode(ctx, releaseScript, []string{rec, ch}, []string{strconv.FormatUint(token, 10)})
}

// Extend implements once.Store. Returns an error wrapping
// ErrInvalidArgument if lease is not positive.
func (s *Store) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be positive, got %v", once.ErrInvalidArgument, lease)
	}
	if err := s.check(key); err != nil {
		return err
	}
	rec, _ := s.recordKey(key)
	return s.execCode(ctx, extendScript, []string{rec}, []string{strconv.FormatUint(token, 10), micros(lease)})
}

// Delete implements once.Store.
func (s *Store) Delete(ctx context.Context, key once.Key) error {
	if err := s.check(key); err != nil {
		return err
	}
	rec, ch := s.recordKey(key)
	return s.execCode(ctx, deleteScript, []string{rec, ch}, nil)
}

// Get implements once.Store.
func (s *Store) Get(ctx context.Context, key once.Key) (once.Record, error) {
	if err := s.check(key); err != nil {
		return once.Record{}, err
	}
	rec, _ := s.recordKey(key)
	r, err := s.exec(ctx, getScript, []string{rec}, nil)
	if err != nil {
		return once.Record{}, err
	}
	if found, _ := r.int(0); found == 0 {
		return once.Record{}, once.ErrNotFound
	}
	out, err := r.record(key)
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
	r, err := s.exec(ctx, advanceScript, []string{s.versionKey(scope, entity)}, []string{arg})
	if err != nil {
		return false, 0, err
	}
	applied, err1 := r.int(0)
	cur, err2 := strconv.ParseUint(r.str(1), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return false, 0, s.corrupt(err)
	}
	return applied == 1, cur, nil
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

// execCode runs a write script that replies with a code.
func (s *Store) execCode(ctx context.Context, sc *script, keys, args []string) error {
	r, werr := s.exec(ctx, sc, keys, args)
	if r == nil {
		return werr
	}
	code, err := r.int(0)
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
	return werr
}

// exec runs sc. A script error, or a failure to reach Redis, returns a nil
// reply and an error wrapping ErrUnavailable. A write the replicas did not
// acknowledge returns the reply and such an error.
func (s *Store) exec(ctx context.Context, sc *script, keys, args []string) (reply, error) {
	if s.waitN > 0 && sc != getScript {
		return s.execWait(ctx, sc, keys, args)
	}
	return s.parse(sc.lua.Exec(ctx, s.client, keys, args))
}

func (s *Store) parse(res rueidis.RedisResult) (reply, error) {
	msg, err := res.ToMessage()
	if err != nil {
		return nil, s.unavailable("script", err)
	}
	if msg.IsInt64() {
		return reply{msg}, nil
	}
	arr, err := msg.ToArray()
	if err != nil {
		return nil, s.corrupt(err)
	}
	return reply(arr), nil
}

// execWait runs sc followed by WAIT on one connection: WAIT counts the
// replicas that acknowledged the writes of its own connection.
func (s *Store) execWait(ctx context.Context, sc *script, keys, args []string) (r reply, err error) {
	derr := s.client.Dedicated(func(c rueidis.DedicatedClient) error {
		res := c.DoMulti(ctx,
			c.B().Evalsha().Sha1(sc.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(),
			c.B().Wait().Numreplicas(s.waitN).Timeout(s.waitMS).Build())
		if rerr, ok := rueidis.IsRedisErr(res[0].Error()); ok && rerr.IsNoScript() {
			res = c.DoMulti(ctx,
				c.B().Eval().Script(sc.src).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(),
				c.B().Wait().Numreplicas(s.waitN).Timeout(s.waitMS).Build())
		}
		if r, err = s.parse(res[0]); err != nil {
			return nil
		}
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
		return nil, s.unavailable("wait", derr)
	}
	return r, err
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
