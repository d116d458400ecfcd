package main

import (
	"strings"
	"testing"
)

// TestVetModule runs once vet end to end on a module of its own: the bugs of
// seeds 000 and 002 in package bad, their correct twin in package good.
func TestVetModule(t *testing.T) {
	if testing.Short() {
		t.Skip("loads packages with the go command")
	}
	t.Chdir("testdata/vetmod")
	out, errs, code := runDiagnose(t, "", "vet")
	if code != 1 {
		t.Fatalf("once vet: exit %d, want 1; stderr: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		`bad/bad.go:14:63: variable "idempotencyKey" is derived from time.Now in Charge`,
		`bad/bad.go:24:12: check-then-act on table "charges" in Charge: the SELECT at line 16 and this INSERT`,
	}
	if len(lines) != len(want) {
		t.Fatalf("once vet printed %d reports, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("report %d = %q, want prefix %q", i, lines[i], w)
		}
	}
	out, errs, code = runDiagnose(t, "", "vet", "./good", "--format", "json")
	if code != 0 || !strings.Contains(out, `"reports": []`) {
		t.Errorf("once vet ./good: exit %d, stdout %s, stderr %s", code, out, errs)
	}
	_, errs, code = runDiagnose(t, "", "vet", "./nosuch/...")
	if code != 2 {
		t.Errorf("once vet ./nosuch/...: exit %d, want 2; stderr %s", code, errs)
	}
}
