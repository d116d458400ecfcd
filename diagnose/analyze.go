package diagnose

import (
	"container/list"
	"slices"
	"strconv"
)

// Bounds on per-flow state, so one hot flow or entity cannot grow memory
// without limit.
const (
	maxFlowEvents = 512 // events kept per correlation id
	maxCaseFlows  = 64  // flows linked into one case
	maxKeyRefs    = 64  // flows remembered per action key within a window

	// maxRememberedFlows caps the closed flows (with an effect) remembered
	// per correlation id, to catch a retry after a backoff longer than the
	// window: about 1 KiB each.
	maxRememberedFlows = 1 << 15
)

// flow is every line of one correlation id seen so far.
type flow struct {
	corr   string
	events []*event
	first  int64
	last   int64
	c      *kase
	closed bool
}

// kase links flows that did the same action on the same entity within a
// window; it is judged when all of its flows have gone quiet.
type kase struct {
	flows []*flow
	keys  []actionKey
	open  int
}

// actionKey is a message together with the entity fields it carried.
type actionKey struct {
	msg   string
	tuple string
	ents  []field
}

type keyRef struct {
	f *flow
	t int64
}

// activity records that a flow logged a line at t; a flow whose last line is
// older than the window is closed when its latest activity is popped.
type activity struct {
	f *flow
	t int64
}

type fifoItem struct {
	key string
	t   int64
}

// idxKey is an action key: a message and the entity tuple it carried.
type idxKey struct{ msg, tuple string }

type idxItem struct {
	key idxKey
	t   int64
}

// analyzer runs the detectors over events in time order.
type analyzer struct {
	window int64
	files  []string
	now    int64
	seq    int64
	flows  map[string]*flow

	index map[idxKey][]keyRef // action key → recent flows
	fifo  []idxItem           // index insertions in time order, for eviction

	versions *lru[*event]   // entity tuple → its highest-version line
	retries  *lru[*segment] // correlation id → a summary of its closed flow
	stale    []*staleCand

	lost     map[string][]*interval // entity tuple → recent read→write intervals
	lostFIFO []fifoItem
	lostOpen map[string]*lostGroup

	active []activity // flow activity in time order, for closing idle flows

	findings  []Finding
	lastSweep int64
	sinceSwp  int
}

func newAnalyzer(cfg Config, files []string) *analyzer {
	return &analyzer{
		window:   int64(cfg.Window),
		files:    files,
		flows:    map[string]*flow{},
		index:    map[idxKey][]keyRef{},
		versions: newLRU[*event](cfg.MaxEntities),
		retries:  newLRU[*segment](min(cfg.MaxEntities, maxRememberedFlows)),
		lost:     map[string][]*interval{},
		lostOpen: map[string]*lostGroup{},
	}
}

func (a *analyzer) process(e *event) {
	a.seq++
	e.seq = a.seq
	if e.t < a.now {
		e.t = a.now // later than the reorder buffer could fix: keep time monotonic
	}
	a.now = e.t
	a.sinceSwp++
	if a.now-a.lastSweep >= a.window/4 || a.sinceSwp >= 1<<14 {
		a.sweep(false)
	}
	if e.corr != "" {
		a.track(e)
	}
	if e.hasVer {
		a.checkStale(e)
	}
	if e.negative() {
		a.cancelStale(e)
	}
	if e.corr != "" && e.kind&kWrite != 0 && !e.negative() && len(e.ents) > 0 {
		a.checkLost(e)
	}
}

func (a *analyzer) track(e *event) {
	f := a.flows[e.corr]
	if f == nil {
		f = &flow{corr: e.corr, first: e.t}
		a.flows[e.corr] = f
	}
	if f.last != e.t || len(f.events) == 0 {
		a.active = append(a.active, activity{f, e.t})
	}
	f.last = e.t
	if len(f.events) < maxFlowEvents {
		f.events = append(f.events, e)
	}
	if len(e.ents) > 0 && !e.negative() {
		a.collide(f, e)
	}
}

// collide links f with the other flows that logged the same message on the
// same entity within the window.
func (a *analyzer) collide(f *flow, e *event) {
	key := idxKey{e.msg, e.tuple}
	refs := a.index[key]
	for _, r := range refs {
		if r.f != f && !r.f.closed && e.t-r.t <= a.window {
			a.link(f, r.f, actionKey{e.msg, e.tuple, e.ents})
		}
	}
	if n := len(refs); n > 0 && refs[n-1].f == f {
		return
	}
	if len(refs) >= maxKeyRefs {
		refs = refs[1:]
	}
	a.index[key] = append(refs, keyRef{f, e.t})
	a.fifo = append(a.fifo, idxItem{key, e.t})
}

