// Package sqlx is a stub of github.com/jmoiron/sqlx for the analyzer tests.
package sqlx

type DB struct{}

func (*DB) Get(dest any, query string, args ...any) error    { return nil }
func (*DB) Select(dest any, query string, args ...any) error { return nil }
func (*DB) MustExec(query string, args ...any) any           { return nil }
