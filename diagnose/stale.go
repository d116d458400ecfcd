package diagnose

import "strconv"

// staleCand is a lower version applied after a higher one, held for a window
// in case the flow then says it ignored the event.
type staleCand struct {
	e, newer *event
	dropped  bool
}

// checkStale compares an event's version with the highest version seen for
// its entity. Reads and lines that say they did not apply are not
// applications; a stale candidate must say it applied something (renewed,
// updated, applied, handled…), not merely that it was received.
func (a *analyzer) checkStale(e *event) {
	if len(e.ents) == 0 || e.negative() || e.kind&(kRead|kCheck) != 0 && e.kind&(kWrite|kEffect) == 0 {
		return
	}
	cur, _ := a.versions.get(e.tuple)
	switch {
	case cur == nil || e.version > cur.version:
		a.versions.put(e.tuple, owned(e))
	case e.version == cur.version && e.kind&kApply != 0 && cur.kind&kApply == 0:
		a.versions.put(e.tuple, owned(e)) // the same version, now applied: the better evidence
	case e.version < cur.version && e.kind&kApply != 0:
		a.stale = append(a.stale, &staleCand{e: e, newer: cur})
	}
}

// cancelStale drops candidates whose flow (or entity and version) later
// logged that the event was ignored: the guard worked.
func (a *analyzer) cancelStale(e *event) {
	for _, c := range a.stale {
		if e.corr != "" && e.corr == c.e.corr ||
			e.tuple == c.e.tuple && e.hasVer && e.version == c.e.version {
			c.dropped = true
		}
	}
}

// finishStale reports candidates older than the window.
func (a *analyzer) finishStale(cutoff int64, all bool) {
	n := 0
	for n < len(a.stale) && (all || a.stale[n].e.t < cutoff) {
		c := a.stale[n]
		if !c.dropped && !a.staleReported(c) {
			a.findings = append(a.findings, a.staleFinding(c))
		}
		n++
	}
	a.stale = compact(a.stale, n)
}

// staleReported merges a second line of the same stale event (same flow,
// same entity) into the first finding.
func (a *analyzer) staleReported(c *staleCand) bool {
	for i := len(a.findings) - 1; i >= 0 && i >= len(a.findings)-16; i-- {
		f := &a.findings[i]
		if f.Mode == ModeStaleEvent && f.Entity == firstField(c.e.ents) && f.Timeline[len(f.Timeline)-1].CorrelationID == c.e.corr && c.e.corr != "" {
			return true
		}
	}
	return false
}

func firstField(fs []field) string {
	if len(fs) == 0 {
		return ""
	}
	return fs[0].String()
}

func (a *analyzer) staleFinding(c *staleCand) Finding {
	f := Finding{Mode: ModeStaleEvent}
	f.setEntity(c.e.ents)
	for _, e := range []*event{c.newer, c.e} {
		if e.corr != "" {
			f.CorrelationIDs = append(f.CorrelationIDs, e.corr)
		}
	}
	roles := map[*event]string{c.newer: "applied", c.e: "stale"}
	a.setTimeline(&f, []*event{c.newer, c.e}, roles)
	f.Evidence = a.evidence([]*event{c.newer, c.e}, roles)
	f.Why = "for " + joinFields(c.e.ents) + ", version " + itoa(c.newer.version) + " (" + quote(c.newer.msg) + ", " +
		a.at(c.newer) + ") was applied, then version " + itoa(c.e.version) + " (" + quote(c.e.msg) + ", " + a.at(c.e) +
		") arrived " + msBetween(c.newer, c.e) + " later and was applied too, undoing the newer state. " +
		"An ordering bug, not a duplicate (different versions) and not a lost update (no read→write race; " +
		"the older event simply came last)."
	advise(&f)
	return f
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
