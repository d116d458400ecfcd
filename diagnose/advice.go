package diagnose

// advice is the fix and the test for one mode.
type advice struct {
	layer, fix, test string
}

// adviceFor holds the fix at the right layer and the test that would have
// caught each mode. The layer is where the invariant can be made atomic:
// an application-level check always leaves a window.
var adviceFor = map[string]advice{
	ModeCheckThenAct: {
		layer: "unique constraint",
		fix: "make the database the arbiter: add a UNIQUE constraint on the action's key (the entity fields plus a " +
			"caller-supplied request id) and INSERT the pending row with INSERT … ON CONFLICT DO NOTHING (an upsert) " +
			"before the side effect; the loser of the insert does not act. Pass the same caller-supplied key to the " +
			"downstream API, or run the effect through once.Do(ctx, once.Key{Scope: entity, ID: key}, …) so a " +
			"duplicate waits for and replays the first result. Do not widen the check's time window or add a lock " +
			"around the check: the window stays open.",
		test: "fire N identical requests released together by a barrier (goroutines + sync.WaitGroup, or once race) " +
			"and assert exactly one effect: one row for the entity and one downstream call; a sequential loop " +
			"cannot catch it.",
	},
	ModeDuplicateSideEffect: {
		layer: "idempotency key via once",
		fix: "have the caller send one idempotency key per user action (kept across retries and double clicks), " +
			"and run the effect through once.Do(ctx, once.Key{Scope: entity, ID: key}, …) or put once serve in " +
			"front of the endpoint: the second request replays the first result instead of acting again. Back it " +
			"with a UNIQUE constraint on the key where the effect is a row, and pass the key to the downstream API.",
		test: "send the same request twice, concurrently and one after the other, with the same idempotency key, " +
			"and assert one effect and byte-identical responses (once race with --key same does both).",
	},
	ModeRetryWithoutKey: {
		layer: "idempotency key via once",
		fix: "derive the idempotency key from what stays the same across attempts (the job id, the message id, the " +
			"client's Idempotency-Key) and wrap the effect in once.Do(ctx, once.Key{ID: key}, …): a retry after a " +
			"timeout or a crash replays the stored result, and an attempt whose outcome is unknown is reported as " +
			"abandoned instead of run again. Pass the same key to the downstream API.",
		test: "make the first attempt fail after the effect (a timeout injected after the downstream call, or " +
			"SIGKILL of the worker), let the retry run, and assert exactly one effect.",
	},
	ModeStaleEvent: {
		layer: "version guard",
		fix: "apply an event only if its version is newer than the entity's: once's Store.Advance(ctx, scope, " +
			"entity, version) returns applied=false for a stale one, or in SQL UPDATE … SET …, version = $v " +
			"WHERE id = $id AND version < $v and drop the event when no row changed. Do not rely on delivery order.",
		test: "deliver the entity's events in reverse order (the newer first, then the delayed older one) and " +
			"assert the final state is the newer event's.",
	},
	ModeLostUpdate: {
		layer: "conditional update",
		fix: "make the write conditional on what was read: UPDATE … SET …, version = version + 1 WHERE id = $id " +
			"AND version = $read_version, and re-read and retry when no row changed (optimistic locking); or use an " +
			"atomic UPDATE … SET x = x + $delta; or SELECT … FOR UPDATE inside the transaction when the " +
			"read-modify-write cannot be expressed as one statement.",
		test: "run two read-modify-write updates of the same entity released together by a barrier, each changing " +
			"a different field (or adding to a counter), and assert that both changes are in the final state.",
	},
}

func advise(f *Finding) {
	ad := adviceFor[f.Mode]
	f.FixLayer, f.Fix, f.Test = ad.layer, ad.fix, ad.test
}
