package diagnose

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// field is one name=value pair kept from a log line.
type field struct {
	Name  string // as logged (nested members joined with '.')
	Value string
}

func (f field) String() string { return f.Name + "=" + f.Value }

// event is one parsed log line: only what the detectors need.
type event struct {
	t       int64 // unix nanoseconds
	hasTime bool
	seq     int64 // processing order, a total order consistent with t
	file    int32
	line    int64

	msg      string
	kind     msgKind
	failed   bool // logged at error level, with an error, or with a negative status
	corr     string
	attempt  int
	version  int64
	hasVer   bool
	effectID bool // carries an id naming a produced effect

	ents   []field // entity fields, in line order
	keys   []field // idempotency / dedup keys (evidence only)
	method string
	path   string
	host   string
	tuple  string // canonical form of ents, for grouping
}

// isEffect reports whether the line records a side effect that took place.
func (e *event) isEffect() bool { return e.kind&kEffect != 0 && !e.negative() }

// negative reports whether the line says its step did not take effect.
func (e *event) negative() bool { return e.failed || e.kind&kNegative != 0 }

// entity renders the event's entity fields.
func (e *event) entity() string { return joinFields(e.ents) }

func joinFields(fs []field) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.String()
	}
	return strings.Join(parts, " ")
}

// lineParser turns lines into events. It is not safe for concurrent use.
type lineParser struct {
	sc    scanner
	cls   *classifier
	msgs  map[string]string  // interned messages
	kinds map[string]msgKind // classification of interned messages
	cur   *event
	pick  [roleSecret + 1]int // rank of the field chosen so far for each role
	level []byte
	slab  []field // entity fields are carved from here, to allocate in bulk
}

func newLineParser(cls *classifier) *lineParser {
	return &lineParser{cls: cls, msgs: map[string]string{}, kinds: map[string]msgKind{}}
}

// maxLineFields bounds the entity (and key) fields kept from one line.
const maxLineFields = 32

// maxInterned bounds the message intern table.
const maxInterned = 1 << 16

// parse parses one line. ok is false for a line that is not a JSON object.
func (p *lineParser) parse(line []byte) (ev *event, ok bool) {
	ev = &event{}
	p.cur = ev
	for i := range p.pick {
		p.pick[i] = 1 << 30
	}
	p.level = p.level[:0]
	if err := p.sc.scanObject(line, p.field); err != nil {
		return nil, false
	}
	if levelIsError(p.level) {
		ev.failed = true
	}
	ev.kind |= p.classify(ev.msg)
	if ev.effectID && ev.kind&(kRead|kCheck) == 0 {
		ev.kind |= kEffect
	}
	ev.tuple = tupleKey(ev.ents)
	p.cur = nil
	return ev, true
}

// take reports whether a field of role r and rank should replace the one
// already chosen (the earliest-listed name wins).
func (p *lineParser) take(r role, rank int) bool {
	if rank >= p.pick[r] {
		return false
	}
	p.pick[r] = rank
	return true
}

func (p *lineParser) field(name, val []byte, kind valueKind) {
	if kind == kindNull || len(val) == 0 {
		return
	}
	fi := p.cls.info(name)
	ev := p.cur
	switch fi.role {
	case roleTime:
		if t, ok := parseTime(val, kind); ok && p.take(roleTime, fi.rank) {
			ev.t, ev.hasTime = t, true
		}
	case roleMsg:
		if kind == kindString && p.take(roleMsg, fi.rank) {
			ev.msg = p.intern(val)
		}
	case roleLevel:
		if p.take(roleLevel, fi.rank) {
			p.level = append(p.level[:0], val...)
		}
	case roleCorr:
		if kind != kindBool && p.take(roleCorr, fi.rank) {
			ev.corr = string(val)
		}
	case roleAttempt:
		p.attempt(val, kind, fi.rank)
	case roleVersion:
		if n, err := strconv.ParseInt(string(val), 10, 64); err == nil && p.take(roleVersion, fi.rank) {
			ev.version, ev.hasVer = n, true
		}
	default:
		p.other(fi, val, kind)
	}
}

func (p *lineParser) attempt(val []byte, kind valueKind, rank int) {
	n := 0
	switch {
	case kind == kindBool && string(val) == "true":
		n = 2 // "retry": true marks a second attempt
	case kind == kindBool:
		n = 1
	default:
		v, err := strconv.Atoi(string(val))
		if err != nil || v < 0 {
			return
		}
		n = v
	}
	if p.take(roleAttempt, rank) {
		p.cur.attempt = n
	}
}