func (a *analyzer) link(f, g *flow, k actionKey) {
	c := g.c
	switch {
	case f.c == nil && c == nil:
		c = &kase{}
		c.add(g)
		c.add(f)
	case c == nil:
		c = f.c
		c.add(g)
	case f.c == nil:
		c.add(f)
	case f.c != c:
		c = merge(f.c, c)
	}
	if c == nil {
		return
	}
	for _, x := range c.keys {
		if x.msg == k.msg && x.tuple == k.tuple {
			return
		}
	}
	c.keys = append(c.keys, k)
}

func (c *kase) add(f *flow) {
	if len(c.flows) >= maxCaseFlows {
		return
	}
	c.flows = append(c.flows, f)
	f.c = c
	if !f.closed {
		c.open++
	}
}

// merge joins two cases, keeping the older one's order; it returns nil when
// the result would be too large.
func merge(x, y *kase) *kase {
	if len(x.flows)+len(y.flows) > maxCaseFlows {
		return nil
	}
	if len(y.flows) > 0 && len(x.flows) > 0 && y.flows[0].first < x.flows[0].first {
		x, y = y, x
	}
	for _, f := range y.flows {
		x.flows = append(x.flows, f)
		f.c = x
		if !f.closed {
			x.open++
		}
	}
	x.keys = append(x.keys, y.keys...)
	return x
}

// sweep closes flows idle for longer than the window and evicts index
// entries older than the window. At the end (all) it closes everything.
func (a *analyzer) sweep(all bool) {
	a.lastSweep, a.sinceSwp = a.now, 0
	cutoff := a.now - a.window
	n := 0
	for n < len(a.active) && (all || a.active[n].t < cutoff) {
		// Only a flow's latest activity closes it: older entries are stale.
		if act := a.active[n]; !act.f.closed && act.f.last == act.t {
			a.close(act.f)
		}
		n++
	}
	a.active = compact(a.active, n)
	a.evictIndex(cutoff, all)
	a.finishStale(cutoff, all)
	a.evictLost(cutoff, all)
}

func (a *analyzer) close(f *flow) {
	delete(a.flows, f.corr)
	f.closed = true
	a.checkRetry(f)
	if c := f.c; c != nil {
		c.open--
		if c.open == 0 {
			a.judgeCase(c)
		}
	}
}

func (a *analyzer) evictIndex(cutoff int64, all bool) {
	n := 0
	for n < len(a.fifo) && (all || a.fifo[n].t < cutoff) {
		it := a.fifo[n]
		refs := a.index[it.key]
		for len(refs) > 0 && (all || refs[0].t < cutoff) {
			refs = refs[1:]
		}
		if len(refs) == 0 {
			delete(a.index, it.key)
		} else {
			a.index[it.key] = refs
		}
		n++
	}
	a.fifo = compact(a.fifo, n)
}

// compact drops the first n items, reusing the array when it is mostly empty.
func compact[T any](xs []T, n int) []T {
	if n == 0 {
		return xs
	}
	rest := xs[n:]
	if cap(rest) < len(xs)/2 || len(rest) == 0 {
		return append(xs[:0:0], rest...)
	}
	return rest
}

func (a *analyzer) finish() { a.sweep(true) }

// at renders an event's place as file:line.
func (a *analyzer) at(e *event) string {
	return a.files[e.file] + ":" + strconv.FormatInt(e.line, 10)
}

// lru is a map that forgets its least recently used entry beyond cap.
type lru[V any] struct {
	cap int
	m   map[string]*list.Element
	l   *list.List
}

type lruEntry[V any] struct {
	key string
	val V
}

func newLRU[V any](n int) *lru[V] {
	return &lru[V]{cap: n, m: map[string]*list.Element{}, l: list.New()}
}

func (c *lru[V]) get(key string) (V, bool) {
	el := c.m[key]
	if el == nil {
		var zero V
		return zero, false
	}
	c.l.MoveToFront(el)
	return el.Value.(*lruEntry[V]).val, true
}

func (c *lru[V]) put(key string, v V) {
	if el := c.m[key]; el != nil {
		el.Value.(*lruEntry[V]).val = v
		c.l.MoveToFront(el)
		return
	}
	c.m[key] = c.l.PushFront(&lruEntry[V]{key, v})
	if c.l.Len() > c.cap {
		old := c.l.Back()
		c.l.Remove(old)
		delete(c.m, old.Value.(*lruEntry[V]).key)
	}
}

// owned returns a copy of e that owns its fields: an event's fields are
// carved from a shared slab that one long-lived copy must not pin.
func owned(e *event) *event {
	cp := *e
	cp.ents = slices.Clone(e.ents)
	cp.keys = slices.Clone(e.keys)
	return &cp
}
