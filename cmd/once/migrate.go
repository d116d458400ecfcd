package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/oncehq/once/pgstore"
)

func init() {
	register("migrate", "print or apply the PostgreSQL store's schema", func(m *Main) Command { return &migrateCommand{m: m} })
}

type migrateCommand struct {
	m      *Main
	store  string
	prefix string
	print  bool
}

func (c *migrateCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("migrate", "migrate --store postgres://… [--print] [--prefix once_]")
	fs.StringVar(&c.store, "store", "", "PostgreSQL store URL (postgres://… or postgresql://…)")
	fs.StringVar(&c.prefix, "prefix", "", "table name prefix (default once_; \"app.once_\" puts the tables in schema app)")
	fs.BoolVar(&c.print, "print", false, "print the schema's SQL instead of applying it (for teams that run migrations themselves)")
	if err := c.m.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("migrate takes no arguments, got %q", fs.Args()))
	}
	cfg := pgstore.Config{Prefix: c.prefix}
	if c.print {
		sql, err := cfg.Schema()
		if err != nil {
			return usageError(fmt.Sprintf("--prefix: %v", err))
		}
		fmt.Fprint(c.m.Stdout, sql)
		return nil
	}
	if !strings.HasPrefix(c.store, "postgres://") && !strings.HasPrefix(c.store, "postgresql://") {
		return usageError("--store: migrate applies the PostgreSQL schema and needs a postgres:// URL (other stores need no migration)")
	}
	pc, err := pgstore.ParseURL(c.store)
	if err != nil {
		return usageError(fmt.Sprintf("--store: %v", err))
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := cfg.Migrate(ctx, pool); err != nil {
		return err
	}
	fmt.Fprintln(c.m.Stdout, "schema applied")
	return nil
}
