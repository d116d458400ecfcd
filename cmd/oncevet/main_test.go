package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVetTool builds oncevet and runs it under go vet -vettool on the test
// module of once vet: the two bugs are reported, the correct twin is clean.
func TestVetTool(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary and runs go vet")
	}
	bin := filepath.Join(t.TempDir(), "oncevet")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mod := filepath.Join("..", "once", "testdata", "vetmod")
	cmd := exec.Command("go", "vet", "-vettool="+bin, "./...")
	cmd.Dir = mod
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("go vet succeeded, want reports:\n%s", out)
	}
	for _, want := range []string{
		`bad/bad.go:14:63: variable "idempotencyKey" is derived from time.Now in Charge`,
		`bad/bad.go:24:12: check-then-act on table "charges" in Charge`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("go vet output lacks %q:\n%s", want, out)
		}
	}
	cmd = exec.Command("go", "vet", "-vettool="+bin, "./good")
	cmd.Dir = mod
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("go vet ./good: %v\n%s", err, out)
	}
}