func (p *lineParser) other(fi fieldInfo, val []byte, kind valueKind) {
	ev := p.cur
	switch fi.role {
	case roleKey:
		if len(ev.keys) < maxLineFields {
			ev.keys = append(ev.keys, field{fi.name, string(val)})
		}
	case roleMethod:
		if kind == kindString && p.take(roleMethod, fi.rank) {
			ev.method = strings.ToUpper(string(val))
		}
	case rolePath:
		if kind == kindString && p.take(rolePath, fi.rank) {
			ev.path = string(val)
		}
	case roleHost:
		if kind == kindString && p.take(roleHost, fi.rank) {
			ev.host = string(val)
		}
	case roleError:
		if kind == kindString || kind == kindNumber {
			ev.failed = true
		}
	case roleStatus:
		if kind == kindString && negativeValue(string(val)) {
			ev.failed = true
		}
	case roleFlag:
		if kind == kindBool && string(val) == "false" {
			ev.failed = true
		}
	case roleEntity:
		if (kind == kindString || kind == kindNumber) && len(ev.ents) < maxLineFields {
			if ev.ents == nil {
				ev.ents = p.carve()
			}
			ev.ents = append(ev.ents, field{fi.name, string(val)})
			ev.effectID = ev.effectID || fi.effectID
		}
	}
}

// carve returns an empty slice with room for 4 fields from the slab; more
// fields spill into a slice of their own.
func (p *lineParser) carve() []field {
	if len(p.slab) < 4 {
		p.slab = make([]field, 1024)
	}
	s := p.slab[:0:4]
	p.slab = p.slab[4:]
	return s
}

func (p *lineParser) classify(msg string) msgKind {
	if k, ok := p.kinds[msg]; ok {
		return k
	}
	k := classifyMsg(msg)
	if len(p.kinds) < maxInterned {
		p.kinds[msg] = k
	}
	return k
}

func (p *lineParser) intern(b []byte) string {
	if s, ok := p.msgs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(p.msgs) < maxInterned {
		p.msgs[s] = s
	}
	return s
}

// tupleKey is a canonical, order-independent key for a set of fields.
func tupleKey(fs []field) string {
	if len(fs) == 0 {
		return ""
	}
	if len(fs) == 1 {
		return fs[0].Name + "\x00" + fs[0].Value
	}
	var idx [8]int
	order := idx[:0]
	if len(fs) > len(idx) {
		order = make([]int, 0, len(fs))
	}
	for i := range fs {
		order = append(order, i)
	}
	for i := 1; i < len(order); i++ { // insertion sort: a handful of fields
		for j := i; j > 0 && fieldLess(fs[order[j]], fs[order[j-1]]); j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	n := 0
	for _, f := range fs {
		n += len(f.Name) + len(f.Value) + 2
	}
	b := make([]byte, 0, n)
	for i, k := range order {
		if i > 0 {
			b = append(b, 1)
		}
		b = append(append(append(b, fs[k].Name...), 0), fs[k].Value...)
	}
	return string(b)
}

func fieldLess(a, b field) bool {
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Value < b.Value
}

// levelIsError recognises error levels by name (error, fatal, panic,
// critical) or by number (bunyan/pino 50 and above).
func levelIsError(lv []byte) bool {
	if len(lv) == 0 {
		return false
	}
	if lv[0] >= '0' && lv[0] <= '9' {
		n, err := strconv.Atoi(string(lv))
		return err == nil && n >= 50
	}
	l := bytes.ToLower(lv)
	for _, w := range []string{"err", "fatal", "panic", "crit", "alert", "emerg"} {
		if bytes.HasPrefix(l, []byte(w)) {
			return true
		}
	}
	return false
}

// parseTime reads RFC 3339 strings and epoch numbers (or numeric strings) in
// seconds, milliseconds, microseconds or nanoseconds, told apart by size.
func parseTime(val []byte, kind valueKind) (int64, bool) {
	if kind == kindString {
		if t, ok := parseTimeString(string(val)); ok {
			return t, true
		}
	}
	if kind != kindNumber && kind != kindString {
		return 0, false
	}
	return parseEpoch(string(val))
}

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999Z0700"}

func parseTimeString(s string) (int64, bool) {
	if len(s) < 19 || s[4] != '-' {
		return 0, false
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UnixNano(), true
		}
	}
	return 0, false
}

// parseEpoch parses a decimal epoch without going through float64, so that
// nanosecond stamps keep their precision.
func parseEpoch(s string) (int64, bool) {
	ip, fp, _ := strings.Cut(s, ".")
	if strings.ContainsAny(s, "eE") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f <= 0 || f > 9e18 {
			return 0, false
		}
		ip, fp = strconv.FormatFloat(f, 'f', -1, 64), ""
		ip, fp, _ = strings.Cut(ip, ".")
	}
	n, err := strconv.ParseInt(ip, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	var scale int64
	switch {
	case n < 1e11:
		scale = 1e9
	case n < 1e14:
		scale = 1e6
	case n < 1e17:
		scale = 1e3
	default:
		scale = 1
	}
	frac := int64(0)
	if fp != "" && scale > 1 {
		digits := 0
		for p := scale; p > 1; p /= 10 {
			digits++
		}
		if len(fp) > digits {
			fp = fp[:digits]
		}
		for len(fp) < digits {
			fp += "0"
		}
		f, err := strconv.ParseInt(fp, 10, 64)
		if err != nil {
			return 0, false
		}
		frac = f
	}
	if n > (1<<63-1)/scale {
		return 0, false
	}
	return n*scale + frac, true
}
