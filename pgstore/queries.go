package pgstore

// The statements below implement internal/fsm's transitions in SQL; keep them
// in step with it. Each runs as one statement (its own transaction outside
// DoTx) and takes its time from one clock_timestamp() per statement, read in
// the materialized CTE c after the statement's snapshot was taken: every row
// version the snapshot shows was written at an earlier time.
//
// {{records}}, {{versions}} are replaced with the configured table names.

// recordCols are the record columns every statement returns, in the order
// scanRecord reads them.
const recordCols = `fingerprint, state, token, attempts,
	(extract(epoch FROM lease) * 1000000)::bigint, lease_expires_at, expires_at,
	created_at, updated_at, completed_at, result, meta`

// claimSQL claims a key. $1 scope, $2 key, $3 fingerprint, $4 lease (µs),
// $5 retention (µs), $6 retry abandoned.
//
// cur judges the record as the statement's snapshot shows it. The outcomes
// that do not acquire change nothing, so they are answered from the snapshot
// without writing or locking (linearized at the snapshot). Otherwise up
// inserts the record or, on conflict, takes it over: ON CONFLICT DO UPDATE
// locks the latest committed version of the row (waiting for a concurrent
// writer) and its WHERE re-checks that the key may still be acquired on that
// version, so of any number of concurrent claims only one acquires. When the
// re-check fails, nothing is returned at all (the snapshot is older than the
// row that won), and the caller runs the statement again with a fresh
// snapshot, which then sees the winner.
const claimSQL = `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS now),
cur AS (
	SELECT r.*, CASE
		WHEN r.expires_at <= c.now OR r.state = 3 THEN 0
		WHEN ` + curMismatch + ` THEN 5
		WHEN r.state = 2 THEN 2
		WHEN r.lease_expires_at > c.now THEN 3
		WHEN NOT $6::boolean THEN 4
		ELSE 0 END AS outcome
	FROM {{records}} r, c
	WHERE r.scope = $1::bytea AND r.key = $2::text
),
up AS (
	INSERT INTO {{records}} AS r (scope, key, fingerprint, state, token, attempts, lease,
		lease_expires_at, expires_at, purge_at, created_at, updated_at)
	SELECT $1::bytea, $2::text, $3::bytea, 1, 1, 1, d.lease,
		c.now + d.lease, c.now + d.keep, c.now + d.keep + d.lease, c.now, c.now
	FROM c, (SELECT $4::bigint * interval '1 microsecond' AS lease,
		greatest($4::bigint, $5::bigint) * interval '1 microsecond' AS keep) d
	WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.outcome <> 0)
	ON CONFLICT (scope, key) DO UPDATE SET
		token = r.token + 1,
		attempts = CASE WHEN r.expires_at > ` + upNow + ` THEN r.attempts + 1 ELSE 1 END,
		created_at = CASE WHEN r.expires_at > ` + upNow + ` THEN r.created_at ELSE ` + upNow + ` END,
		fingerprint = CASE WHEN r.expires_at > ` + upNow + ` AND r.state = 1
			AND coalesce(octet_length(excluded.fingerprint), 0) = 0
			THEN r.fingerprint ELSE excluded.fingerprint END,
		watched = r.watched AND r.expires_at > ` + upNow + ` AND r.state = 1,
		state = 1,
		lease = excluded.lease,
		lease_expires_at = ` + upNow + ` + excluded.lease,
		expires_at = ` + upNow + ` + (excluded.expires_at - excluded.created_at),
		purge_at = ` + upNow + ` + (excluded.purge_at - excluded.created_at),
		updated_at = ` + upNow + `,
		completed_at = NULL,
		result = NULL,
		meta = NULL
	WHERE r.expires_at <= ` + upNow + ` OR r.state = 3
		OR (r.state = 1 AND r.lease_expires_at <= ` + upNow + ` AND $6::boolean
			AND NOT ` + upMismatch + `)
	RETURNING r.*, 1 AS outcome
)
SELECT outcome, ` + recordCols + `, (SELECT now FROM c) FROM up
UNION ALL
SELECT outcome, ` + recordCols + `, (SELECT now FROM c) FROM cur WHERE outcome <> 0`

// upNow is the time of a claim that takes a row over: the statement's time,
// or the time of the latest write to the row if that is later. The statement
// read its clock before it waited for the row's lock, and a write that
// committed meanwhile (a Delete, say) must not seem to come after it.
const upNow = `greatest(excluded.created_at, r.updated_at)`

// updNow is the time of an UPDATE, for the same reason.
const updNow = `greatest(c.now, r.updated_at)`

// The mismatch tests of claimSQL: both fingerprints non-empty and different.
// coalesce keeps an empty (NULL) fingerprint from making the test NULL.
const (
	curMismatch = `(coalesce(octet_length($3::bytea), 0) > 0 AND coalesce(octet_length(r.fingerprint), 0) > 0 AND r.fingerprint <> $3::bytea)`
	upMismatch  = `(coalesce(octet_length(excluded.fingerprint), 0) > 0 AND coalesce(octet_length(r.fingerprint), 0) > 0 AND r.fingerprint <> excluded.fingerprint)`
)

