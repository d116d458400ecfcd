package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// raceEnabled reports whether this test binary runs with the race detector
// (set by race_test.go).
var raceEnabled bool

// runID is unique to this test process: Redis and PostgreSQL are shared and
// never emptied, so every key and prefix carries it.
var runID = randHex(4)

// binary is the once binary, built at most once per test process.
var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

// onceBinary returns the path of the once binary, building ./cmd/once on
// first use. It is built lazily, so that a run without any backend does not
// pay for it.
func onceBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(buildBinary)
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

func buildBinary() {
	root, err := moduleRoot()
	if err != nil {
		binary.err = err
		return
	}
	if binary.dir, err = os.MkdirTemp("", "once-e2e-bin-"); err != nil {
		binary.err = err
		return
	}
	binary.path = filepath.Join(binary.dir, "once")
	args := []string{"build", "-o", binary.path}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/once")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		binary.err = fmt.Errorf("go build ./cmd/once: %v\n%s", err, out)
	}
}

// moduleRoot walks up from the working directory (the package's, under go
// test) to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("e2e: no go.mod above the working directory")
		}
		dir = parent
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
