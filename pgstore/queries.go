package pgstore

import (
	"fmt"
	"strings"
)

// The statements below implement internal/fsm's transitions in SQL; keep them
// in step with it. Each runs as one statement (its own transaction outside
// DoTx). {{records}} and {{versions}} are replaced with the configured table
// names.
//
// Time: a statement judges a row at N = greatest(now(), updated_at). now()
// is the statement's transaction start, read before its snapshot was taken
// and before any wait for a row lock, so a row version it sees may have been
// written later than now(); every write sets updated_at to its own N, and
// taking the later of the two keeps time from running backwards on a row.
// (A Delete committed while a claim waited must not look as if it came after
// the claim.)

// span converts the difference of two timestamps into an interval of
// seconds only. A plain difference carries whole days, and adding a day to a
// timestamptz follows the session's time zone across daylight-saving
// changes; every interval this package stores is a fixed length.
func span(diff string) string {
	return "make_interval(secs => extract(epoch FROM " + diff + "))"
}

// rowNow is N for the row r.
const rowNow = `greatest(now(), r.updated_at)`

// recordCols are the record columns every statement returns, in the order
// row.dest scans them.
const recordCols = `fingerprint, state, token, attempts, lease, lease_expires_at,
	expires_at, created_at, updated_at, completed_at, result, meta`

// A request parameter of claimSQL or completeSQL, which run for one key
// or for a batch of keys (batch.go).
type param struct{ name, typ string }

// batchLockTimeout bounds each wait of a batch's statement for a lock (see
// batch.go): a batch must not wait behind a DoTx that holds one of its keys
// for as long as the DoTx's function runs. Tests shorten it.
var batchLockTimeout = "1s"

// form is how a statement of claimSQL or completeSQL takes its requests.
type form int

const (
	alone     form = iota // one key, its own statement: DoTx, a call that left its batch
	batchOne              // a batch of one key
	batchMany             // a batch of keys
	forms
)

// requests returns the CTEs that give a statement its requests as rows of
// req, from parameters $1, $2, … in the order of ps, and the condition
// that replaces {{lock}}.
//
// Alone, or in a batch of one key, the requests are scalars in one row,
// which the planner folds into the statement.
//
// A batch sets lock_timeout for the rest of its transaction (see batch.go)
// before it can wait for a lock: every row it inserts or updates has
// passed the lock condition (a batch of one key) or comes from arr (a batch
// of keys), which is MATERIALIZED and so evaluated once, before any row.
//
// A batch of keys takes arrays, one element per key, and unnests them. The
// plan must not depend on how many keys there are. arr being MATERIALIZED,
// the planner cannot see how long the arrays are, and the LIMIT (no fewer
// than the keys: it changes nothing) makes it expect a single row, as a
// LIMIT whose value it does not know does. Every batch then gets the same
// plan, a nested loop that looks each key up in the primary key, however
// few rows the table had when the plan was made (the plan is kept for the
// connection's life: a hash join over a sequential scan chosen while the
// table was empty would stay). And PostgreSQL keeps that generic plan where
// it would otherwise plan each execution anew (a custom plan for each batch
// size), which costs more than running the statement.
func requests(ps []param, f form) (ctes, lock string) {
	var cols, scalars, arrays, elems []string
	for i, p := range ps {
		cols = append(cols, p.name)
		scalars = append(scalars, fmt.Sprintf("$%d::%s AS %s", i+1, p.typ, p.name))
		arrays = append(arrays, fmt.Sprintf("$%d::%s[] AS %s", i+1, p.typ, p.name))
		elems = append(elems, "arr."+p.name)
	}
	setTimeout := "set_config('lock_timeout', '" + batchLockTimeout + "', true)"
	switch f {
	case alone:
		return "req AS NOT MATERIALIZED (SELECT " + strings.Join(scalars, ", ") + ")", ""
	case batchOne:
		return "req AS NOT MATERIALIZED (SELECT " + strings.Join(scalars, ", ") + ")", "\n\tAND " + setTimeout + " IS NOT NULL"
	}
	return "arr AS MATERIALIZED (SELECT " + strings.Join(arrays, ", ") + ", " + setTimeout + " AS lock_timeout),\n" +
		"req AS (SELECT q.* FROM arr, unnest(" + strings.Join(elems, ", ") + ") AS q(" + strings.Join(cols, ", ") +
		") WHERE arr.lock_timeout IS NOT NULL LIMIT (SELECT cardinality(key) FROM arr))", ""
}

