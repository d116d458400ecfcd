package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRaceBinary builds the real once binary and drives it over loopback:
// the exit status is the process's, as CI and shell scripts see it.
func TestRaceBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "once")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	racy := racyServer(t, "")
	for _, tc := range []struct {
		name string
		url  string
		code int
		want string
	}{
		{"racy", racy.URL, 1, "3 of 3 rounds broke the invariant"},
		{"gateway", behindGateway(t, racy).URL, 0, "0 of 3 rounds broke the invariant"},
		{"unreachable", "http://127.0.0.1:1/users", 2, "cannot reach 127.0.0.1:1"},
	} {
		cmd := exec.Command(bin, "race", tc.url, "-n", "10", "--rounds", "3", "-d", usersBody)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: exit %d, want %d and %q:\n%s", tc.name, code, tc.code, tc.want, out)
		}
	}
}

func TestProgressBar(t *testing.T) {
	var b strings.Builder
	var p progressBar
	p.draw(&b, 2, 5, 10)
	p.draw(&b, 2, 6, 10) // within 50ms: skipped
	p.draw(&b, 2, 10, 10)
	p.clear(&b)
	p.clear(&b) // nothing shown: nothing to erase
	want := "\rround 2 [###############               ] 5/10" +
		"\rround 2 [##############################] 10/10" + "\r\033[K"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
}

func TestRaceInterrupted(t *testing.T) {
	srv := racyServer(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	cmd := &raceCommand{m: m}
	time.AfterFunc(300*time.Millisecond, cancel) // as Ctrl-C does
	code := m.exitCode(cmd.Run(ctx, []string{"-n", "2", "--rounds", "10000", "-d", usersBody, srv.URL}))
	if code != 2 || !strings.Contains(errb.String(), "interrupted after") {
		t.Errorf("exit %d, stderr %q; want 2, interrupted", code, errb.String())
	}
}
