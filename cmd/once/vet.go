package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/tools/go/analysis/checker"
	"golang.org/x/tools/go/packages"

	"github.com/oncehq/once/vet"
)

func init() {
	register("vet", "report clock-derived idempotency keys and check-then-act races in Go code",
		func(m *Main) Command { return &vetCommand{m: m} })
}

const vetUsage = `vet [--format text|json] [packages]

Runs once's analyzers over Go packages (default ./..., tests included):
  clockkey      an idempotency key, dedup key or request id derived from
                time.Now, math/rand, crypto/rand or a fresh UUID inside the
                function that sends it onward
  checkthenact  a SELECT then an INSERT/UPDATE of the same table with no
                ON CONFLICT, FOR UPDATE or SERIALIZABLE transaction; a
                map/cache get-then-set across an unlock

Flags may come before or after the packages. The same analyzers run under
go vet with: go vet -vettool=$(which oncevet) ./...

Exit status: 0 clean, 1 reports, 2 packages that do not load or a usage error.`

type vetCommand struct{ m *Main }

// vetReport is one diagnostic, positioned relative to the working directory.
type vetReport struct {
	Analyzer string `json:"analyzer"`
	Pos      string `json:"pos"`
	Message  string `json:"message"`
	pos      token.Position
}

func (c *vetCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("vet", vetUsage)
	format := fs.String("format", "text", "output: text or json")
	patterns, err := c.m.parseAnywhere(fs, args)
	if err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return usageError(fmt.Sprintf("vet: --format %q: want text or json", *format))
	}
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	reports, err := runVet(ctx, patterns)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	if err := c.print(reports, *format); err != nil {
		return err
	}
	if len(reports) > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

// runVet loads the packages (with their tests) and runs the analyzers.
func runVet(ctx context.Context, patterns []string) ([]vetReport, error) {
	cfg := &packages.Config{Context: ctx, Mode: packages.LoadAllSyntax | packages.NeedModule, Tests: true}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		return nil, fmt.Errorf("vet: loading %s: %w", strings.Join(patterns, " "), err)
	}
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("vet: no Go packages match %s", strings.Join(patterns, " "))
	}
	if err := loadErrors(pkgs); err != nil {
		return nil, err
	}
	g, err := checker.Analyze(vet.Analyzers(), pkgs, &checker.Options{})
	if err != nil {
		return nil, fmt.Errorf("vet: %w", err)
	}
	return collect(g)
}

// loadErrors joins the packages' load and type errors, at most ten.
func loadErrors(pkgs []*packages.Package) error {
	var msgs []string
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			if len(msgs) < 10 {
				msgs = append(msgs, e.Error())
			}
		}
	})
	if len(msgs) == 0 {
		return nil
	}
	return errors.New("vet: packages do not load:\n  " + strings.Join(msgs, "\n  "))
}

// collect gathers the root actions' diagnostics, once each (a package and
// its test variant share files), sorted by position.
func collect(g *checker.Graph) ([]vetReport, error) {
	wd, _ := os.Getwd()
	seen := map[string]bool{}
	var out []vetReport
	var errs []error
	for _, act := range g.Roots {
		if act.Err != nil {
			errs = append(errs, act.Err)
			continue
		}
		for _, d := range act.Diagnostics {
			p := act.Package.Fset.Position(d.Pos)
			if rel, err := filepath.Rel(wd, p.Filename); err == nil && !strings.HasPrefix(rel, "..") {
				p.Filename = rel
			}
			r := vetReport{Analyzer: act.Analyzer.Name, Pos: p.String(), Message: d.Message, pos: p}
			if k := r.Pos + r.Message; !seen[k] {
				seen[k] = true
				out = append(out, r)
			}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("vet: %w", errors.Join(errs...))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].pos, out[j].pos
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return out, nil
}

func (c *vetCommand) print(reports []vetReport, format string) error {
	if format == "json" {
		if reports == nil {
			reports = []vetReport{}
		}
		enc := json.NewEncoder(c.m.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(map[string]any{"reports": reports})
	}
	for _, r := range reports {
		fmt.Fprintf(c.m.Stdout, "%s: %s [%s]\n", r.Pos, r.Message, r.Analyzer)
	}
	return nil
}
