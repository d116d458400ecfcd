// Command once makes actions take effect exactly once per idempotency key.
// Run "once help" for its subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/oncehq/once"
	"github.com/oncehq/once/stores"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	err := m.Run(ctx, os.Args[1:])
	os.Exit(m.exitCode(err))
}

// Main holds the program's standard streams, so tests can run subcommands
// in-process.
type Main struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (flags fall back to ONCE_<FLAG>).
	Getenv func(string) string
	// OpenStore opens a store URL (default stores.Open); tests replace it.
	OpenStore func(ctx context.Context, url string) (once.Store, error)
}

// NewMain returns a Main on the process's streams and environment.
func NewMain() *Main {
	return &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, OpenStore: stores.Open}
}

// Command is one subcommand.
type Command interface {
	Run(ctx context.Context, args []string) error
}

type command struct {
	summary string
	new     func(m *Main) Command
}

// commands is filled by each subcommand's file.
var commands = map[string]command{}

func register(name, summary string, new func(m *Main) Command) {
	if _, dup := commands[name]; dup {
		panic("once: command registered twice: " + name)
	}
	commands[name] = command{summary: summary, new: new}
}

// openStore opens a store URL with m.OpenStore, or stores.Open.
func (m *Main) openStore(ctx context.Context, url string) (once.Store, error) {
	if m.OpenStore != nil {
		return m.OpenStore(ctx, url)
	}
	return stores.Open(ctx, url)
}

// Run runs the subcommand named by args[0].
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		m.usage(m.Stdout)
		if len(args) == 0 {
			return usageError("no command given")
		}
		return nil
	}
	c, ok := commands[args[0]]
	if !ok {
		m.usage(m.Stderr)
		return usageError(fmt.Sprintf("unknown command %q", args[0]))
	}
	return c.new(m).Run(ctx, args[1:])
}

func (m *Main) usage(w io.Writer) {
	fmt.Fprintln(w, "once makes an action take effect exactly once per idempotency key.")
	fmt.Fprintln(w, "\nUsage: once <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'once <command> -h' for a command's flags.")
}

// ExitError ends the program with Code. A nil Err prints nothing.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// usageError is a mistake in the command line: exit status 2.
func usageError(msg string) error {
	return &ExitError{Code: 2, Err: errors.New(msg)}
}

// exitCode prints err (if any) and maps it to the process's exit status:
// 0 ok, 1 a finding or failure, 2 a usage error.
func (m *Main) exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(m.Stderr, "once:", strings.TrimPrefix(ee.Err.Error(), "once: "))
		}
		return ee.Code
	}
	fmt.Fprintln(m.Stderr, "once:", strings.TrimPrefix(err.Error(), "once: "))
	return 1
}

// newFlagSet returns a flag set that reports errors instead of exiting, and
// parse parses it, turning flag errors into usage errors. Flags not given on
// the command line fall back to the environment variable ONCE_<FLAG> (upper
// case, dashes as underscores).
func (m *Main) newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: once %s\n\nFlags (each may also be set as ONCE_<FLAG>, e.g. %s):\n", usage, envName("store"))
		fs.PrintDefaults()
	}
	return fs
}

func envName(flagName string) string {
	return "ONCE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (m *Main) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &ExitError{Code: 2}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || m.Getenv == nil {
			return
		}
		if v := m.Getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", envName(f.Name), v, err))
			}
		}
	})
	if len(errs) > 0 {
		return usageError(errors.Join(errs...).Error())
	}
	return nil
}

// parseAnywhere is parse for commands with positional arguments: flags may
// come before or after them (stdlib flag stops at the first positional
// argument, so the rest is parsed again until none is left). "--" ends the
// flags. It returns the positional arguments.
func (m *Main) parseAnywhere(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := m.parse(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
