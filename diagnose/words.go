package diagnose

import (
	"strings"
	"unicode"
)

// msgKind says what a log message reports, from the words it uses. Structured
// loggers keep messages constant ("charge created"), so a few verb lists go a
// long way; the lists are documented in docs/diagnose.md.
type msgKind uint16

const (
	kEffect   msgKind = 1 << iota // a side effect happened: created, charged, sent…
	kNegative                     // the step did not take effect: skipped, duplicate, failed…
	kRead                         // state was read: loaded, fetched, selected…
	kCheck                        // an existence/dedup check: checked, lookup, found…
	kWrite                        // shared state was overwritten: updated, saved…
	kRetry                        // a new attempt began: retrying, redelivered…
	kApply                        // an event was applied: applied, handled, processed…
)

var (
	effectWords = set("created", "inserted", "charged", "captured", "sent", "emailed", "mailed",
		"published", "enqueued", "dispatched", "delivered", "issued", "booked", "reserved",
		"shipped", "refunded", "paid", "notified", "granted", "provisioned", "credited", "debited",
		"transferred", "registered", "subscribed", "placed", "added", "recorded", "posted",
		"generated", "allocated", "opened", "resent", "texted", "invoiced", "minted", "scheduled", "confirmed",
		"renewed", "cancelled", "canceled", "activated", "deactivated", "upgraded", "downgraded")
	negativeWords = set("not", "no", "skip", "skipped", "skipping", "duplicate", "duplicated", "dup",
		"already", "replay", "replayed", "replaying", "ignore", "ignored", "ignoring", "reject",
		"rejected", "rejecting", "fail", "failed", "failing", "failure", "error", "errored", "conflict",
		"denied", "abort", "aborted", "dropped", "drop", "dropping", "deduplicated", "deduped",
		"exists", "existing", "reused", "reuse", "cached", "stale", "discarded", "discard",
		"outdated", "superseded", "noop", "unchanged", "unable", "cannot", "invalid", "declined",
		"timeout", "timed", "rollback", "rolled", "refused", "blocked", "locked", "busy",
		"fenced", "mismatch", "older", "obsolete", "nothing", "none")
	readWords = set("read", "reads", "load", "loaded", "loading", "fetch", "fetched", "fetching",
		"get", "got", "select", "selected", "lookup", "looked", "find", "found", "query", "queried",
		"retrieve", "retrieved", "reading", "current")
	checkWords = set("check", "checked", "checking", "lookup", "looked", "dedup", "dedupe",
		"exist", "exists", "find", "found", "search", "searched", "count", "counted", "select",
		"selected", "query", "queried", "verify", "verifying", "recent", "duplicate", "duplicates")
	writeWords = set("updated", "saved", "wrote", "written", "stored", "persisted", "modified",
		"patched", "changed", "overwrote", "overwritten", "incremented", "decremented", "set",
		"replaced", "upserted", "adjusted", "applied", "committed", "saving", "updating", "writing",
		"persisting", "overwriting")
	applyWords = set("applied", "applying", "apply", "handled", "processed", "consumed", "executed",
		"performed", "enforced")
	retryWords = set("retry", "retrying", "retried", "redeliver", "redelivered", "redelivery",
		"requeued", "reattempt", "reattempting", "resubmitted", "resending", "resent", "retries")
)

// classifyMsg returns the kinds of a message.
func classifyMsg(msg string) msgKind {
	var k msgKind
	for _, w := range words(msg) {
		if effectWords[w] {
			k |= kEffect
		}
		if negativeWords[w] {
			k |= kNegative
		}
		if readWords[w] {
			k |= kRead
		}
		if checkWords[w] {
			k |= kCheck
		}
		if writeWords[w] {
			k |= kWrite
		}
		if retryWords[w] {
			k |= kRetry
		}
		if applyWords[w] || effectWords[w] || writeWords[w] {
			k |= kApply
		}
	}
	return k
}

// words splits a message into lower-case words, also at camelCase humps:
// "stripe.chargeCreated" → stripe, charge, created.
func words(msg string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	prev := rune(0)
	for _, r := range msg {
		switch {
		case unicode.IsUpper(r):
			if unicode.IsLower(prev) {
				flush()
			}
			cur.WriteRune(unicode.ToLower(r))
		case unicode.IsLetter(r):
			cur.WriteRune(r)
		default:
			flush()
		}
		prev = r
	}
	flush()
	return out
}

// negativeValue reports whether a status/result value says the step did not
// take effect ("skipped", "duplicate", "ignored_stale").
func negativeValue(v string) bool {
	return classifyMsg(v)&kNegative != 0
}
