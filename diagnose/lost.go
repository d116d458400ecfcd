package diagnose

import "slices"

// interval is one flow's read of an entity and its later write.
type interval struct {
	corr string
	r, w *event
}

// lostGroup gathers the flows of one lost update on one entity.
type lostGroup struct {
	finding int // index in analyzer.findings
	ivs     []*interval
	last    int64
}

// checkLost runs on a write: it finds the flow's last read of the same
// entity, and reports the pair if another flow wrote the entity between that
// read and this write, having read it before.
func (a *analyzer) checkLost(w *event) {
	f := a.flows[w.corr]
	if f == nil {
		return
	}
	r := lastRead(f, w)
	if r == nil {
		return
	}
	iv := &interval{corr: w.corr, r: r, w: w}
	for _, j := range a.lost[w.tuple] {
		if j.corr != iv.corr && w.t-j.w.t <= a.window && overlap(j, iv) {
			a.addLost(w.tuple, j, iv)
		}
	}
	a.lost[w.tuple] = append(a.lost[w.tuple], iv)
	a.lostFIFO = append(a.lostFIFO, fifoItem{w.tuple, w.t})
}

// lastRead is the flow's latest read of w's entity before w, provided the
// flow did not write the entity in between.
func lastRead(f *flow, w *event) *event {
	for i := len(f.events) - 1; i >= 0; i-- {
		e := f.events[i]
		if e.seq >= w.seq || !sameEntity(e.ents, w.ents) {
			continue
		}
		if e.kind&kWrite != 0 && !e.negative() {
			return nil
		}
		if e.kind&kRead != 0 && e.kind&kEffect == 0 {
			return e
		}
	}
	return nil
}

// sameEntity reports whether two lines name the same entity: they share a
// field=value and disagree on no field they both carry.
func sameEntity(a, b []field) bool {
	shared := false
	for _, x := range a {
		for _, y := range b {
			if x.Name == y.Name {
				if x.Value != y.Value {
					return false
				}
				shared = true
			}
		}
	}
	return shared
}

// overlap reports whether iv read before j wrote (j read first and wrote
// first): both then wrote values computed from the same state. Versions,
// when logged, must agree on that.
func overlap(j, iv *interval) bool {
	if iv.r.seq >= j.w.seq {
		return false
	}
	if j.r.hasVer && iv.r.hasVer && j.r.version != iv.r.version {
		return false
	}
	return true
}

func (a *analyzer) addLost(tuple string, j, iv *interval) {
	if g := a.lostOpen[tuple]; g != nil && slices.Contains(g.ivs, j) {
		if !slices.Contains(g.ivs, iv) {
			g.ivs = append(g.ivs, iv)
		}
		g.last = iv.w.t
		a.findings[g.finding] = a.lostFinding(g.ivs)
		return
	}
	g := &lostGroup{finding: len(a.findings), ivs: []*interval{j, iv}, last: iv.w.t}
	a.lostOpen[tuple] = g
	a.findings = append(a.findings, a.lostFinding(g.ivs))
}

func (a *analyzer) evictLost(cutoff int64, all bool) {
	n := 0
	for n < len(a.lostFIFO) && (all || a.lostFIFO[n].t < cutoff) {
		k := a.lostFIFO[n].key
		ivs := a.lost[k]
		for len(ivs) > 0 && (all || ivs[0].w.t < cutoff) {
			ivs = ivs[1:]
		}
		if len(ivs) == 0 {
			delete(a.lost, k)
		} else {
			a.lost[k] = ivs
		}
		if g := a.lostOpen[k]; g != nil && (all || g.last < cutoff) {
			delete(a.lostOpen, k)
		}
		n++
	}
	a.lostFIFO = compact(a.lostFIFO, n)
}

func (a *analyzer) lostFinding(ivs []*interval) Finding {
	f := Finding{Mode: ModeLostUpdate}
	f.setEntity(ivs[0].w.ents)
	roles := map[*event]string{}
	var rows []*event
	for _, iv := range ivs {
		f.CorrelationIDs = append(f.CorrelationIDs, iv.corr)
		roles[iv.r], roles[iv.w] = "read", "write"
		rows = append(rows, iv.r, iv.w)
	}
	a.setTimeline(&f, rows, roles)
	f.Evidence = a.evidence(rows, roles)
	x, y := ivs[0], ivs[1]
	f.Why = x.corr + " read " + joinFields(x.w.ents) + " (" + a.at(x.r) + ") and " + y.corr + " read it (" + a.at(y.r) +
		") before " + x.corr + " wrote it back (" + a.at(x.w) + "); " + y.corr + " then wrote (" + a.at(y.w) +
		") a value computed from the state it read, overwriting " + x.corr + "'s change " + msBetween(x.w, y.w) +
		" later. Not check-then-act (an existing value was overwritten, nothing new was created) and not a stale " +
		"event (both writes were current when they were computed; they raced)."
	advise(&f)
	return f
}