// claimParams are claimSQL's requests: scope, key, fingerprint, lease and
// retention (µs), whether to retry an abandoned key.
var claimParams = []param{{"scope", "bytea"}, {"key", "text"}, {"fp", "bytea"},
	{"lease_us", "bigint"}, {"keep_us", "bigint"}, {"retry", "boolean"}}

// claimSQL claims keys, each as a claim of its own would ({{req}} and
// {{lock}} come from requests(claimParams)). It returns a row per key that it answers, with
// the key first.
//
// cur judges each record as the statement's snapshot shows it. The
// outcomes that do not acquire change nothing, so they are answered from
// the snapshot without writing or locking (linearized at the snapshot).
// Otherwise up inserts the record or, on conflict, takes it over: ON
// CONFLICT DO UPDATE locks the latest committed version of the row (waiting
// for a concurrent writer) and its WHERE re-checks that the key may still
// be acquired on that version, so of any number of concurrent claims only
// one acquires. When the re-check fails, nothing is returned for the key
// at all (the snapshot is older than the row that won, so a row read from
// it would be stale), and the caller runs the claim again with a fresh
// snapshot, which then sees the winner.
//
// The takeover also requires that the row was last written before the
// statement's now() (excluded.created_at), so that it can use the values
// computed for the insert; a row written later, by a transaction that
// committed while this one waited, sends the claim round again, with a
// now() that is later than that write.
//
// A batch holds each key once (ON CONFLICT DO UPDATE cannot change a row
// twice in one statement). Its rows are locked in the order of the arrays,
// which the caller sorts, so that two batches do not deadlock on each
// other's rows.
var claimSQL = `WITH {{req}},
cur AS (
	SELECT r.*, ` + rowNow + ` AS now, CASE
		WHEN r.expires_at <= ` + rowNow + ` OR r.state = 3 THEN 0
		WHEN ` + curMismatch + ` THEN 5
		WHEN r.state = 2 THEN 2
		WHEN r.lease_expires_at > ` + rowNow + ` THEN 3
		WHEN NOT q.retry THEN 4
		ELSE 0 END AS outcome
	FROM req q JOIN {{records}} r ON r.scope = q.scope AND r.key = q.key
),
up AS (
	INSERT INTO {{records}} AS r (scope, key, fingerprint, state, token, attempts, lease,
		lease_expires_at, expires_at, purge_at, created_at, updated_at)
	SELECT q.scope, q.key, q.fp, 1, 1, 1, d.lease,
		now() + d.lease, now() + d.keep, now() + d.keep + d.lease, now(), now()
	FROM req q, LATERAL (SELECT q.lease_us * interval '1 microsecond' AS lease,
		greatest(q.lease_us, q.keep_us) * interval '1 microsecond' AS keep) d
	WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.scope = q.scope AND cur.key = q.key AND cur.outcome <> 0){{lock}}
	ON CONFLICT (scope, key) DO UPDATE SET
		token = r.token + 1,
		attempts = CASE WHEN r.expires_at > excluded.created_at THEN r.attempts + 1 ELSE 1 END,
		created_at = CASE WHEN r.expires_at > excluded.created_at THEN r.created_at ELSE excluded.created_at END,
		fingerprint = CASE WHEN r.expires_at > excluded.created_at AND r.state = 1
			AND coalesce(octet_length(excluded.fingerprint), 0) = 0
			THEN r.fingerprint ELSE excluded.fingerprint END,
		watched = r.watched AND r.expires_at > excluded.created_at AND r.state = 1,
		state = 1,
		lease = greatest(excluded.lease, ` + span("r.purge_at - excluded.expires_at") + `),
		lease_expires_at = excluded.lease_expires_at,
		expires_at = excluded.expires_at,
		purge_at = greatest(excluded.purge_at, r.purge_at),
		updated_at = excluded.updated_at,
		completed_at = NULL,
		result = NULL,
		meta = NULL
	WHERE r.updated_at <= excluded.created_at
		AND (r.expires_at <= excluded.created_at OR r.state = 3
			OR (r.state = 1 AND r.lease_expires_at <= excluded.created_at
				AND (SELECT q.retry FROM req q WHERE q.scope = r.scope AND q.key = r.key)
				AND NOT ` + upMismatch + `))
	RETURNING r.*, r.updated_at AS now, 1 AS outcome
)
SELECT key, outcome, ` + recordCols + `, now FROM up
UNION ALL
SELECT key, outcome, ` + recordCols + `, now FROM cur WHERE outcome <> 0`

