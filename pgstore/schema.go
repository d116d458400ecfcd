package pgstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once"
)

//go:embed schema.sql
var schemaSQL string

// SchemaVersion is the version of the schema this package writes and reads.
// Version 2 differs from version 1 only in the records table's fillfactor:
// Migrate (and Open) upgrade a version-1 schema in place, and a store works
// on one too (SkipMigrate), with fewer HOT updates. A build whose
// SchemaVersion is 1 refuses a version-2 database, as every build refuses a
// newer schema than its own.
const SchemaVersion = 2

// DefaultPrefix starts every table name when Config.Prefix is empty.
const DefaultPrefix = "once_"

// maxPrefixPart keeps the longest derived name ("<prefix>schema_version",
// "<prefix>records_purge_at") within PostgreSQL's 63-byte identifiers.
const maxPrefixPart = 40

// names are the quoted SQL names a prefix gives.
type names struct {
	schema        string // quoted schema, or "" for the search_path
	records       string // qualified, quoted
	versions      string
	schemaVersion string
	purgeIndex    string // unqualified: an index lives in its table's schema
	channel       string // NOTIFY channel, unquoted
	prefix        string // the prefix as given, for the advisory lock
}

// parsePrefix splits "schema.table_prefix" (or "table_prefix") and quotes the
// names it gives. Both parts are restricted to [A-Za-z0-9_] so that no name
// needs more than quoting.
func parsePrefix(prefix string) (names, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	schema, table, qualified := strings.Cut(prefix, ".")
	if !qualified {
		schema, table = "", prefix
	}
	if qualified {
		if err := checkIdent("schema", schema, false); err != nil {
			return names{}, err
		}
	}
	if err := checkIdent("table prefix", table, true); err != nil {
		return names{}, err
	}
	q := func(name string) string {
		if schema == "" {
			return pgx.Identifier{name}.Sanitize()
		}
		return pgx.Identifier{schema, name}.Sanitize()
	}
	n := names{
		records:       q(table + "records"),
		versions:      q(table + "versions"),
		schemaVersion: q(table + "schema_version"),
		purgeIndex:    pgx.Identifier{table + "records_purge_at"}.Sanitize(),
		channel:       prefix + "changed",
		prefix:        prefix,
	}
	if schema != "" {
		n.schema = pgx.Identifier{schema}.Sanitize()
	}
	return n, nil
}

func checkIdent(what, s string, emptyOK bool) error {
	if s == "" && !emptyOK {
		return fmt.Errorf("%w: pgstore: empty %s in prefix", once.ErrInvalidArgument, what)
	}
	if len(s) > maxPrefixPart {
		return fmt.Errorf("%w: pgstore: %s %q is longer than %d bytes", once.ErrInvalidArgument, what, s, maxPrefixPart)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && !(i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("%w: pgstore: %s %q: want letters, digits and _, not starting with a digit", once.ErrInvalidArgument, what, s)
		}
	}
	return nil
}

// expand replaces the {{name}} placeholders of the embedded SQL.
func (n names) expand(sql string) string {
	create := ""
	if n.schema != "" {
		create = "CREATE SCHEMA IF NOT EXISTS " + n.schema + ";"
	}
	return strings.NewReplacer(
		"{{create_schema}}", create,
		"{{records}}", n.records,
		"{{versions}}", n.versions,
		"{{schema_version}}", n.schemaVersion,
		"{{purge_index}}", n.purgeIndex,
	).Replace(sql)
}

// Schema returns the DDL that Migrate applies for the default prefix, for
// operators who apply it themselves (once migrate --print).
func Schema() string {
	s, _ := Config{}.Schema()
	return s
}

// Schema returns the DDL that Migrate applies for c.Prefix. Returns an error
// wrapping once.ErrInvalidArgument if the prefix is malformed.
func (c Config) Schema() (string, error) {
	n, err := parsePrefix(c.Prefix)
	if err != nil {
		return "", err
	}
	return n.expand(schemaSQL), nil
}

// Migrate applies the schema for the default prefix (see Config.Migrate).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return Config{}.Migrate(ctx, pool)
}

// Migrate creates the tables and indexes for c.Prefix if they do not exist.
// It is idempotent and safe to run from many processes at once: it holds a
// transaction-scoped advisory lock while it works. It refuses a database
// whose schema is newer than this package.
func (c Config) Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	n, err := parsePrefix(c.Prefix)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "once.pgstore:"+n.prefix); err != nil {
			return err
		}
		if err := checkVersion(ctx, tx, n); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, n.expand(schemaSQL))
		return err
	})
	if err != nil && !errors.Is(err, once.ErrInvalidArgument) {
		return fmt.Errorf("pgstore: migrate: %w: %w", once.ErrUnavailable, err)
	}
	return err
}

// checkVersion refuses a schema newer than this package understands.
func checkVersion(ctx context.Context, tx pgx.Tx, n names) error {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", n.schemaVersion).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return nil
	}
	var v int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+n.schemaVersion).Scan(&v); err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("%w: pgstore: the database has schema version %d, newer than this build's %d: upgrade once", once.ErrInvalidArgument, v, SchemaVersion)
	}
	return nil
}
