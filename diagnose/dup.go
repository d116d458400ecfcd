package diagnose

import (
	"slices"
	"strings"
)

// part is one flow's share in a case: the action it did and what followed.
type part struct {
	f       *flow
	act     *event   // its line with the case's action key
	effects []*event // effect lines at or after act
	check   *event   // a check line before its first effect
	inputs  map[string]string
	retry   bool // attempt > 1 or a retry marker: this flow is a retry
}

// judgeCase looks, for each action key of the case, for flows that did that
// action on that entity and each produced the same kind of effect.
func (a *analyzer) judgeCase(c *kase) {
	var reported [][]string
	for _, k := range c.keys {
		parts := casePart(c, k)
		for _, group := range clusterInputs(parts) {
			dups, effMsg := duplicates(group)
			if len(dups) < 2 {
				continue
			}
			corrs := corrsOf(dups)
			if coveredBy(corrs, reported) {
				continue
			}
			reported = append(reported, corrs)
			a.findings = append(a.findings, a.dupFinding(k, dups, effMsg))
		}
	}
}

// casePart finds each flow's first line with action key k.
func casePart(c *kase, k actionKey) []*part {
	var parts []*part
	for _, f := range c.flows {
		for _, e := range f.events {
			if e.msg == k.msg && e.tuple == k.tuple && !e.negative() {
				if p := newPart(f, e); len(p.effects) > 0 {
					parts = append(parts, p)
				}
				break
			}
		}
	}
	slices.SortStableFunc(parts, func(x, y *part) int { return int(x.act.seq - y.act.seq) })
	return parts
}

func newPart(f *flow, act *event) *part {
	p := &part{f: f, act: act, inputs: map[string]string{}}
	for _, e := range f.events {
		if e.attempt > 1 || e.kind&kRetry != 0 {
			p.retry = true
		}
		if e.seq >= act.seq && e.isEffect() {
			p.effects = append(p.effects, e)
		}
	}
	first := int64(1 << 62)
	if len(p.effects) > 0 {
		first = p.effects[0].seq
	}
	for _, e := range f.events {
		if e.seq >= first {
			break
		}
		if e.kind&kCheck != 0 && p.check == nil {
			p.check = e
		}
		for _, x := range e.ents {
			if _, ok := p.inputs[x.Name]; !ok {
				p.inputs[x.Name] = x.Value
			}
		}
	}
	return p
}

// clusterInputs splits parts whose inputs disagree (another product, another
// amount of the same user): those are different actions, not duplicates.
func clusterInputs(parts []*part) [][]*part {
	var groups [][]*part
next:
	for _, p := range parts {
		for i, g := range groups {
			if compatible(g, p) {
				groups[i] = append(g, p)
				continue next
			}
		}
		groups = append(groups, []*part{p})
	}
	return groups
}

func compatible(g []*part, p *part) bool {
	for _, q := range g {
		for k, v := range p.inputs {
			if w, ok := q.inputs[k]; ok && w != v {
				return false
			}
		}
	}
	return true
}

// duplicates returns the parts whose effect of one kind (message) is a new
// effect: parts whose effect carries the same ids as an earlier part's are
// replays and are left out. It picks the first effect message that at least
// two parts produced.
func duplicates(g []*part) ([]*part, string) {
	if len(g) < 2 {
		return nil, ""
	}
	for _, msg := range effectMsgs(g) {
		var dups []*part
		var ids [][]field
		for _, p := range g {
			e := effectNamed(p, msg)
			if e == nil {
				continue
			}
			mine := newIDs(e, p.inputs)
			if replayOf(mine, ids) {
				continue
			}
			dups = append(dups, p)
			ids = append(ids, mine)
		}
		if len(dups) >= 2 {
			return dups, msg
		}
	}
	return nil, ""
}

func effectMsgs(g []*part) []string {
	var msgs []string
	for _, p := range g {
		for _, e := range p.effects {
			if !slices.Contains(msgs, e.msg) {
				msgs = append(msgs, e.msg)
			}
		}
	}
	return msgs
}

func effectNamed(p *part, msg string) *event {
	for _, e := range p.effects {
		if e.msg == msg {
			return e
		}
	}
	return nil
}

// newIDs are the fields of an effect line that the flow did not have before
// its first effect: the ids of what it produced (a charge id, a row id).
func newIDs(e *event, inputs map[string]string) []field {
	var out []field
	for _, x := range e.ents {
		if v, ok := inputs[x.Name]; !ok || v != x.Value {
			out = append(out, x)
		}
	}
	return out
}

// replayOf reports whether ids name the same effect as one of prev: every
// field they share is equal, and they share at least one.
func replayOf(ids []field, prev [][]field) bool {
	for _, p := range prev {
		shared, equal := 0, true
		for _, x := range ids {
			for _, y := range p {
				if x.Name == y.Name {
					shared++
					equal = equal && x.Value == y.Value
				}
			}
		}
		if shared > 0 && equal {
			return true
		}
	}
	return false
}

func corrsOf(ps []*part) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.f.corr
	}
	return out
}

