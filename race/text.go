package race

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxShownGroups and maxShownBody bound what the text report prints of a
// broken round's answers.
const (
	maxShownGroups = 5
	maxShownBody   = 160
)

// WriteRound writes the one-line summary of r, one of planned rounds.
func WriteRound(w io.Writer, r Round, planned int) error {
	var b strings.Builder
	width := len(strconv.Itoa(planned))
	fmt.Fprintf(&b, "round %*d/%d  %s", width, r.Round, planned, statusList(r.Statuses))
	if r.Errors > 0 {
		fmt.Fprintf(&b, " errors×%d", r.Errors)
	}
	fmt.Fprintf(&b, "  2xx bodies %d  replayed %d", r.DistinctBodies, r.Replayed)
	if r.Check != nil {
		fmt.Fprintf(&b, "  check %q", r.Check.Value)
	}
	b.WriteString("  " + r.Verdict)
	if r.Reason != "" {
		b.WriteString(": " + r.Reason)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// statusList renders statuses as "201×1 200×49", in status order.
func statusList(statuses map[string]int) string {
	codes := make([]string, 0, len(statuses))
	for c := range statuses {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s×%d", c, statuses[c])
	}
	if len(parts) == 0 {
		return "no answers"
	}
	return strings.Join(parts, " ")
}

// WriteSummary writes the report's totals and, if a round broke, the first
// broken round's distinct answers.
func WriteSummary(w io.Writer, rep *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d rounds broke the invariant (flake rate %.1f%%); %d requests",
		rep.RoundsFailed, rep.Rounds, 100*rep.FlakeRate, rep.Requests)
	if rep.Errors > 0 {
		fmt.Fprintf(&b, ", %d without an answer", rep.Errors)
	}
	fmt.Fprintf(&b, "; latency p50 %s p99 %s\n", fmtMS(rep.Latency.P50), fmtMS(rep.Latency.P99))
	if r := rep.FirstFailure(); r != nil {
		key := ""
		if r.Key != "" {
			key = " (key " + r.Key + ")"
		}
		fmt.Fprintf(&b, "first broken round: %d%s: %s\n", r.Round, key, r.Reason)
		writeGroups(&b, r.Answers)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeGroups lists the distinct answers, the 2xx ones (the duplicates)
// first.
func writeGroups(b *strings.Builder, groups []Group) {
	shown := slices.Clone(groups)
	slices.SortStableFunc(shown, func(x, y Group) int { return b2i(!is2xx(x.Status)) - b2i(!is2xx(y.Status)) })
	for i, g := range shown {
		if i == maxShownGroups {
			fmt.Fprintf(b, "  … and %d more distinct answers\n", len(shown)-i)
			return
		}
		fmt.Fprintf(b, "  %d ×%d  %s\n", g.Status, g.Count, showBody(g.Body, g.Truncated))
	}
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

func fmtMS(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) + "ms" }

// showBody renders a body on one line: as it is when it is printable text,
// quoted otherwise, cut at maxShownBody bytes.
func showBody(body string, truncated bool) string {
	if body == "" && !truncated {
		return "(empty body)"
	}
	if !truncated {
		body = strings.TrimSuffix(body, "\n") // most APIs end JSON with one
	}
	if len(body) > maxShownBody {
		cut := maxShownBody
		for cut > 0 && !utf8.RuneStart(body[cut]) {
			cut-- // do not split a character
		}
		body, truncated = body[:cut], true
	}
	if !printable(body) {
		body = strconv.Quote(body)
	}
	if truncated {
		body += "…"
	}
	return body
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
