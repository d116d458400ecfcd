package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	m := &Main{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
	start := time.Now()
	if err := m.Run(context.Background(), []string{"demo"}); err != nil {
		t.Fatalf("demo: %v\n%s", err, errOut.String())
	}
	took := time.Since(start)
	text := out.String()
	if took > 10*time.Second {
		t.Errorf("demo took %v, want under 10s", took)
	}
	for _, want := range []string{"duplicate", "orders created", "replays", "straight to the API", "through once serve", "once serve --listen"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	// The gateway row: exactly one order, every other answer a replay.
	if !strings.Contains(text, "through once serve                   1           0       49") {
		t.Errorf("gateway row is not 1 order, 0 duplicates, 49 replays:\n%s", text)
	}
	direct := rowNumbers(t, text, "straight to the API")
	if direct[0] < 2 || direct[1] != direct[0]-1 {
		t.Errorf("the racy API created %d orders directly; the demo shows no race:\n%s", direct[0], text)
	}
}

func TestDemoBadFlag(t *testing.T) {
	m := &Main{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
	err := m.Run(context.Background(), []string{"demo", "--requests", "1"})
	if code := m.exitCode(err); code != 2 {
		t.Fatalf("exit code %d, want 2 (%v)", code, err)
	}
}

// rowNumbers returns the three numbers of the table row named name.
func rowNumbers(t *testing.T, text, name string) [3]int {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), name); ok {
			var n [3]int
			if _, err := fmtSscan(rest, &n[0], &n[1], &n[2]); err != nil {
				t.Fatalf("row %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no row %q in:\n%s", name, text)
	return [3]int{}
}