// completeSQL completes a key. $1 scope, $2 key, $3 token, $4 result, $5 meta,
// $6 channel, $7 payload. The row is rewritten also when it is already
// completed with an equal result, so that the repeat returns a row and is
// told apart from a fenced token without a second look.
const completeSQL = `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS now),
u AS (
	UPDATE {{records}} r SET
		state = 2,
		result = $4::bytea,
		meta = $5::jsonb,
		completed_at = CASE WHEN r.state = 1 THEN ` + updNow + ` ELSE r.completed_at END,
		updated_at = CASE WHEN r.state = 1 THEN ` + updNow + ` ELSE r.updated_at END
	FROM c
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.token = $3::bigint AND r.expires_at > ` + updNow + `
		AND (r.state = 1 OR (r.state = 2
			AND coalesce(r.result, ''::bytea) = coalesce($4::bytea, ''::bytea)
			AND coalesce(r.meta, '{}'::jsonb) = coalesce($5::jsonb, '{}'::jsonb)))
	RETURNING r.watched
)
SELECT CASE WHEN u.watched THEN pg_notify($6::text, $7::text)::text END FROM u`

// releaseSQL releases a key. $1 scope, $2 key, $3 token, $4 channel,
// $5 payload. A second release by the same token matches too (a no-op).
const releaseSQL = `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS now),
u AS (
	UPDATE {{records}} r SET
		state = 3,
		updated_at = CASE WHEN r.state = 1 THEN ` + updNow + ` ELSE r.updated_at END
	FROM c
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.token = $3::bigint AND r.expires_at > ` + updNow + `
		AND r.state IN (1, 3)
	RETURNING r.watched
)
SELECT CASE WHEN u.watched THEN pg_notify($4::text, $5::text)::text END FROM u`

// extendSQL renews a lease. $1 scope, $2 key, $3 token, $4 lease (µs).
const extendSQL = `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS now,
	$4::bigint * interval '1 microsecond' AS lease)
UPDATE {{records}} r SET
	lease = c.lease,
	lease_expires_at = ` + updNow + ` + c.lease,
	expires_at = greatest(r.expires_at, ` + updNow + ` + c.lease),
	purge_at = greatest(r.expires_at, ` + updNow + ` + c.lease) + c.lease,
	updated_at = ` + updNow + `
FROM c
WHERE r.scope = $1::bytea AND r.key = $2::text AND r.token = $3::bigint AND r.expires_at > ` + updNow + `
	AND r.state = 1
RETURNING 1`

// deleteSQL expires a record now and keeps its tombstone until a holder's
// lease would have passed, plus a lease. $1 scope, $2 key, $3 channel,
// $4 payload.
const deleteSQL = `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS now),
u AS (
	UPDATE {{records}} r SET
		expires_at = ` + updNow + `,
		lease = r.lease + greatest(r.lease_expires_at - ` + updNow + `, interval '0'),
		purge_at = ` + updNow + ` + r.lease + greatest(r.lease_expires_at - ` + updNow + `, interval '0'),
		updated_at = ` + updNow + `
	FROM c
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.expires_at > ` + updNow + `
	RETURNING r.watched
)
SELECT CASE WHEN u.watched THEN pg_notify($3::text, $4::text)::text END FROM u`

// getSQL reads a live record. $1 scope, $2 key.
const getSQL = `SELECT ` + recordCols + ` FROM {{records}}
WHERE scope = $1::bytea AND key = $2::text AND expires_at > clock_timestamp()`

// listSQL reads the live records of a scope. $1 scope.
const listSQL = `SELECT key, ` + recordCols + ` FROM {{records}}
WHERE scope = $1::bytea AND expires_at > clock_timestamp()`

// advanceSQL applies a version. $1 scope, $2 entity, $3 version (decimal
// text). When it does not apply, the current version is read from the
// snapshot; the caller checks that it is consistent (not below $3) and runs
// the statement again otherwise, as for claimSQL.
const advanceSQL = `WITH up AS (
	INSERT INTO {{versions}} AS v (scope, entity, version)
	SELECT $1::bytea, $2::text, $3::numeric WHERE $3::numeric > 0
	ON CONFLICT (scope, entity) DO UPDATE SET version = excluded.version
	WHERE v.version < excluded.version
	RETURNING v.version
)
SELECT true, version::text FROM up
UNION ALL
SELECT false, version::text FROM {{versions}}
WHERE scope = $1::bytea AND entity = $2::text AND NOT EXISTS (SELECT 1 FROM up)`

// sweepSQL deletes at most $1 rows whose purge time has passed. The inner
// SELECT walks the purge_at index and locks what it returns, skipping rows a
// claim is taking over right now; the outer test guards against a row
// rewritten in between.
const sweepSQL = `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS now)
DELETE FROM {{records}}
WHERE ctid = ANY (ARRAY(
	SELECT ctid FROM {{records}} WHERE purge_at <= (SELECT now FROM c)
	ORDER BY purge_at LIMIT $1 FOR UPDATE SKIP LOCKED))
AND purge_at <= (SELECT now FROM c)`

// watchSQL marks an in-progress record as watched. $1 scope, $2 key. It
// returns whether the record is in progress and marked; otherwise the
// watcher is woken at once (there is nothing to wait for, or a change raced
// with the mark).
const watchSQL = `WITH c AS MATERIALIZED (SELECT clock_timestamp() AS now),
u AS (
	UPDATE {{records}} r SET watched = true
	FROM c
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.state = 1 AND r.expires_at > c.now
		AND NOT r.watched
	RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM u) OR EXISTS (
	SELECT 1 FROM {{records}} r, c
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.state = 1 AND r.expires_at > c.now
		AND r.watched)`

// queries holds the statements with the configured names filled in.
type queries struct {
	claim, complete, release, extend, del, get, list, advance, sweep, watch string
}

func (n names) queries() queries {
	e := n.expand
	return queries{
		claim: e(claimSQL), complete: e(completeSQL), release: e(releaseSQL),
		extend: e(extendSQL), del: e(deleteSQL), get: e(getSQL), list: e(listSQL),
		advance: e(advanceSQL), sweep: e(sweepSQL), watch: e(watchSQL),
	}
}
