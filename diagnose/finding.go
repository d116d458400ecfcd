package diagnose

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// The failure modes diagnose names. These strings are stable: scripts match
// on them.
const (
	// ModeCheckThenAct: two correlation ids checked for an existing effect and
	// both went on to produce one (time-of-check/time-of-use).
	ModeCheckThenAct = "check-then-act"
	// ModeDuplicateSideEffect: the same action on the same entity from two
	// correlation ids produced two effects, with no check visible in the logs
	// or without the two requests overlapping.
	ModeDuplicateSideEffect = "duplicate-side-effect"
	// ModeRetryWithoutKey: a retry (same correlation id, or attempt > 1)
	// produced a second effect.
	ModeRetryWithoutKey = "retry-without-key"
	// ModeStaleEvent: an event with a lower version was applied after one
	// with a higher version, for the same entity.
	ModeStaleEvent = "stale-event"
	// ModeLostUpdate: two correlation ids read then wrote the same entity with
	// overlapping read→write intervals.
	ModeLostUpdate = "lost-update"
)

// Finding is one diagnosed failure.
type Finding struct {
	Mode string `json:"mode"`
	// Entity is the principal entity, as field=value; Entities lists every
	// entity field of the racing action.
	Entity         string   `json:"entity"`
	Entities       []string `json:"entities"`
	CorrelationIDs []string `json:"correlation_ids"`
	// Evidence lists the log lines, as file:line.
	Evidence []string `json:"evidence"`
	// Timeline is the race window, in milliseconds from its first line.
	Timeline []Step `json:"timeline"`
	// WindowMS is the time from the first to the last line of the timeline.
	WindowMS float64 `json:"window_ms"`
	// Why says why this is this mode and not a neighbouring one.
	Why string `json:"why"`
	// FixLayer names the layer of the fix: "unique constraint",
	// "idempotency key via once", "version guard", "conditional update".
	FixLayer string `json:"fix_layer"`
	Fix      string `json:"fix"`
	// Test is the test that would have caught it.
	Test string `json:"test"`
	// Reproduce is a once race command line, for HTTP flows.
	Reproduce string `json:"reproduce,omitempty"`

	at  int64 // time of the first line, for ordering
	seq int64
}

// Step is one line of a finding's timeline.
type Step struct {
	TMS           float64 `json:"t_ms"`
	CorrelationID string  `json:"correlation_id,omitempty"`
	At            string  `json:"at"`
	Event         string  `json:"event"`
	// Role is what the line is to the race: request, check, read, effect,
	// write, retry, applied or stale.
	Role string `json:"role,omitempty"`
}

// Report is the result of a diagnosis.
type Report struct {
	Findings     []Finding `json:"findings"`
	LinesRead    int64     `json:"lines_read"`
	LinesSkipped int64     `json:"lines_skipped"`
}

func (r *Report) sort() {
	sort.SliceStable(r.Findings, func(i, j int) bool {
		a, b := &r.Findings[i], &r.Findings[j]
		if a.at != b.at {
			return a.at < b.at
		}
		if a.seq != b.seq {
			return a.seq < b.seq
		}
		if a.Mode != b.Mode {
			return a.Mode < b.Mode
		}
		return a.Entity < b.Entity
	})
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	out := *r
	out.Findings = make([]Finding, len(r.Findings))
	for i, f := range r.Findings {
		// Lists are always lists in JSON, never null.
		f.Entities = nonNil(f.Entities)
		f.CorrelationIDs = nonNil(f.CorrelationIDs)
		f.Evidence = nonNil(f.Evidence)
		f.Timeline = nonNil(f.Timeline)
		out.Findings[i] = f
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for i := range r.Findings {
		writeFinding(&b, i+1, &r.Findings[i])
	}
	switch len(r.Findings) {
	case 0:
		fmt.Fprintf(&b, "no race found")
	case 1:
		fmt.Fprintf(&b, "1 finding")
	default:
		fmt.Fprintf(&b, "%d findings", len(r.Findings))
	}
	fmt.Fprintf(&b, " in %d lines (%d skipped: not JSON)\n", r.LinesRead, r.LinesSkipped)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeFinding(b *strings.Builder, n int, f *Finding) {
	fmt.Fprintf(b, "%d. %s on %s\n", n, f.Mode, strings.Join(f.Entities, " "))
	fmt.Fprintf(b, "   correlation ids: %s\n", strings.Join(f.CorrelationIDs, ", "))
	fmt.Fprintf(b, "   timeline (%s ms):\n", fmtMS(f.WindowMS))
	for _, s := range f.Timeline {
		fmt.Fprintf(b, "     %9s ms  %-14s %-10s %-22s %s\n", "+"+fmtMS(s.TMS), s.CorrelationID, s.Role, s.At, s.Event)
	}
	fmt.Fprintf(b, "   evidence: %s\n", strings.Join(f.Evidence, " "))
	fmt.Fprintf(b, "   why: %s\n", f.Why)
	fmt.Fprintf(b, "   fix (%s): %s\n", f.FixLayer, f.Fix)
	fmt.Fprintf(b, "   test: %s\n", f.Test)
	if f.Reproduce != "" {
		fmt.Fprintf(b, "   reproduce: %s\n", f.Reproduce)
	}
	b.WriteString("\n")
}

func fmtMS(ms float64) string {
	s := fmt.Sprintf("%.3f", ms)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "" || s == "-0" {
		return "0"
	}
	return s
}

func nonNil[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}
