package pgstore_test

import (
	"testing"

	"github.com/oncehq/once"
	"github.com/oncehq/once/pgstore"
	"github.com/oncehq/once/storetest"
)

func TestConformance(t *testing.T) {
	db := newTestDB(t, 40)
	storetest.RunServerClock(t, func(tb testing.TB) once.Store {
		s, err := pgstore.New(db.pool, db.cfg())
		if err != nil {
			tb.Fatal(err)
		}
		return s
	})
}
