package redisstore

import (
	"context"
	"strings"

	"github.com/oncehq/once"
	"github.com/redis/rueidis"
)

var _ once.Lister = (*Store)(nil)

// listBatch is how many keys List asks SCAN for, and reads, at a time.
const listBatch = 500

// List implements once.Lister. Records are found by SCAN over every primary
// (the store keeps no index, so that the hot path pays nothing for listing):
// its cost grows with the whole database, not with the scope. Each record is
// read with the same server-clock check as Get, so only live records are
// listed. Keys that hold no record of this version, such as the hashes of an
// earlier one (see Upgrading in the package documentation), are skipped:
// the operations on those keys report them.
// Returns ErrClosed after Close, or an error wrapping ErrUnavailable.
func (s *Store) List(ctx context.Context, scope string, fn func(once.Record) bool) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	pattern := globEscape(s.prefix) + "r{*}"
	for _, node := range s.client.Nodes() {
		primary, err := isPrimary(ctx, node)
		if err != nil {
			return s.unavailable("list", err)
		}
		if !primary {
			continue
		}
		more, err := s.listNode(ctx, node, pattern, scope, fn)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// listNode lists the records of one node; it returns false once fn has.
func (s *Store) listNode(ctx context.Context, node rueidis.Client, pattern, scope string, fn func(once.Record) bool) (bool, error) {
	var cursor uint64
	for {
		cmd := node.B().Scan().Cursor(cursor).Match(pattern).Count(listBatch).Type("string").Build()
		e, err := node.Do(ctx, cmd).AsScanEntry()
		if err != nil {
			return false, s.unavailable("list", err)
		}
		if more, err := s.listKeys(ctx, e.Elements, scope, fn); err != nil || !more {
			return false, err
		}
		if cursor = e.Cursor; cursor == 0 {
			return true, nil
		}
	}
}

// listKeys reads a batch of record keys in one pipeline and passes the live
// records of scope to fn. A key that changed type since SCAN, or holds a
// string that is not a record, is skipped.
func (s *Store) listKeys(ctx context.Context, keys []string, scope string, fn func(once.Record) bool) (bool, error) {
	if len(keys) == 0 {
		return true, nil
	}
	execs := make([]rueidis.LuaExec, len(keys))
	for i, k := range keys {
		execs[i] = rueidis.LuaExec{Keys: []string{k}}
	}
	for _, res := range getScript.lua.ExecMulti(ctx, s.client, execs...) {
		msg, err := res.ToMessage()
		if isRedisErr(err, "WRONGTYPE") {
			continue
		}
		if err != nil {
			return false, s.unavailable("list", err)
		}
		if msg.IsInt64() {
			continue // not live
		}
		v, err := msg.ToString()
		if err != nil {
			return false, s.corrupt(err)
		}
		if rec, ok := scopeRecord(v, scope); ok && !fn(rec) {
			return false, nil
		}
	}
	return true, nil
}

// scopeRecord decodes a record value if its key is in scope. It reports
// false for a value it cannot decode.
func scopeRecord(v, scope string) (once.Record, bool) {
	_, enc, _, err := splitRecord(v)
	if err != nil {
		return once.Record{}, false
	}
	key, err := decodeKey(enc)
	if err != nil || key.Scope != scope {
		return once.Record{}, false
	}
	rec, err := decodeRecord(key, v)
	return rec, err == nil
}

func isPrimary(ctx context.Context, node rueidis.Client) (bool, error) {
	role, err := node.Do(ctx, node.B().Role().Build()).ToArray()
	if err != nil {
		return false, err
	}
	if len(role) == 0 {
		return false, nil
	}
	name, _ := role[0].ToString()
	return name == "master", nil
}

// globEscape escapes the characters SCAN's MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if strings.IndexByte(`*?[]\`, c) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
