// Package vet holds once's static checks for the races that idempotency keys
// exist to prevent, as golang.org/x/tools/go/analysis analyzers:
//
//   - clockkey: an idempotency key, dedup key or request id derived from the
//     clock, randomness or a fresh UUID inside the function that sends it on.
//   - checkthenact: a SELECT then an INSERT or UPDATE of the same table with
//     nothing making the pair atomic, and a map or cache get-then-set across
//     an unlock.
//
// Run them with "once vet ./..." or, as a vet tool,
// "go vet -vettool=$(which oncevet) ./...".
package vet

import (
	"golang.org/x/tools/go/analysis"

	"github.com/oncehq/once/vet/checkthenact"
	"github.com/oncehq/once/vet/clockkey"
)

// Analyzers returns once's analyzers.
func Analyzers() []*analysis.Analyzer {
	return []*analysis.Analyzer{clockkey.Analyzer, checkthenact.Analyzer}
}
