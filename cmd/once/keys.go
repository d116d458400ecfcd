package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/keyapi"
)

func init() {
	register("keys", "inspect, list, delete or resolve records in a store", func(m *Main) Command { return &keysCommand{m: m} })
}

type keysCommand struct {
	m      *Main
	store  string
	scope  string
	format string
	force  bool
	// list
	state string
	limit int
	// resolve
	completed string
	released  bool
}

const keysUsage = `keys get|list|delete|resolve [flags] [KEY]

  get KEY                         print a record
  list                            list live records: abandoned first, then the oldest in progress
  delete KEY                      make a record absent (its token counter is kept)
  resolve KEY --completed RESULT  mark an abandoned key completed with RESULT (JSON or text)
  resolve KEY --released          mark an abandoned key released, so a retry runs it

delete and resolve refuse to touch a key whose lease is live unless --force.`

func (c *keysCommand) flags(sub string) *flag.FlagSet {
	fs := c.m.newFlagSet("keys "+sub, keysUsage)
	fs.StringVar(&c.store, "store", "file:once.db", "store URL (file:PATH, mem:, redis://…, postgres://…, once+http://host:port?token=…)")
	fs.StringVar(&c.scope, "scope", "", "scope of the key (the gateway uses the SHA-256 hex of the scope header; the key API the token's scope)")
	fs.StringVar(&c.format, "format", "text", "output format: text or json")
	switch sub {
	case "list":
		fs.StringVar(&c.state, "state", "all", "only records in this state: abandoned, in_progress, completed, released or all")
		fs.IntVar(&c.limit, "limit", 100, "list at most this many records")
	case "delete", "resolve":
		fs.BoolVar(&c.force, "force", false, "act even if the key's lease is live (its holder is fenced off)")
	}
	if sub == "resolve" {
		fs.StringVar(&c.completed, "completed", "", "resolve as completed with this result")
		fs.BoolVar(&c.released, "released", false, "resolve as released: the effect did not happen")
	}
	return fs
}

func (c *keysCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(c.m.Stderr, "Usage: once "+keysUsage)
		if len(args) == 0 {
			return usageError("keys: name a subcommand: get, list, delete or resolve")
		}
		return flag.ErrHelp
	}
	sub := args[0]
	run := map[string]func(context.Context, once.Store, []string) error{
		"get": c.get, "list": c.list, "delete": c.delete, "resolve": c.resolve,
	}[sub]
	if run == nil {
		return usageError(fmt.Sprintf("keys: unknown subcommand %q (want get, list, delete or resolve)", sub))
	}
	pos, err := c.m.parseAnywhere(c.flags(sub), args[1:])
	if err != nil {
		return err
	}
	if c.format != "text" && c.format != "json" {
		return usageError(fmt.Sprintf("--format %q: want text or json", c.format))
	}
	switch {
	case sub == "list" && len(pos) != 0:
		return usageError("keys list takes no KEY argument")
	case sub != "list" && len(pos) != 1:
		return usageError(fmt.Sprintf("keys %s needs exactly one KEY argument", sub))
	}
	store, err := c.m.openStore(ctx, c.store)
	if err != nil {
		return &ExitError{Code: 2, Err: fmt.Errorf("--store: %w", err)}
	}
	defer store.Close()
	return run(ctx, store, pos)
}

func (c *keysCommand) key(pos []string) (once.Key, error) {
	k := once.Key{Scope: c.scope, ID: pos[0]}
	if err := k.Validate(); err != nil {
		return k, usageError(fmt.Sprintf("KEY: %v", strings.TrimPrefix(err.Error(), "once: ")))
	}
	return k, nil
}

// record validates KEY and reads its live record.
func (c *keysCommand) record(ctx context.Context, store once.Store, pos []string) (once.Key, once.Record, error) {
	key, err := c.key(pos)
	if err != nil {
		return key, once.Record{}, err
	}
	r, err := store.Get(ctx, key)
	return key, r, err
}

func (c *keysCommand) get(ctx context.Context, store once.Store, pos []string) error {
	_, r, err := c.record(ctx, store, pos)
	if err != nil {
		return err
	}
	return c.print([]once.Record{r}, true)
}