// The mismatch tests of claimSQL: both fingerprints non-empty and different.
// coalesce keeps an empty (NULL) fingerprint from making the test NULL.
const (
	curMismatch = `(coalesce(octet_length(q.fp), 0) > 0 AND coalesce(octet_length(r.fingerprint), 0) > 0 AND r.fingerprint <> q.fp)`
	upMismatch  = `(coalesce(octet_length(excluded.fingerprint), 0) > 0 AND coalesce(octet_length(r.fingerprint), 0) > 0 AND r.fingerprint <> excluded.fingerprint)`
)

// notify is the RETURNING column of the statements that complete, release
// or delete: it notifies the change channel (parameter $%d) with the key's
// hash (notifyID, computed here only for the rows it is needed for) when a
// watcher marked the row. Other rows do not notify: a notifying commit
// takes a cluster-wide lock.
const notify = `CASE WHEN r.watched THEN pg_notify($%d::text,
	encode(substr(sha256(r.scope || '\x00'::bytea || convert_to(r.key, 'UTF8')), 1, 16), 'hex'))::text END`

// completeParams are completeSQL's requests: scope, key, token, result
// data, result metadata (JSON text).
var completeParams = []param{{"scope", "bytea"}, {"key", "text"}, {"token", "bigint"},
	{"result", "bytea"}, {"meta", "text"}}

// completeSQL completes keys ({{req}} and {{lock}} come from
// requests(completeParams)); $6 is the change channel. It returns the key
// of each record it completed: a key missing was fenced. The row is rewritten also when it is already
// completed with an equal result, so that the repeat returns a row and is
// told apart from a fenced token without a second look.
var completeSQL = `WITH {{req}}
UPDATE {{records}} r SET
	state = 2,
	result = q.result,
	meta = q.meta::jsonb,
	completed_at = CASE WHEN r.state = 1 THEN ` + rowNow + ` ELSE r.completed_at END,
	updated_at = CASE WHEN r.state = 1 THEN ` + rowNow + ` ELSE r.updated_at END
FROM req q
WHERE r.scope = q.scope AND r.key = q.key AND r.token = q.token AND r.expires_at > ` + rowNow + `
	AND (r.state = 1 OR (r.state = 2
		AND coalesce(r.result, ''::bytea) = coalesce(q.result, ''::bytea)
		AND coalesce(r.meta, '{}'::jsonb) = coalesce(q.meta::jsonb, '{}'::jsonb))){{lock}}
RETURNING r.key, ` + fmt.Sprintf(notify, 6)

// releaseSQL releases a key. $1 scope, $2 key, $3 token, $4 channel. A
// second release by the same token matches too (a no-op).
var releaseSQL = `UPDATE {{records}} r SET
	state = 3,
	updated_at = CASE WHEN r.state = 1 THEN ` + rowNow + ` ELSE r.updated_at END
WHERE r.scope = $1::bytea AND r.key = $2::text AND r.token = $3::bigint AND r.expires_at > ` + rowNow + `
	AND r.state IN (1, 3)
RETURNING ` + fmt.Sprintf(notify, 4)

