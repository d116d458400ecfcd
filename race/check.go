package race

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// CheckTimeout bounds one run of a shell check.
const CheckTimeout = time.Minute

// ShellCheck returns a CheckFunc that runs command (a template) with "sh -c"
// and returns its standard output. The command also finds the round in its
// environment as ONCE_RACE_ROUND and ONCE_RACE_KEY. A command that exits
// with an error, or runs for longer than CheckTimeout, is an error (with the
// start of its standard error), not a broken round: a check that cannot
// measure says nothing about the invariant.
func ShellCheck(command string) (CheckFunc, error) {
	if err := CheckTemplate(command, false); err != nil {
		return nil, err
	}
	return func(ctx context.Context, v Vars) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", Expand(command, v))
		cmd.Env = append(os.Environ(), "ONCE_RACE_ROUND="+strconv.Itoa(v.Round), "ONCE_RACE_KEY="+v.Key)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%v%s", err, firstLine(stderr.String()))
		}
		return stdout.String(), nil
	}, nil
}

// firstLine returns ": " and the first line of s, at most 200 bytes, or "".
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if s == "" {
		return ""
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return ": " + s
}
