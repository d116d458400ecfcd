// Package diagnose names concurrency failures from JSON-lines logs: a
// check-then-act race, a duplicate side effect, a retry without an
// idempotency key, a stale event applied after a newer one, a lost update.
//
// It reads the logs of slog, zap, zerolog, logrus, bunyan and the like in one
// streaming pass, merging files by time, and keeps only the state of the
// flows (correlation ids) seen within the last window, plus the highest
// version per entity (capped; see Config.MaxEntities). Verdicts are
// deterministic: the same input gives the same report, byte for byte.
//
// Each Finding names the mode, the entity, the correlation ids, the evidence
// as file:line, a timeline in milliseconds, why it is this mode and not a
// neighbouring one, the fix at the right layer, the test that would have
// caught it, and for HTTP flows a once race command that reproduces it.
package diagnose

import (
	"bufio"
	"io"
	"time"
)

// DefaultWindow is how close together two flows must be to race.
const DefaultWindow = 5 * time.Second

// DefaultMaxEntities caps the number of entities whose highest version is
// remembered for stale-event detection; the least recently seen are
// forgotten first.
const DefaultMaxEntities = 1 << 20

// Config configures a diagnosis. The zero value is ready to use.
type Config struct {
	// Window is how close in time two flows must be to count as racing, and
	// how far lines may be out of order within a file. Zero means
	// DefaultWindow.
	Window time.Duration
	// Entity, if set, names the fields that identify what was touched,
	// replacing the automatic choice (user, *_id, product, order, email…).
	Entity []string
	// MaxEntities caps the versions remembered for stale-event detection.
	// Zero means DefaultMaxEntities.
	MaxEntities int
}

// testHook, when set by a test, runs after each event.
var testHook func()

// Input is one log to read. Name appears in evidence as Name:line.
type Input struct {
	Name string
	R    io.Reader
}

// Run reads every input once and returns the findings. It returns an error
// only when an input cannot be read; lines that are not JSON are counted in
// Report.LinesSkipped.
func Run(cfg Config, inputs []Input) (*Report, error) {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxEntities <= 0 {
		cfg.MaxEntities = DefaultMaxEntities
	}
	rep := &Report{}
	cls := newClassifier(cfg.Entity)
	names := make([]string, len(inputs))
	srcs := make([]*source, len(inputs))
	for i, in := range inputs {
		names[i] = in.Name
		srcs[i] = &source{name: in.Name, idx: int32(i), r: bufio.NewReaderSize(in.R, 64<<10),
			parser: newLineParser(cls), read: &rep.LinesRead, skipped: &rep.LinesSkipped}
	}
	m, err := newMerger(srcs, int64(cfg.Window))
	if err != nil {
		return nil, err
	}
	a := newAnalyzer(cfg, names)
	for {
		ev, err := m.next()
		if err != nil {
			return nil, err
		}
		if ev == nil {
			break
		}
		a.process(ev)
		if testHook != nil {
			testHook()
		}
	}
	a.finish()
	rep.Findings = a.findings
	rep.sort()
	return rep, nil
}