func (c *keysCommand) print(recs []once.Record, single bool) error {
	now := time.Now()
	if c.format == "json" {
		out := make([]keyapi.StateResponse, len(recs))
		for i := range recs {
			out[i] = keyapi.FromRecord(&recs[i], now)
		}
		enc := json.NewEncoder(c.m.Stdout)
		enc.SetIndent("", "  ")
		if single {
			return enc.Encode(out[0])
		}
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(c.m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATE\tTOKEN\tATTEMPTS\tAGE\tLEASE LEFT\tEXPIRES IN")
	for i := range recs {
		r := &recs[i]
		lease := "-"
		if r.State == once.StateInProgress {
			lease = r.LeaseExpiresAt.Sub(now).Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Key.ID, keyapi.RecordState(r, now), r.Token, r.Attempts,
			now.Sub(r.CreatedAt).Round(time.Second), lease, r.ExpiresAt.Sub(now).Round(time.Second))
	}
	return tw.Flush()
}

func (c *keysCommand) list(ctx context.Context, store once.Store, _ []string) error {
	switch c.state {
	case "all", "abandoned", "in_progress", "completed", "released":
	default:
		return usageError(fmt.Sprintf("--state %q: want abandoned, in_progress, completed, released or all", c.state))
	}
	lister, ok := store.(once.Lister)
	if !ok {
		return fmt.Errorf("keys list: the %s store cannot list its records", strings.SplitN(c.store, ":", 2)[0])
	}
	now := time.Now()
	var recs []once.Record
	err := lister.List(ctx, c.scope, func(r once.Record) bool {
		if c.state == "all" || keyapi.RecordState(&r, now) == c.state {
			recs = append(recs, r)
		}
		return true
	})
	if err != nil {
		return err
	}
	sortForOperators(recs, now)
	if c.limit > 0 && len(recs) > c.limit {
		recs = recs[:c.limit]
	}
	return c.print(recs, false)
}

// sortForOperators puts what needs attention first: abandoned keys, then in
// progress ones, each oldest first; then the rest, newest first.
func sortForOperators(recs []once.Record, now time.Time) {
	rank := func(r *once.Record) int {
		switch {
		case r.Abandoned(now):
			return 0
		case r.State == once.StateInProgress:
			return 1
		}
		return 2
	}
	sort.SliceStable(recs, func(i, j int) bool {
		a, b := &recs[i], &recs[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		if rank(a) == 2 {
			return a.UpdatedAt.After(b.UpdatedAt)
		}
		return a.CreatedAt.Before(b.CreatedAt)
	})
}

// guard refuses to act on a key whose lease is live unless --force.
func (c *keysCommand) guard(r once.Record) error {
	if r.State == once.StateInProgress && !r.Abandoned(time.Now()) && !c.force {
		return &ExitError{Code: 1, Err: fmt.Errorf("key %q is in progress with a live lease (%v left): its holder may be working; use --force to act anyway",
			r.Key.ID, time.Until(r.LeaseExpiresAt).Round(time.Millisecond))}
	}
	return nil
}

func (c *keysCommand) delete(ctx context.Context, store once.Store, pos []string) error {
	key, r, err := c.record(ctx, store, pos)
	if err != nil {
		return err
	}
	if err := c.guard(r); err != nil {
		return err
	}
	if err := store.Delete(ctx, key); err != nil {
		return err
	}
	fmt.Fprintf(c.m.Stdout, "deleted %s (token %d)\n", key.ID, r.Token)
	return nil
}

// resolve marks an abandoned (or, with --force, live) key completed or
// released. It takes the key over with a new token first, which fences off
// any holder still alive, so its late completion cannot overwrite ours.
func (c *keysCommand) resolve(ctx context.Context, store once.Store, pos []string) error {
	if (c.completed == "") == !c.released {
		return usageError("keys resolve needs exactly one of --completed RESULT or --released")
	}
	key, r, err := c.record(ctx, store, pos)
	if err != nil {
		return err
	}
	if r.State != once.StateInProgress {
		return &ExitError{Code: 1, Err: fmt.Errorf("key %q is %s, not in progress: nothing to resolve", key.ID, r.State)}
	}
	if err := c.guard(r); err != nil {
		return err
	}
	if !r.Abandoned(time.Now()) {
		// --force on a live lease: end it so that the claim below takes over.
		if err := store.Delete(ctx, key); err != nil {
			return err
		}
	}
	res, err := store.Claim(ctx, once.ClaimRequest{Key: key, Fingerprint: r.Fingerprint, Lease: time.Minute,
		Retention: max(time.Until(r.ExpiresAt), time.Minute), Policy: once.AbandonRetry})
	if err != nil {
		return err
	}
	if res.Outcome != once.Acquired {
		return &ExitError{Code: 1, Err: fmt.Errorf("key %q changed meanwhile (%s); nothing done", key.ID, res.Outcome)}
	}
	if c.released {
		err = store.Release(ctx, key, res.Token)
	} else {
		err = store.Complete(ctx, key, res.Token, once.Result{Data: []byte(c.completed), Meta: map[string]string{"once.resolved": "operator"}})
	}
	if err != nil {
		return err
	}
	state := map[bool]string{true: "released", false: "completed"}[c.released]
	fmt.Fprintf(c.m.Stdout, "resolved %s as %s (token %d)\n", key.ID, state, res.Token)
	return nil
}
