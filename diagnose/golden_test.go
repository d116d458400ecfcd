package diagnose

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenCases are the fixtures, written from the seeds' scenarios, with the
// modes each must produce (in report order) and the values that must never
// appear in a finding (innocent entities and requests).
var goldenCases = []struct {
	name     string
	files    []string
	cfg      Config
	modes    []string
	corrs    [][]string
	innocent []string
}{
	{name: "charge-race", files: []string{"charge-race.slog.jsonl"},
		modes: []string{ModeDuplicateSideEffect}, corrs: [][]string{{"req-a", "req-b"}},
		innocent: []string{"user_111", "req-c", "pi_ccc111"}},
	{name: "signup-check-then-act", files: []string{"signup-check-then-act.zap.jsonl"},
		modes: []string{ModeCheckThenAct}, corrs: [][]string{{"r-1001", "r-1002"}},
		innocent: []string{"bo@example.com", "r-1003"}},
	{name: "job-retry", files: []string{"job-retry.zerolog.jsonl"},
		modes: []string{ModeRetryWithoutKey}, corrs: [][]string{{"job-77"}},
		innocent: []string{"job-78", "u_10"}},
	{name: "client-retry", files: []string{"client-retry.jsonl"},
		modes: []string{ModeRetryWithoutKey}, corrs: [][]string{{"q-1", "q-2"}}},
	{name: "resubmit", files: []string{"resubmit.jsonl"},
		modes: []string{ModeDuplicateSideEffect}, corrs: [][]string{{"w-1", "w-2"}}},
	{name: "subscription-stale", files: []string{"subscription-stale.logrus.jsonl"},
		modes: []string{ModeStaleEvent}, corrs: [][]string{{"evt_2", "evt_1"}},
		innocent: []string{"sub_7", "evt_3", "evt_4"}},
	{name: "profile-lost-update", files: []string{"profile-lost-update.bunyan.jsonl"},
		modes: []string{ModeLostUpdate}, corrs: [][]string{{"tab-a", "tab-b"}},
		innocent: []string{"p_2", "tab-c", "tab-d"}},
	{name: "split-files", files: []string{"split-a.jsonl", "split-b.jsonl"},
		modes: []string{ModeDuplicateSideEffect}, corrs: [][]string{{"req-a", "req-b"}}},
	{name: "job-backoff-retry", files: []string{"job-backoff-retry.jsonl"},
		modes: []string{ModeRetryWithoutKey}, corrs: [][]string{{"J1"}}},
	{name: "stale-seq-nocorr", files: []string{"stale-seq-nocorr.jsonl"},
		modes: []string{ModeStaleEvent}, corrs: [][]string{{}}, innocent: []string{"s2"}},
	{name: "balance-lost-update", files: []string{"balance-lost-update.jsonl"},
		modes: []string{ModeLostUpdate}, corrs: [][]string{{"x", "y"}}},
	{name: "innocent", files: []string{"innocent.jsonl"}},
	{name: "entity-override", files: []string{"innocent.jsonl"}, cfg: Config{Entity: []string{"user"}},
		// Under --entity user, two charges of user_2 for different products
		// 4 ms apart are the same action on the same entity.
		modes: []string{ModeDuplicateSideEffect}, corrs: [][]string{{"i-3", "i-4"}},
		innocent: []string{"user_1", "user_3", "user_4", "user_5", "user_6"}},
	{name: "narrow-window", files: []string{"resubmit.jsonl"}, cfg: Config{Window: time.Second}},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			rep := mustRun(t, tc.cfg, tc.files...)
			var modes []string
			var corrs [][]string
			for _, f := range rep.Findings {
				modes = append(modes, f.Mode)
				corrs = append(corrs, nonNil(f.CorrelationIDs))
			}
			if !slices.Equal(modes, tc.modes) {
				t.Errorf("modes = %q, want %q", modes, tc.modes)
			}
			if !slices.EqualFunc(corrs, tc.corrs, slices.Equal) {
				t.Errorf("correlation ids = %q, want %q", corrs, tc.corrs)
			}
			var text, js bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			for _, bad := range tc.innocent {
				if strings.Contains(js.String(), bad) {
					t.Errorf("innocent %q named in the report", bad)
				}
			}
			checkGolden(t, tc.name+".txt", text.Bytes())
			checkGolden(t, tc.name+".json", js.Bytes())
		})
	}
}

func mustRun(t testing.TB, cfg Config, files ...string) *Report {
	t.Helper()
	var inputs []Input
	for _, name := range files {
		f, err := os.Open(filepath.Join("testdata", "logs", name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		inputs = append(inputs, Input{Name: name, R: f})
	}
	rep, err := Run(cfg, inputs)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -run TestGolden -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// TestJSONShape checks the documented top-level shape of --format json.
func TestJSONShape(t *testing.T) {
	rep := mustRun(t, Config{}, "charge-race.slog.jsonl")
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Findings []map[string]any `json:"findings"`
		Read     *int64           `json:"lines_read"`
		Skipped  *int64           `json:"lines_skipped"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Read == nil || *doc.Read != 13 || doc.Skipped == nil || *doc.Skipped != 1 {
		t.Errorf("lines_read/lines_skipped = %v/%v, want 13/1", doc.Read, doc.Skipped)
	}
	for _, k := range []string{"mode", "entity", "correlation_ids", "evidence", "timeline", "why", "fix", "fix_layer", "test", "reproduce"} {
		if _, ok := doc.Findings[0][k]; !ok {
			t.Errorf("finding has no %q", k)
		}
	}
	if got := doc.Findings[0]["entity"]; got != "user=user_456" {
		t.Errorf("entity = %v, want user=user_456", got)
	}
	ev := doc.Findings[0]["evidence"].([]any)
	if !slices.Contains(ev, any("charge-race.slog.jsonl:2")) || !slices.Contains(ev, any("charge-race.slog.jsonl:9")) {
		t.Errorf("evidence = %v, want the two requests and the two charges", ev)
	}
}

// TestEmptyReportJSON: no findings is an empty list, not null.
func TestEmptyReportJSON(t *testing.T) {
	rep, err := Run(Config{}, []Input{{Name: "x", R: strings.NewReader("garbage\n{}\n")}})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep.WriteJSON(&buf)
	if !strings.Contains(buf.String(), `"findings": []`) || rep.LinesRead != 2 || rep.LinesSkipped != 1 {
		t.Errorf("got %s (read %d, skipped %d)", buf.String(), rep.LinesRead, rep.LinesSkipped)
	}
}
