package diagnose

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// maxTimeline bounds a finding's timeline; the lines that matter to the
// race (requests, checks, effects) are kept first.
const maxTimeline = 24

func (f *Finding) setEntity(ents []field) {
	f.Entities = make([]string, len(ents))
	for i, x := range ents {
		f.Entities[i] = x.String()
	}
	if len(ents) > 0 {
		f.Entity = f.Entities[0]
	}
}

// setTimeline fills Timeline and WindowMS from rows, in time order.
func (a *analyzer) setTimeline(f *Finding, rows []*event, roles map[*event]string) {
	rows = uniqueBySeq(rows)
	if len(rows) > maxTimeline {
		var keep []*event
		for _, e := range rows {
			if roles[e] != "" {
				keep = append(keep, e)
			}
		}
		rows = keep[:min(len(keep), maxTimeline)]
	}
	if len(rows) == 0 {
		return
	}
	t0 := rows[0].t
	f.at, f.seq = t0, rows[0].seq
	for _, e := range rows {
		f.Timeline = append(f.Timeline, Step{
			TMS: msOf(e.t - t0), CorrelationID: e.corr, At: a.at(e), Event: e.msg, Role: roles[e],
		})
	}
	f.WindowMS = msOf(rows[len(rows)-1].t - t0)
}

func uniqueBySeq(rows []*event) []*event {
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(x, y *event) int { return cmpInt(x.seq, y.seq) })
	return slices.CompactFunc(rows, func(x, y *event) bool { return x == y })
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// evidence lists the lines with a role in the race as file:line.
func (a *analyzer) evidence(rows []*event, roles map[*event]string) []string {
	var out []string
	for _, e := range uniqueBySeq(rows) {
		if roles[e] != "" {
			out = append(out, a.at(e))
		}
	}
	return out
}

func msOf(ns int64) float64 {
	return float64(ns/1000) / 1000 // microsecond resolution, stable in JSON
}

func msBetween(x, y *event) string {
	return fmtMS(msOf(y.t-x.t)) + " ms"
}

// reproduce returns a once race command line for a flow that logged an HTTP
// method and path, or "" for other flows. once race fires the same request
// many times at once; with its default --key same, a broken endpoint answers
// with different bodies (two charge ids) and the round fails.
func (a *analyzer) reproduce(ps []*part) string {
	var method, path, host string
	for _, p := range ps {
		for _, e := range p.f.events {
			method, path, host = first(method, e.method), first(path, e.path), first(host, e.host)
		}
	}
	if path == "" {
		return ""
	}
	target := path
	if u, err := url.Parse(path); err != nil || u.Scheme == "" {
		if host == "" {
			host = "localhost:8080"
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		target = "http://" + host + path
	}
	if method == "" {
		method = "POST"
	}
	cmd := []string{"once", "race", "-n", "10", "--rounds", "20", "-X", method}
	if body := bodyOf(ps[0]); body != "" && method != "GET" {
		cmd = append(cmd, "-H", shellQuote("Content-Type: application/json"), "-d", shellQuote(body))
	}
	return strings.Join(append(cmd, shellQuote(target)), " ")
}

// bodyOf rebuilds a JSON body from the action's entity fields.
func bodyOf(p *part) string {
	m := map[string]string{}
	for _, x := range p.act.ents {
		m[x.Name] = x.Value
	}
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
