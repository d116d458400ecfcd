package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oncehq/once/diagnose"
)

func init() {
	register("diagnose", "name the race in JSON-lines logs: check-then-act, duplicate effect, retry, stale event, lost update",
		func(m *Main) Command { return &diagnoseCommand{m: m} })
}

const diagnoseUsage = `diagnose [--format text|json] [--window D] [--entity f1,f2] FILE...

Reads JSON-lines logs (slog, zap, zerolog, logrus, bunyan…; "-" is standard
input) in one streaming pass, merging files by time, and names each
concurrency failure it finds: check-then-act, duplicate-side-effect,
retry-without-key, stale-event, lost-update. Flags may come before or after
the files. Lines that are not JSON are skipped and counted.

Exit status: 0 nothing found, 1 findings, 2 unreadable input or a usage error.`

type diagnoseCommand struct{ m *Main }

func (c *diagnoseCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("diagnose", diagnoseUsage)
	format := fs.String("format", "text", "output: text or json")
	window := fs.Duration("window", diagnose.DefaultWindow, "how close together two flows must be to race (and how far lines may be out of order)")
	entity := fs.String("entity", "", "comma-separated fields that identify what was touched (default: user, *_id, product, order, email, …)")
	files, err := c.m.parseAnywhere(fs, args)
	if err != nil {
		return err
	}
	cfg, err := diagnoseConfig(*format, *window, *entity)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usageError("diagnose: no log file given (use - for standard input); usage: once " + strings.SplitN(diagnoseUsage, "\n", 2)[0])
	}
	inputs, closeAll, err := c.open(files)
	defer closeAll()
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	rep, err := diagnose.Run(cfg, inputs)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	if err := c.write(rep, *format); err != nil {
		return err
	}
	if len(rep.Findings) > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

func diagnoseConfig(format string, window time.Duration, entity string) (diagnose.Config, error) {
	var cfg diagnose.Config
	if format != "text" && format != "json" {
		return cfg, usageError(fmt.Sprintf("diagnose: --format %q: want text or json", format))
	}
	if window <= 0 {
		return cfg, usageError(fmt.Sprintf("diagnose: --window %v: must be positive, e.g. 5s or 250ms", window))
	}
	cfg.Window = window
	for _, f := range strings.Split(entity, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.Entity = append(cfg.Entity, f)
		}
	}
	if entity != "" && len(cfg.Entity) == 0 {
		return cfg, usageError(fmt.Sprintf("diagnose: --entity %q: want field names separated by commas, e.g. user,product", entity))
	}
	return cfg, nil
}

// open opens every file ("-" is standard input, at most once).
func (c *diagnoseCommand) open(names []string) ([]diagnose.Input, func(), error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	inputs := make([]diagnose.Input, 0, len(names))
	stdin := false
	for _, n := range names {
		if n == "-" {
			if stdin {
				return nil, closeAll, errors.New("diagnose: standard input (-) given twice")
			}
			stdin = true
			inputs = append(inputs, diagnose.Input{Name: "stdin", R: c.m.Stdin})
			continue
		}
		f, err := os.Open(n)
		if err != nil {
			return nil, closeAll, fmt.Errorf("diagnose: %w", err)
		}
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			f.Close()
			return nil, closeAll, fmt.Errorf("diagnose: %s is a directory, want a log file", n)
		}
		files = append(files, f)
		inputs = append(inputs, diagnose.Input{Name: n, R: f})
	}
	return inputs, closeAll, nil
}

func (c *diagnoseCommand) write(rep *diagnose.Report, format string) error {
	var err error
	if format == "json" {
		err = rep.WriteJSON(c.m.Stdout)
	} else {
		err = rep.WriteText(c.m.Stdout)
	}
	if err != nil && !errors.Is(err, io.ErrClosedPipe) {
		return fmt.Errorf("diagnose: writing the report: %w", err)
	}
	return nil
}
