package pgstore_test

import "github.com/oncehq/once/pgstore"

func pgstoreNew(db *testDB) (*pgstore.Store, error) { return pgstore.New(db.pool, db.cfg()) }
