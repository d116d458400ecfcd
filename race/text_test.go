package race_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oncehq/once/race"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

func answer(status int, body string, replayed bool, ms int) race.Answer {
	a := race.NewAnswer(status, nil, []byte(body), 0)
	a.Replayed, a.Latency = replayed, time.Duration(ms)*time.Millisecond
	return a
}

// sampleReport is a report whose every figure is known: round 1 held, round
// 2 broke with two inserts, round 3 broke a check.
func sampleReport() (rep *race.Report, rounds []race.Round) {
	held := race.Round{Round: 1, Key: "11111111-1111-4111-8111-111111111111", Sent: 4, Statuses: map[string]int{"201": 1, "200": 3},
		DistinctBodies: 1, Replayed: 3, Held: true, Verdict: race.VerdictHeld,
		Answers: race.GroupAnswers([]race.Answer{answer(201, `{"id":1}`, false, 1), answer(200, `{"id":1}`, true, 2)})}
	broken := race.Round{Round: 2, Key: "22222222-2222-4222-8222-222222222222", Sent: 4, Statuses: map[string]int{"201": 2, "409": 1}, Errors: 1,
		ErrorSamples: []string{"EOF"}, DistinctBodies: 2, Verdict: race.VerdictBroken,
		Reason: "2 different 2xx answers to one Idempotency-Key, want 1",
		Answers: race.GroupAnswers([]race.Answer{answer(409, "in progress\x00", false, 1),
			answer(201, `{"id":2,"email":"a@example.com"}`, false, 1), answer(201, `{"id":3,"email":"a@example.com"}`, false, 1)})}
	checked := race.Round{Round: 3, Sent: 4, Statuses: map[string]int{"200": 4}, DistinctBodies: 1,
		Check: &race.Check{Value: "2", Expect: "1"}, Verdict: race.VerdictBroken, Reason: `check gave "2", want "1"`}
	rep = &race.Report{Rounds: 3, RoundsFailed: 2, FlakeRate: 2.0 / 3, Requests: 12, Errors: 1,
		Latency: race.Latency{P50: 1.25, P99: 30, Max: 31}, Details: []race.Round{held, broken, checked}}
	return rep, rep.Details
}

func TestTextOutput(t *testing.T) {
	rep, rounds := sampleReport()
	var b bytes.Buffer
	for _, r := range rounds {
		if err := race.WriteRound(&b, r, 10); err != nil {
			t.Fatal(err)
		}
	}
	if err := race.WriteSummary(&b, rep); err != nil {
		t.Fatal(err)
	}
	golden(t, "text.golden", b.Bytes())
}

func TestGroupAnswers(t *testing.T) {
	failed := race.Answer{Err: os.ErrDeadlineExceeded}
	groups := race.GroupAnswers([]race.Answer{
		answer(200, "a", false, 1), answer(201, "a", false, 1), answer(200, "b", true, 1),
		answer(200, "b", true, 1), failed, answer(200, "a", true, 1), answer(200, "b", false, 1),
	})
	want := []struct {
		status          int
		body            string
		count, replayed int
	}{{200, "b", 3, 2}, {200, "a", 2, 1}, {201, "a", 1, 0}}
	if len(groups) != len(want) {
		t.Fatalf("groups %+v", groups)
	}
	for i, w := range want {
		g := groups[i]
		if g.Status != w.status || g.Body != w.body || g.Count != w.count || g.Replayed != w.replayed || g.Size != 1 || len(g.SHA256) != 64 {
			t.Errorf("group %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestNewAnswerKeepsAPrefix(t *testing.T) {
	a := race.NewAnswer(200, nil, bytes.Repeat([]byte("x"), 10), 4)
	b := race.NewAnswer(200, nil, append(bytes.Repeat([]byte("x"), 9), 'y'), 4)
	if string(a.Body) != "xxxx" || !a.Truncated || a.Size != 10 || a.Sum == b.Sum {
		t.Errorf("a = %+v, b = %+v: want 4 bytes kept, whole bodies hashed apart", a, b)
	}
}

func TestReportLatency(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	got := race.SummarizeLatency(lat)
	if got != (race.Latency{P50: 50, P99: 99, Max: 100}) {
		t.Errorf("latency of 1..100ms = %+v, want p50 50 p99 99 max 100", got)
	}
	if got := race.SummarizeLatency(nil); got != (race.Latency{}) {
		t.Errorf("no latencies: %+v", got)
	}
}
