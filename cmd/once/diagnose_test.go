package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// runDiagnose runs "once <args>" in-process and returns stdout, stderr and
// the exit status.
func runDiagnose(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := m.exitCode(m.Run(context.Background(), args))
	return out.String(), errb.String(), code
}

func logFile(name string) string {
	return filepath.Join("..", "..", "diagnose", "testdata", "logs", name)
}

func TestDiagnoseExitCodes(t *testing.T) {
	race := logFile("charge-race.slog.jsonl")
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"findings", "", []string{"diagnose", race}, 1, "duplicate-side-effect on user=user_456"},
		{"clean", "", []string{"diagnose", logFile("innocent.jsonl")}, 0, "no race found in 45 lines"},
		{"flags after file", "", []string{"diagnose", race, "--format", "json"}, 1, `"mode": "duplicate-side-effect"`},
		{"stdin", `{"msg":"x"}` + "\nnot json\n", []string{"diagnose", "-"}, 0, "no race found in 2 lines (1 skipped: not JSON)"},
		{"missing file", "", []string{"diagnose", "no/such.log"}, 2, ""},
		{"directory", "", []string{"diagnose", "."}, 2, ""},
		{"no file", "", []string{"diagnose"}, 2, ""},
		{"bad format", "", []string{"diagnose", "--format", "xml", race}, 2, ""},
		{"bad window", "", []string{"diagnose", "--window", "-1s", race}, 2, ""},
		{"bad flag", "", []string{"diagnose", "--nope", race}, 2, ""},
		{"entity", "", []string{"diagnose", "--entity", "user", logFile("innocent.jsonl")}, 1, "on user=user_2"},
		{"window", "", []string{"diagnose", logFile("resubmit.jsonl"), "--window=1s"}, 0, "no race found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errs, code := runDiagnose(t, tc.stdin, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, errs)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("stdout does not contain %q:\n%s", tc.want, out)
			}
			if code == 2 && errs == "" {
				t.Error("exit 2 with nothing on stderr")
			}
		})
	}
}

func TestDiagnoseJSON(t *testing.T) {
	out, _, code := runDiagnose(t, "", "diagnose", "--format=json", logFile("split-a.jsonl"), logFile("split-b.jsonl"))
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var doc struct {
		Findings []struct {
			Mode           string   `json:"mode"`
			Entity         string   `json:"entity"`
			CorrelationIDs []string `json:"correlation_ids"`
			Evidence       []string `json:"evidence"`
		} `json:"findings"`
		LinesRead    int `json:"lines_read"`
		LinesSkipped int `json:"lines_skipped"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Findings) != 1 || doc.LinesRead != 6 || doc.LinesSkipped != 0 {
		t.Fatalf("got %+v", doc)
	}
	f := doc.Findings[0]
	if f.Entity != "user=user_9" || strings.Join(f.CorrelationIDs, ",") != "req-a,req-b" || len(f.Evidence) == 0 {
		t.Errorf("finding %+v", f)
	}
}
