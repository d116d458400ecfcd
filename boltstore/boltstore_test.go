package boltstore

import (
	"path/filepath"
	"testing"

	"github.com/oncehq/once"
	"github.com/oncehq/once/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, clock once.Clock) once.Store {
		s, err := Open(filepath.Join(tb.TempDir(), "once.db"), Config{Clock: clock})
		if err != nil {
			tb.Fatalf("Open: %v", err)
		}
		return s
	})
}
