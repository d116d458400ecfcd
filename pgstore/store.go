package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
)

// DefaultMaxConns is the pool size Open uses unless the URL sets
// pool_max_conns. Claims and completions, group-committed, use at most
// four connections; the others serve DoTx transactions, which hold theirs
// while their function runs, and the other operations.
const DefaultMaxConns = 64

// DefaultRetention is how long DoTx keeps a record when Config.Retention is
// zero.
const DefaultRetention = 24 * time.Hour

// DefaultSweepBatch is how many records the background sweeper deletes per
// statement when Config.SweepBatch is zero.
const DefaultSweepBatch = 1000

// txLease is the lease written by DoTx. Nobody else ever sees that record in
// progress (it is completed in the same transaction), so the lease only
// delays the purge of its tombstone.
const txLease = time.Minute

// Config configures a Store. The zero value is ready to use.
type Config struct {
	// Prefix starts the names of the store's tables: "once_" (DefaultPrefix)
	// if empty. "app.once_" puts the tables in schema app, which Migrate
	// creates if needed. Letters, digits and _ only.
	Prefix string
	// SkipMigrate stops Open from applying the schema, for databases whose
	// schema is managed apart (once migrate, or the output of Schema).
	SkipMigrate bool
	// SweepInterval, if positive, runs a background sweeper that deletes
	// purgeable records every interval until Close. Zero: callers sweep
	// themselves through Sweep.
	SweepInterval time.Duration
	// SweepBatch bounds each DELETE of the background sweeper;
	// DefaultSweepBatch if zero.
	SweepBatch int
	// Retention is how long DoTx keeps a completed record; DefaultRetention
	// if zero.
	Retention time.Duration
}

// Store is a once.Store in PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	ownPool bool
	cfg     Config
	n       names
	q       queries
	closed  atomic.Bool

	// bg is canceled by Close to stop the sweeper and the listener.
	bg     context.Context
	stopBg context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex // guards lis, and starting goroutines against Close
	lis *listener

	// claims and completes group-commit Claim and Complete (batch.go).
	claims, completes *batcher
}

var (
	_ once.Store   = (*Store)(nil)
	_ once.Sweeper = (*Store)(nil)
	_ once.Pinger  = (*Store)(nil)
	_ once.Watcher = (*Store)(nil)
	_ once.Lister  = (*Store)(nil)
)

// Open connects to the database that rawURL names (postgres:// or
// postgresql://, with any pgx connection or pool parameter), applies the
// schema unless cfg.SkipMigrate, and returns a Store that owns the pool:
// Close closes it. The pool holds up to DefaultMaxConns connections unless
// the URL sets pool_max_conns.
func Open(ctx context.Context, rawURL string, cfg Config) (*Store, error) {
	pc, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w: %w", once.ErrUnavailable, err)
	}
	s, err := New(pool, cfg)
	if err == nil && !cfg.SkipMigrate {
		err = cfg.Migrate(ctx, pool)
	}
	if err == nil && cfg.SkipMigrate {
		err = s.Ping(ctx)
	}
	if err != nil {
		if s != nil {
			s.Close()
		}
		pool.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// ParseURL parses a postgres:// or postgresql:// URL into a pool
// configuration, with MaxConns set to DefaultMaxConns unless the URL sets
// pool_max_conns. Returns an error wrapping once.ErrInvalidArgument.
func ParseURL(rawURL string) (*pgxpool.Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: store URL: %v", once.ErrInvalidArgument, redactURLError(err))
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("%w: pgstore: store URL scheme %q: want postgres:// or postgresql://", once.ErrInvalidArgument, u.Scheme)
	}
	pc, err := pgxpool.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: pgstore: store URL: %v", once.ErrInvalidArgument, redactURLError(err))
	}
	if !u.Query().Has("pool_max_conns") {
		pc.MaxConns = DefaultMaxConns
	}
	return pc, nil
}

