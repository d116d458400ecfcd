package diagnose

// segment is one attempt of a flow: the lines from one (re)start to the next.
type segment struct {
	events []*event
	inputs map[string]string // entity fields before the attempt's first effect
	marker *event            // the line that began this attempt (nil for the first)
}

// checkRetry looks, within one correlation id, for a later attempt that
// produced an effect an earlier attempt had already produced.
//
// A flow closes after a window of silence; a retry after a longer backoff
// comes back as a new flow with the same correlation id, so a summary of
// each closed flow (its inputs and effects) is remembered per correlation
// id, in an LRU capped like the version table.
func (a *analyzer) checkRetry(f *flow) {
	segs := attempts(f)
	if prev, ok := a.retries.get(f.corr); ok {
		if segs[0].marker == nil {
			segs[0].marker = segs[0].events[0]
		}
		segs = append([]*segment{prev}, segs...)
	}
	defer func() {
		if hasEffect(segs) {
			a.retries.put(f.corr, summarize(segs))
		}
	}()
	for i, s1 := range segs {
		for _, s2 := range segs[i+1:] {
			if e1, e2 := repeatedEffect(s1, s2); e1 != nil {
				a.findings = append(a.findings, a.retryFinding(f, s1, s2, e1, e2))
				return
			}
		}
	}
}

// maxSummary bounds the lines remembered of a closed flow.
const maxSummary = 4

func hasEffect(segs []*segment) bool {
	for _, s := range segs {
		for _, e := range s.events {
			if e.isEffect() {
				return true
			}
		}
	}
	return false
}

// summarize keeps what a later attempt is compared with: the first
// attempt's inputs, its first line, and the effects of every attempt.
func summarize(segs []*segment) *segment {
	s := &segment{inputs: segs[0].inputs}
	for i, sg := range segs {
		for j, e := range sg.events {
			if len(s.events) < maxSummary && (i == 0 && j == 0 || e.isEffect()) {
				s.events = append(s.events, owned(e))
			}
		}
	}
	return s
}

// attempts splits a flow where an attempt number changes, a retry is
// announced, or the flow's first message comes again after an effect.
func attempts(f *flow) []*segment {
	var segs []*segment
	cur := &segment{}
	lastAttempt, hadEffect := 0, false
	for i, e := range f.events {
		restart := i > 0 && (e.kind&kRetry != 0 && e.kind&kEffect == 0 ||
			e.attempt > 0 && lastAttempt > 0 && e.attempt != lastAttempt ||
			e.attempt > 1 && lastAttempt == 0 && hadEffect ||
			e.msg == f.events[0].msg && hadEffect)
		if restart && len(cur.events) > 0 {
			segs = append(segs, cur)
			cur, hadEffect = &segment{marker: e}, false
		}
		if e.attempt > 0 {
			lastAttempt = e.attempt
		}
		cur.events = append(cur.events, e)
		hadEffect = hadEffect || e.isEffect()
	}
	segs = append(segs, cur)
	for _, s := range segs {
		s.inputs = map[string]string{}
		for _, e := range s.events {
			if e.isEffect() {
				break
			}
			for _, x := range e.ents {
				if _, ok := s.inputs[x.Name]; !ok {
					s.inputs[x.Name] = x.Value
				}
			}
		}
	}
	return segs
}

// repeatedEffect returns an effect of s1 and the same effect again in s2,
// unless the attempts worked on different inputs or s2's effect carries the
// same ids as s1's (a replay of the stored result).
func repeatedEffect(s1, s2 *segment) (*event, *event) {
	for k, v := range s2.inputs {
		if w, ok := s1.inputs[k]; ok && w != v {
			return nil, nil
		}
	}
	for _, e2 := range s2.events {
		if !e2.isEffect() {
			continue
		}
		for _, e1 := range s1.events {
			if !e1.isEffect() || e1.msg != e2.msg || !sameInputs(e1, e2, s1.inputs) {
				continue
			}
			if replayOf(newIDs(e2, s1.inputs), [][]field{newIDs(e1, s1.inputs)}) {
				continue
			}
			return e1, e2
		}
	}
	return nil, nil
}

// sameInputs reports whether two effect lines agree on the fields that were
// inputs of the attempt (so "email sent to a" then "to b" is not a repeat).
func sameInputs(e1, e2 *event, inputs map[string]string) bool {
	for _, x := range e1.ents {
		if _, in := inputs[x.Name]; !in {
			continue
		}
		for _, y := range e2.ents {
			if y.Name == x.Name && y.Value != x.Value {
				return false
			}
		}
	}
	return true
}

func (a *analyzer) retryFinding(f *flow, s1, s2 *segment, e1, e2 *event) Finding {
	fd := Finding{Mode: ModeRetryWithoutKey, CorrelationIDs: []string{f.corr}}
	fd.setEntity(entityOf(s1, e1))
	roles := map[*event]string{e1: "effect", e2: "effect"}
	if s2.marker != nil {
		roles[s2.marker] = "retry"
	}
	var rows []*event
	for _, s := range []*segment{s1, s2} {
		for _, e := range s.events {
			if e.seq <= e2.seq {
				rows = append(rows, e)
			}
		}
	}
	if s1.events[0] != e1 {
		roles[s1.events[0]] = "request"
	}
	a.setTimeline(&fd, rows, roles)
	fd.Evidence = a.evidence(rows, roles)
	ids := idsPair(e1, e2, s1.inputs)
	fd.Why = "correlation " + f.corr + " ran again (" + retryCause(s2) + ") and its second attempt produced " +
		quote(e2.msg) + " again" + ids + " at " + a.at(e2) + ", after the first attempt's at " + a.at(e1) +
		": the retry had no idempotency key to replay the first result. Not a double submit: one correlation id, " +
		"one action, retried; not a check-then-act race: the attempts did not overlap."
	advise(&fd)
	fd.Reproduce = a.reproduce([]*part{{f: f, act: s1.events[0]}})
	return fd
}

func retryCause(s *segment) string {
	switch m := s.marker; {
	case m == nil:
		return "a new attempt"
	case m.attempt > 1:
		return "attempt " + itoa(int64(m.attempt)) + ", " + quote(m.msg)
	default:
		return quote(m.msg)
	}
}

func idsPair(e1, e2 *event, inputs map[string]string) string {
	a, b := newIDs(e1, inputs), newIDs(e2, inputs)
	if len(a) == 0 || len(b) == 0 {
		return ""
	}
	return " (" + a[0].String() + " then " + b[0].String() + ")"
}

// entityOf is the attempt's entity: its input entity fields, or the
// effect's own fields when nothing came before it.
func entityOf(s *segment, e *event) []field {
	for _, x := range s.events {
		if len(x.ents) > 0 && !x.isEffect() {
			return x.ents
		}
	}
	return e.ents
}
