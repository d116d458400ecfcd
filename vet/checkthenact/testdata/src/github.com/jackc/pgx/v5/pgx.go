// Package pgx is a stub of github.com/jackc/pgx/v5 for the analyzer tests.
package pgx

import "context"

type TxIsoLevel string

const Serializable TxIsoLevel = "serializable"

type TxOptions struct{ IsoLevel TxIsoLevel }

type Row interface{ Scan(dest ...any) error }

type Tx interface {
	QueryRow(ctx context.Context, sql string, args ...any) Row
	Exec(ctx context.Context, sql string, args ...any) (any, error)
	Commit(ctx context.Context) error
}

type Conn struct{}

func (*Conn) QueryRow(ctx context.Context, sql string, args ...any) Row      { return nil }
func (*Conn) Exec(ctx context.Context, sql string, args ...any) (any, error) { return nil, nil }
func (*Conn) BeginTx(ctx context.Context, o TxOptions) (Tx, error)           { return nil, nil }
