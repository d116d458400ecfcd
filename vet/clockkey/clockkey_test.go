package clockkey_test

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"

	"github.com/oncehq/once/vet/clockkey"
)

func TestClockKey(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), clockkey.Analyzer, "a", "b")
}
