// Package pgstore is a once.Store kept in PostgreSQL (12 or later), through
// pgx and pgxpool. It takes every lease and retention decision with the
// database server's clock, so that any number of processes can share keys.
//
// # Opening
//
// Open takes a postgres:// or postgresql:// URL with any pgx parameter:
//
//	s, err := pgstore.Open(ctx, "postgres://app@db/app?sslmode=verify-full", pgstore.Config{})
//
// The pool holds up to DefaultMaxConns (64) connections unless the URL sets
// pool_max_conns. Claims and completions use at most four of them (see
// Group commit); the rest serve DoTx, Watch and the other operations. New
// wraps a pool the caller already has.
//
// # Schema
//
// The schema (schema.sql, embedded) is a records table, a versions table and a
// schema_version table, named with Config.Prefix ("once_" by default;
// "app.once_" for schema app). Open applies it unless Config.SkipMigrate;
// every statement is CREATE … IF NOT EXISTS and runs under an advisory lock,
// so concurrent starts are safe. Schema returns the DDL and Migrate applies
// it, for operators who manage schemas themselves (once migrate).
//
// The schema_version table records the versions applied. Migrate refuses a
// database whose schema is newer than SchemaVersion, and upgrades an older
// one in place: version 2 only lowered the records table's fillfactor, so
// a version-1 database needs no data migration, and a store also works on
// one left at version 1 (SkipMigrate).
//
// # Time
//
// Statements use the database's now(): the start of the statement's
// transaction, one value for the whole statement. Every write stores its time
// in the row's updated_at, and a statement judges a row at the later of now()
// and updated_at, so that time never runs backwards on a row: a row version
// may have been written after now() was read, by a transaction that committed
// while this statement waited for the lock or before it took its snapshot. A
// claim that would take over such a row runs again instead, with a later
// now(). Times have PostgreSQL's microsecond resolution; leases are rounded up
// to whole microseconds. A lease counts from when the server received the
// claim, so a holder that counts from when it sent the claim is on the safe
// side.
//
// # Claim
//
// Claim is one statement, shared with the claims that run at the same time
// (see Group commit). A CTE reads the record from the statement's snapshot:
// if the claim cannot acquire it (completed, in progress, abandoned under
// AbandonReject, fingerprint mismatch), that row is the answer and nothing
// is written or locked. Otherwise an INSERT … ON CONFLICT DO UPDATE …
// WHERE inserts the record or takes it over. Under READ COMMITTED, ON
// CONFLICT locks the latest committed version of the row, waiting for any
// concurrent writer, and evaluates its WHERE on that version: of 200
// concurrent claims of a key, exactly one finds it acquirable. A claim whose
// WHERE fails returns no row at all (its snapshot is older than the winner's
// row, so reading it again in the same statement would show a stale row) and
// runs again with a fresh snapshot, which shows the winner. Each such retry
// means that another claim won, so retries are rare and bounded.
//
// Complete (shared like Claim), Release, Extend and Delete are each one
// conditional UPDATE … RETURNING: a row returned means the transition
// happened, none means once.ErrFenced (once.ErrNotFound for Delete). A repeated Complete with an
// equal result and a repeated Release match their own WHERE and rewrite the
// row unchanged, so that they are told apart from a fenced token without a
// second statement. No operation reads a row and then writes it.
//
// # Group commit
//
// Claims and completions are group-committed, as the embedded store's
// writes are: each kind runs at most two statements at a time, and the
// calls that arrive meanwhile go out together, as one statement and one
// commit for up to 64 keys, as soon as one of those finishes. A call that
// finds nothing queued and a statement free runs at once, in its own
// goroutine; there is no timer. A statement's fixed costs (a round trip,
// the executor's start-up, a commit and its WAL flush) are most of what one
// key costs, so under load a batch pays them once for many keys. Each key
// of a batch is decided as a statement of its own would decide it, from the
// statement's snapshot and its now(). A batch holds each key ID once and
// locks its rows in key order, so that batches do not deadlock each other.
// Claims of one key queued together (a hot key's replays) run as one claim:
// the others are answered from the record it read or wrote, as if they ran
// just after it (internal/fsm, the transitions the statement implements),
// or, if they would acquire the key, in the next batch.
//
// A batch that waits more than a second for a lock (most likely a row that
// a DoTx holds while its function runs) gives up, and its calls run alone,
// each as a statement of its own that waits as long as needed. So one long
// transaction does not hold up the claims of other keys for longer, and a
// DoTx function that claims other keys through the same store does not
// wait for itself.
//
// A call whose context ends while it is queued returns at once and is
// dropped. One whose statement was already sent returns at once too (the
// statement is canceled once every call in it has left), but it may still
// take effect, like a statement cut off by a dropped connection.
//
// # Errors
//
// Connection failures and errors the server answers with wrap
// once.ErrUnavailable. Unique violations, serialization failures and
// deadlocks (which only a non-default isolation level or DoTx's own work can
// cause) make the statement run again, as they mean that it changed nothing;
// in DoTx they wrap once.ErrInProgress. A statement cut off by a dropped
// connection may or may not have committed: a claim that did leaves its key
// in progress until the lease passes, never a wrong outcome.
//
// # Watching
//
// Store implements once.Watcher with LISTEN/NOTIFY. Watch marks the in-progress
// record as watched; the statements that complete, release or delete a
// watched record call pg_notify with a hash of the key (keys never appear in
// notifications). A notifying commit takes a cluster-wide lock, which would
// serialize every commit if each completion notified; with the mark, only the
// keys that somebody waits for pay for it. One connection per Store listens,
// outside the pool, and fans notifications out to the watchers in this
// process; it reconnects on failure and wakes every watcher then, since
// notifications may have been lost.
//
// # Transactions
//
// DoTx claims a key, runs the caller's function and completes the record in
// one transaction (after Brandur Leach's "atomic phases"): writes to the same
// database take effect exactly once, with no lease to lose. A concurrent DoTx
// of the key waits on the record's row lock and replays the committed result;
// if the function fails, the transaction rolls back and the key is free.
//
// # Sweeping and vacuum
//
// A record's row stays until its purge time (retention + lease); Sweep
// deletes at most a given number of them per statement through the index on
// purge_at (DELETE … WHERE ctid = ANY (ARRAY(SELECT ctid … LIMIT n FOR UPDATE
// SKIP LOCKED))), and Config.SweepInterval runs it in the background. Small
// batches keep each DELETE's locks and WAL short.
//
// The records table churns: every key is inserted, updated two or three times
// and deleted. The schema sets fillfactor = 50 so that Complete and Release
// (and Extend, unless it moves the purge time), which leave the indexed
// columns as they were, stay HOT updates on the same page: half of each page
// is left for the new versions of the rows claimed on it, which are
// completed before the old versions can be pruned.
// For a busy table, make autovacuum visit it after a small fraction of dead
// rows rather than the default 20%, and let it work faster:
//
//	ALTER TABLE once_records SET (
//	    autovacuum_vacuum_scale_factor = 0.01,
//	    autovacuum_vacuum_insert_scale_factor = 0.01,
//	    autovacuum_analyze_scale_factor = 0.02,
//	    autovacuum_vacuum_cost_delay = 1
//	);
//
// Watch pg_stat_user_tables.n_dead_tup and the size of the primary key and
// purge_at indexes; sweeping more often in smaller batches evens the load.
package pgstore
