package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oncehq/once/race"
)

func init() {
	register("race", "fire one request many times at once, round after round, and check it took effect once",
		func(m *Main) Command { return &raceCommand{m: m} })
}

const raceUsage = `race [flags] URL

Fires -n identical requests at URL at once (connections are dialled first,
then a barrier releases every request together), --rounds times, and judges
each round. Flags may come before or after URL.

Templates, in -d, -H, URL (path and query) and --check/--expect:
  {{round}} round number (1-based)   {{key}}  the round's Idempotency-Key
  {{n}}     requests per round       {{uuid}} a random UUID, fresh per round
  {{i}}     request number (1-based; not in --check/--expect)

A round holds when --check's trimmed output equals --expect (the command also
gets ONCE_RACE_ROUND and ONCE_RACE_KEY); without --check and with --key same,
when all 2xx answers are byte-identical. Redirects are not followed and no
proxy is used: once race only talks to URL.

Exit status: 0 every round held, 1 a round broke the invariant, 2 a usage
error, or URL could not be reached, or --check could not run.`

type raceCommand struct{ m *Main }

// raceArgs is the parsed command line.
type raceArgs struct {
	cfg    race.Config
	format string
}

func (c *raceCommand) Run(ctx context.Context, args []string) error {
	a, err := c.parse(args)
	if err != nil {
		return err
	}
	if a.cfg.Check == nil && a.cfg.Key != race.KeySame {
		fmt.Fprintf(c.m.Stderr, "once race: with --key %s and no --check, rounds are not judged; add --check and --expect\n", a.cfg.Key)
	}
	out := &raceOutput{w: c.m.Stdout, json: a.format == "json", planned: a.cfg.Rounds}
	if !out.json && isTerminal(c.m.Stdout) {
		a.cfg.OnAnswer = out.progress
	}
	a.cfg.OnRound = out.round
	rep, err := race.Run(ctx, a.cfg)
	if werr := out.finish(rep); werr != nil && err == nil {
		err = werr
	}
	return raceExit(rep, err)
}

// raceExit maps the outcome to the exit status: 1 when a round broke the
// invariant, 2 when the race could not be run (a *race.ConnError, a
// *race.CheckError, an interruption).
func raceExit(rep *race.Report, err error) error {
	switch {
	case errors.Is(err, context.Canceled) && rep != nil:
		return &ExitError{Code: 2, Err: fmt.Errorf("interrupted after %d rounds", rep.Rounds)}
	case err != nil:
		return &ExitError{Code: 2, Err: err}
	case rep.RoundsFailed > 0:
		return &ExitError{Code: 1}
	}
	return nil
}

func (c *raceCommand) parse(args []string) (*raceArgs, error) {
	fs := c.m.newFlagSet("race", raceUsage)
	var (
		a       raceArgs
		headers headerFlag
	)
	fs.IntVar(&a.cfg.N, "n", 50, fmt.Sprintf("concurrent requests per round, 1 to %d", race.MaxN))
	fs.IntVar(&a.cfg.Rounds, "rounds", 10, "rounds to run")
	fs.StringVar(&a.cfg.Method, "X", "POST", "HTTP method")
	fs.Var(&headers, "H", "request header 'Name: value'; repeatable")
	body := fs.String("d", "", "request body, or @FILE to read it from FILE (@- for stdin)")
	key := fs.String("key", "same", "Idempotency-Key: same (one per round), unique (one per request) or none")
	fs.DurationVar(&a.cfg.Timeout, "timeout", 10*time.Second, "timeout of each request")
	fs.DurationVar(&a.cfg.Spread, "spread", 0, "start each request after a random delay up to `DURATION` (0: all at once)")
	check := fs.String("check", "", "shell `COMMAND` run after each round; its trimmed stdout must equal --expect")
	expect := fs.String("expect", "", "the `VALUE` --check must print")
	fs.StringVar(&a.format, "format", "text", "output: text or json")
	pos, err := c.m.parseAnywhere(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usageError(fmt.Sprintf("race: want exactly one URL, got %d arguments; usage: once %s", len(pos), strings.SplitN(raceUsage, "\n", 2)[0]))
	}
	a.cfg.URL, a.cfg.Header = pos[0], headers
	return &a, c.finishArgs(&a, *body, *key, *check, *expect, setFlags(fs))
}

// finishArgs checks and converts the flags that need more than parsing.
func (c *raceCommand) finishArgs(a *raceArgs, body, key, check, expect string, set map[string]bool) error {
	var err error
	a.cfg.Key = race.KeyMode(key) // checked by Validate
	// Checked here because race.Config reads a zero as "the default".
	if a.cfg.N < 1 {
		return usageError(fmt.Sprintf("race: -n %d: must be 1 to %d requests per round", a.cfg.N, race.MaxN))
	}
	if a.cfg.Rounds < 1 {
		return usageError(fmt.Sprintf("race: --rounds %d: must be at least 1", a.cfg.Rounds))
	}
	if a.format != "text" && a.format != "json" {
		return usageError(fmt.Sprintf("race: --format %q: want text or json", a.format))
	}
	if a.cfg.Timeout <= 0 {
		return usageError(fmt.Sprintf("race: --timeout %v: must be positive", a.cfg.Timeout))
	}
	if a.cfg.Body, err = c.readBody(body); err != nil {
		return usageError("race: -d " + err.Error())
	}
	if set["check"] != set["expect"] {
		return usageError("race: --check and --expect go together: the command's output must equal the expected value")
	}
	if set["check"] {
		if a.cfg.Check, err = race.ShellCheck(check); err != nil {
			return usageError("race: --check: " + err.Error())
		}
		a.cfg.Expect = expect
	}
	if err := a.cfg.Validate(); err != nil {
		return usageError("race: " + err.Error())
	}
	return nil
}

// setFlags returns the flags given on the command line or, through
// Main.parse's fallback, in the environment.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// readBody resolves -d: "@FILE" reads FILE, "@-" standard input.
func (c *raceCommand) readBody(d string) (string, error) {
	name, ok := strings.CutPrefix(d, "@")
	if !ok {
		return d, nil
	}
	if name == "-" {
		b, err := io.ReadAll(c.m.Stdin)
		return string(b), err
	}
	b, err := os.ReadFile(name)
	return string(b), err
}

// headerFlag collects repeated -H flags.
type headerFlag []race.Header

func (h *headerFlag) String() string {
	if h == nil {
		return ""
	}
	names := make([]string, len(*h))
	for i, x := range *h {
		names[i] = x.Name
	}
	return strings.Join(names, ", ")
}

func (h *headerFlag) Set(s string) error {
	x, err := race.ParseHeader(s)
	if err != nil {
		return err
	}
	*h = append(*h, x)
	return nil
}

// isTerminal reports whether w is a terminal, where a progress bar helps.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// raceOutput prints the rounds as they finish (text) or the whole report at
// the end (json).
type raceOutput struct {
	w       io.Writer
	json    bool
	planned int
	bar     progressBar
}

func (o *raceOutput) progress(round, done, n int) { o.bar.draw(o.w, round, done, n) }

func (o *raceOutput) round(r race.Round) {
	if o.json {
		return
	}
	o.bar.clear(o.w)
	race.WriteRound(o.w, r, o.planned)
}

func (o *raceOutput) finish(rep *race.Report) error {
	if rep == nil {
		return nil
	}
	o.bar.clear(o.w)
	if o.json {
		enc := json.NewEncoder(o.w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if rep.Rounds == 0 {
		return nil
	}
	return race.WriteSummary(o.w, rep)
}