func coveredBy(corrs []string, reported [][]string) bool {
	for _, r := range reported {
		all := true
		for _, c := range corrs {
			all = all && slices.Contains(r, c)
		}
		if all {
			return true
		}
	}
	return false
}

// dupFinding builds the finding for parts that each produced an effect.
func (a *analyzer) dupFinding(k actionKey, dups []*part, effMsg string) Finding {
	mode, why := a.dupMode(dups, effMsg)
	var rows []*event
	for _, p := range dups {
		end := p.effects[len(p.effects)-1]
		for _, e := range p.f.events {
			if e.seq <= end.seq {
				rows = append(rows, e)
			}
		}
	}
	roles := map[*event]string{}
	for _, p := range dups {
		roles[p.act] = "request"
		if p.check != nil {
			roles[p.check] = "check"
		}
		for _, e := range p.effects {
			roles[e] = "effect"
		}
	}
	f := Finding{Mode: mode, CorrelationIDs: corrsOf(dups), Why: why}
	f.setEntity(k.ents)
	a.setTimeline(&f, rows, roles)
	f.Evidence = a.evidence(rows, roles)
	advise(&f)
	f.Reproduce = a.reproduce(dups)
	return f
}

// dupMode tells a race (overlapping flows) from a resubmission and a retry.
func (a *analyzer) dupMode(dups []*part, effMsg string) (string, string) {
	x, y := dups[0], dups[1]
	firstEffect := effectNamed(x, effMsg)
	overlap := y.act.seq < firstEffect.seq
	effects := "each produced its own " + quote(effMsg) + " effect" + idsDiffer(dups, effMsg)
	keys := keysDiffer(dups)
	for _, p := range dups[1:] {
		if p.retry {
			return ModeRetryWithoutKey, "correlation " + p.f.corr + " is a retry (attempt > 1 or a retry marker) of the action " +
				corrsText(dups[:1]) + " already did, and " + effects + keys +
				": the retry carried no idempotency key that would have replayed the first result. " +
				"Not a check-then-act race: the retry announces itself; fixing the race alone would not stop it."
		}
	}
	if !overlap {
		return ModeDuplicateSideEffect, corrsText(dups) + " did the same action on the same entity " +
			msBetween(x.act, y.act) + " apart, and " + effects + keys + ". They did not overlap (" +
			y.f.corr + " began after " + x.f.corr + "'s effect), so this is a resubmission, not a race: " +
			"not a retry either (new correlation id, no attempt > 1). Nothing recognised the second request as the same action."
	}
	if allChecked(dups) {
		return ModeCheckThenAct, corrsText(dups) + " each checked first (" + checksText(a, dups) +
			") and all checks ran before the first effect, so every check saw nothing and every request went on: " +
			effects + keys + ". A time-of-check/time-of-use race, not a retry (different correlation ids, no attempt > 1) " +
			"and not a lost update (each created a new effect rather than overwriting a shared value)."
	}
	return ModeDuplicateSideEffect, corrsText(dups) + " did the same action on the same entity " + msBetween(x.act, y.act) +
		" apart, overlapping in time (" + y.f.corr + " began before " + x.f.corr + "'s effect), and " + effects + keys +
		". A double submit racing through; no check is logged, so nothing stood between the request and the effect. " +
		"Not a retry (different correlation ids, no attempt > 1); not a lost update (new effects, nothing overwritten)."
}

func allChecked(ps []*part) bool {
	for _, p := range ps {
		if p.check == nil {
			return false
		}
	}
	return true
}

func checksText(a *analyzer, ps []*part) string {
	var s []string
	for _, p := range ps {
		s = append(s, a.at(p.check))
	}
	return strings.Join(s, ", ")
}

// idsDiffer describes the differing effect ids, e.g. "(stripe_id pi_a ≠ pi_b)".
func idsDiffer(ps []*part, effMsg string) string {
	var parts []string
	for _, p := range ps {
		for _, x := range newIDs(effectNamed(p, effMsg), p.inputs) {
			parts = append(parts, x.String())
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, " vs ") + ")"
}

// keysDiffer notes idempotency keys that differ between the flows: a key
// derived per call (a clock, a random number) cannot deduplicate anything.
func keysDiffer(ps []*part) string {
	var vals []string
	name := ""
	for _, p := range ps {
		for _, e := range p.f.events {
			if len(e.keys) > 0 {
				name = e.keys[0].Name
				vals = append(vals, e.keys[0].Value)
				break
			}
		}
	}
	if len(vals) < 2 {
		return ""
	}
	for _, v := range vals[1:] {
		if v != vals[0] {
			return "; their " + name + " values differ (" + strings.Join(vals, " vs ") +
				"), so the key was minted per call, not taken from the caller (see once vet's clockkey)"
		}
	}
	return "; they carried the same " + name + ", which the effect's path did not honour"
}

func corrsText(ps []*part) string {
	return strings.Join(corrsOf(ps), " and ")
}

func quote(s string) string { return "\"" + s + "\"" }