// extendSQL renews a lease. $1 scope, $2 key, $3 token, $4 lease (µs). Like
// a takeover, it never moves the purge time earlier: the lease is lengthened
// instead (fsm.keepPurge).
var extendSQL = `WITH d AS (SELECT $4::bigint * interval '1 microsecond' AS lease)
UPDATE {{records}} r SET
	lease = greatest(d.lease, ` + span("r.purge_at - greatest(r.expires_at, "+rowNow+" + d.lease)") + `),
	lease_expires_at = ` + rowNow + ` + d.lease,
	expires_at = greatest(r.expires_at, ` + rowNow + ` + d.lease),
	purge_at = greatest(greatest(r.expires_at, ` + rowNow + ` + d.lease) + d.lease, r.purge_at),
	updated_at = ` + rowNow + `
FROM d
WHERE r.scope = $1::bytea AND r.key = $2::text AND r.token = $3::bigint AND r.expires_at > ` + rowNow + `
	AND r.state = 1
RETURNING 1`

// deleteSQL expires a record now and keeps its tombstone until a holder's
// lease would have passed, plus a lease. $1 scope, $2 key, $3 channel.
var deleteSQL = `UPDATE {{records}} r SET
	expires_at = ` + rowNow + `,
	lease = r.lease + greatest(` + span("r.lease_expires_at - "+rowNow) + `, interval '0'),
	purge_at = ` + rowNow + ` + r.lease + greatest(` + span("r.lease_expires_at - "+rowNow) + `, interval '0'),
	updated_at = ` + rowNow + `
WHERE r.scope = $1::bytea AND r.key = $2::text AND r.expires_at > ` + rowNow + `
RETURNING ` + fmt.Sprintf(notify, 3)

// getSQL reads a live record. $1 scope, $2 key.
const getSQL = `SELECT ` + recordCols + ` FROM {{records}} r
WHERE r.scope = $1::bytea AND r.key = $2::text AND r.expires_at > ` + rowNow

// listSQL reads the live records of a scope. $1 scope.
const listSQL = `SELECT key, ` + recordCols + ` FROM {{records}} r
WHERE r.scope = $1::bytea AND r.expires_at > ` + rowNow

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
// rewritten in between. purge_at is never below updated_at, so now() is
// late enough here.
const sweepSQL = `DELETE FROM {{records}}
WHERE ctid = ANY (ARRAY(
	SELECT ctid FROM {{records}} WHERE purge_at <= now()
	ORDER BY purge_at LIMIT $1 FOR UPDATE SKIP LOCKED))
AND purge_at <= now()`

// watchSQL marks an in-progress record as watched. $1 scope, $2 key. It
// returns whether the record is in progress and marked; otherwise the
// watcher is woken at once (there is nothing to wait for, or a change raced
// with the mark).
const watchSQL = `WITH u AS (
	UPDATE {{records}} r SET watched = true
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.state = 1 AND r.expires_at > ` + rowNow + `
		AND NOT r.watched
	RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM u) OR EXISTS (
	SELECT 1 FROM {{records}} r
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.state = 1 AND r.expires_at > ` + rowNow + `
		AND r.watched)`

// watchedSQL tells, from a fresh snapshot, whether the record is in progress
// and watched: watchSQL's own EXISTS reads the snapshot its statement began
// with, which misses a mark that a concurrent watcher committed while this
// one waited for the row lock. $1 scope, $2 key.
const watchedSQL = `SELECT EXISTS (
	SELECT 1 FROM {{records}} r
	WHERE r.scope = $1::bytea AND r.key = $2::text AND r.state = 1 AND r.expires_at > ` + rowNow + `
		AND r.watched)`

// queries holds the statements with the configured names filled in; claim
// and complete in each form.
type queries struct {
	claim, complete                                                 [forms]string
	release, extend, del, get, list, advance, sweep, watch, watched string
}

func (n names) queries() queries {
	e := n.expand
	q := queries{
		release: e(releaseSQL), extend: e(extendSQL), del: e(deleteSQL), get: e(getSQL), list: e(listSQL),
		advance: e(advanceSQL), sweep: e(sweepSQL), watch: e(watchSQL), watched: e(watchedSQL),
	}
	withReq := func(sql string, ps []param, f form) string {
		ctes, lock := requests(ps, f)
		return e(strings.NewReplacer("{{req}}", ctes, "{{lock}}", lock).Replace(sql))
	}
	for f := range forms {
		q.claim[f] = withReq(claimSQL, claimParams, f)
		q.complete[f] = withReq(completeSQL, completeParams, f)
	}
	return q
}