// redactURLError describes a URL parse error without its text, which may
// quote the password.
func redactURLError(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		return "cannot parse the connection parameters"
	}
	return "malformed URL"
}

// New returns a Store over pool, which the caller keeps owning: Close does
// not close it. New does not touch the database: run Migrate (or
// Config.Migrate) first. Returns an error wrapping once.ErrInvalidArgument
// if cfg.Prefix is malformed.
func New(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: pgstore: nil pool", once.ErrInvalidArgument)
	}
	n, err := parsePrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if cfg.SweepBatch <= 0 {
		cfg.SweepBatch = DefaultSweepBatch
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	s := &Store{pool: pool, cfg: cfg, n: n, q: n.queries()}
	s.bg, s.stopBg = context.WithCancel(context.Background())
	s.claims = newBatcher(s, "claim", s.runClaims)
	s.claims.follow = followClaim
	s.completes = newBatcher(s, "complete", s.runCompletes)
	if cfg.SweepInterval > 0 {
		s.wg.Add(1)
		go s.sweepLoop()
	}
	return s, nil
}

// Pool returns the pool the store uses.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping implements once.Pinger.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	if err := s.pool.Ping(ctx); err != nil {
		return s.unavailable("ping", err)
	}
	return nil
}

// Close implements once.Store: it stops the background sweeper and the
// listener, wakes every watcher, and closes the pool if Open made it.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closed.Swap(true)
	lis := s.lis
	s.mu.Unlock()
	if already {
		return nil
	}
	s.claims.close()
	s.completes.close()
	s.stopBg()
	s.wg.Wait()
	if lis != nil {
		lis.wakeAll()
	}
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}

// check returns ErrClosed after Close, or the key's validation error.
func (s *Store) check(key once.Key) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	return key.Validate()
}

// unavailable wraps an error of the database or the connection.
func (s *Store) unavailable(op string, err error) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	return fmt.Errorf("pgstore: %s: %w: %w", op, once.ErrUnavailable, err)
}

// undecided is unavailable for a write that may have been sent: one that
// Close cut short wraps ErrUnavailable as well as ErrClosed, for it may
// have taken effect.
func (s *Store) undecided(op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("pgstore: %s: %w, and the outcome is unknown: %w", op, once.ErrClosed, once.ErrUnavailable)
	}
	return s.unavailable(op, err)
}

// contended reports whether err says that a concurrent transaction changed
// the row: a unique violation, a serialization failure or a deadlock. The
// statement changed nothing and may run again.
func contended(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "23505", "40001", "40P01":
		return true
	}
	return false
}

// maxRetries bounds how often a statement runs again after losing a race.
// Each retry means another transaction changed the row meanwhile, so the
// bound is only reached under a storm of takeovers of one key.
const maxRetries = 20

// retry runs fn until it neither loses a race (again) nor fails with an
// error that says the statement did nothing, at most maxRetries+1 times.
func (s *Store) retry(ctx context.Context, op string, fn func() (again bool, err error)) error {
	for i := 0; ; i++ {
		again, err := fn()
		if err != nil && ctx.Err() == nil && (contended(err) || pgconn.SafeToRetry(err)) {
			// Nothing was done: the statement lost a race, or never
			// reached the server (a pooled connection that had died).
			again, err = true, nil
		}
		if err != nil {
			return s.unavailable(op, err)
		}
		if !again {
			return nil
		}
		if i == maxRetries {
			return s.unavailable(op, errors.New("too much contention on one key"))
		}
		if i > 2 {
			if err := sleep(ctx, time.Duration(i)*time.Millisecond); err != nil {
				return s.unavailable(op, err)
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// micros converts d to whole microseconds, PostgreSQL's resolution, rounding
// up so that a positive duration never becomes zero.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

// scope returns the scope as a non-nil slice: a nil one would be sent as NULL.
func scopeBytes(scope string) []byte {
	return append(make([]byte, 0, len(scope)), scope...)
}
