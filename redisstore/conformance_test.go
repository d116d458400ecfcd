package redisstore

import (
	"testing"

	"github.com/oncehq/once"
	"github.com/oncehq/once/storetest"
)

// runConformance runs the storetest suite against stores sharing base's
// connection and prefix.
func runConformance(t *testing.T, base *Store) {
	storetest.RunServerClock(t, func(tb testing.TB) once.Store {
		s, err := New(base.client, Config{Prefix: base.prefix})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	})
}

func TestConformance(t *testing.T) {
	runConformance(t, newTestStore(t))
}
