package race

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is the outcome of Run. Its JSON form is the output of
// "once race --format json".
type Report struct {
	URL          string  `json:"url"` // without any password
	Method       string  `json:"method"`
	N            int     `json:"n"`
	Key          KeyMode `json:"key"`
	Planned      int     `json:"rounds_planned"`
	Rounds       int     `json:"rounds"` // rounds run to the end
	RoundsFailed int     `json:"rounds_failed"`
	FlakeRate    float64 `json:"flake_rate"` // RoundsFailed / Rounds
	Requests     int     `json:"requests"`
	Errors       int     `json:"errors"` // requests that got no answer
	Latency      Latency `json:"latency_ms"`
	Details      []Round `json:"round_details"`
	// Error says why Run stopped before the last round, if it did.
	Error string `json:"error,omitempty"`

	latencies []time.Duration
}

// Round is the outcome of one round.
type Round struct {
	Round    int            `json:"round"`
	Key      string         `json:"key,omitempty"` // the round's {{key}}, when sent
	Sent     int            `json:"sent"`
	Statuses map[string]int `json:"statuses"` // status code → answers
	Errors   int            `json:"errors"`
	// ErrorSamples are up to three distinct transport errors.
	ErrorSamples []string `json:"error_samples,omitempty"`
	// DistinctBodies counts the distinct 2xx answers (status and body).
	DistinctBodies int     `json:"distinct_bodies"`
	Replayed       int     `json:"replayed"`
	Answers        []Group `json:"answers"`
	Check          *Check  `json:"check,omitempty"`
	Held           bool    `json:"held"`
	// Verdict is "held", "broken" or "not judged" (no check, and keys other
	// than same); Reason says why a round broke.
	Verdict string  `json:"verdict"`
	Reason  string  `json:"reason,omitempty"`
	Latency Latency `json:"latency_ms"`
}

// Check is what the round's check measured.
type Check struct {
	Value  string `json:"value"`
	Expect string `json:"expect"`
}

// Group is a set of identical answers: same status, same body.
type Group struct {
	Status   int    `json:"status"`
	Count    int    `json:"count"`
	Replayed int    `json:"replayed"`
	Size     int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	// Body is the beginning of the body (see FireOptions.KeepBody).
	Body      string `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Latency summarizes request latencies, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// The verdicts of a round.
const (
	VerdictHeld      = "held"
	VerdictBroken    = "broken"
	VerdictNotJudged = "not judged"
)

func newReport(c *Config) *Report {
	return &Report{URL: redactURL(c.URL), Method: c.Method, N: c.N, Key: c.Key, Planned: c.Rounds, Details: []Round{}}
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}

func (r *Report) add(round Round, answers []Answer) {
	r.Details = append(r.Details, round)
	r.Rounds++
	if !round.Held {
		r.RoundsFailed++
	}
	r.Requests += round.Sent
	r.Errors += round.Errors
	for _, a := range answers {
		if a.Err == nil {
			r.latencies = append(r.latencies, a.Latency)
		}
	}
}

func (r *Report) finish() {
	if r.Rounds > 0 {
		r.FlakeRate = float64(r.RoundsFailed) / float64(r.Rounds)
	}
	r.Latency = summarizeLatency(r.latencies)
}

// FirstFailure returns the first round that broke, or nil.
func (r *Report) FirstFailure() *Round {
	for i := range r.Details {
		if !r.Details[i].Held {
			return &r.Details[i]
		}
	}
	return nil
}

// summarize counts a round's answers; judge gives the verdict.
func summarize(n int, v Vars, mode KeyMode, answers []Answer) Round {
	r := Round{Round: n, Sent: len(answers), Statuses: map[string]int{}, Answers: GroupAnswers(answers)}
	if mode != KeyNone {
		r.Key = v.Key
	}
	var lat []time.Duration
	for _, a := range answers {
		if a.Err != nil {
			r.Errors++
			r.ErrorSamples = addSample(r.ErrorSamples, a.Err.Error())
			continue
		}
		r.Statuses[strconv.Itoa(a.Status)]++
		lat = append(lat, a.Latency)
		if a.Replayed {
			r.Replayed++
		}
	}
	for _, g := range r.Answers {
		if is2xx(g.Status) {
			r.DistinctBodies++
		}
	}
	r.Latency = summarizeLatency(lat)
	return r
}

func addSample(samples []string, s string) []string {
	if len(samples) >= 3 || slices.Contains(samples, s) {
		return samples
	}
	return append(samples, s)
}

func is2xx(status int) bool { return status >= 200 && status < 300 }

// GroupAnswers groups answers by status and whole body, most frequent first
// (ties in order of first appearance). Answers with an error are left out.
func GroupAnswers(answers []Answer) []Group {
	type id struct {
		status int
		sum    [32]byte
	}
	index := map[id]int{}
	groups := []Group{}
	for _, a := range answers {
		if a.Err != nil {
			continue
		}
		k := id{a.Status, a.Sum}
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, Group{Status: a.Status, Size: a.Size, SHA256: hex.EncodeToString(a.Sum[:]), Body: string(a.Body), Truncated: a.Truncated})
		}
		groups[i].Count++
		if a.Replayed {
			groups[i].Replayed++
		}
	}
	slices.SortStableFunc(groups, func(a, b Group) int { return b.Count - a.Count })
	return groups
}

// judge gives the round its verdict: by the check when there is one, else by
// the answers when all requests shared one key.
func judge(ctx context.Context, c *Config, v Vars, r *Round) error {
	switch {
	case c.Check != nil:
		got, err := c.Check(ctx, v)
		switch {
		case ctx.Err() != nil:
			return ctx.Err() // interrupted, not a failed check
		case err != nil:
			return &CheckError{Round: r.Round, Err: err}
		}
		r.Check = &Check{Value: strings.TrimSpace(got), Expect: strings.TrimSpace(Expand(c.Expect, v))}
		r.Held = r.Check.Value == r.Check.Expect
		if !r.Held {
			r.Reason = fmt.Sprintf("check gave %q, want %q", r.Check.Value, r.Check.Expect)
		}
	case c.Key == KeySame:
		r.Held = r.DistinctBodies <= 1
		if !r.Held {
			r.Reason = fmt.Sprintf("%d different 2xx answers to one Idempotency-Key, want 1", r.DistinctBodies)
		}
	default:
		r.Held, r.Verdict = true, VerdictNotJudged
		return nil
	}
	r.Verdict = VerdictHeld
	if !r.Held {
		r.Verdict = VerdictBroken
	}
	return nil
}

// CheckError reports that a round's check could not run: the round says
// nothing about the invariant.
type CheckError struct {
	Round int
	Err   error
}

// Error names the round and the check's failure.
func (e *CheckError) Error() string {
	return fmt.Sprintf("round %d: check failed: %v", e.Round, e.Err)
}

// Unwrap returns the check's error.
func (e *CheckError) Unwrap() error { return e.Err }

func summarizeLatency(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return Latency{P50: ms(percentile(s, 50)), P99: ms(percentile(s, 99)), Max: ms(s[len(s)-1])}
}

// percentile returns the nearest-rank p-th percentile of sorted s.
func percentile(s []time.Duration, p int) time.Duration {
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * len)
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) float64 {
	return float64(d.Round(10*time.Microsecond)) / float64(time.Millisecond)
}
