package storetest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/oncehq/once"
)

// invalidIDs are IDs every method refuses.
var invalidIDs = map[string]string{
	"empty":         "",
	"256 bytes":     strings.Repeat("k", 256),
	"DEL 0x7f":      "key\x7f",
	"US 0x1f":       "key\x1fx",
	"NUL":           "\x00",
	"newline":       "a\nb",
	"UTF-8":         "clé",
	"invalid UTF-8": "a\xff",
}

func testInvalidKey(f *fixture) {
	for name, id := range invalidIDs {
		f.checkInvalidKey(name, once.Key{Scope: f.scope, ID: id})
		_, _, err := f.s.Advance(f.ctx, f.scope, id, 1)
		f.wantErr(err, once.ErrInvalidKey, "Advance with entity "+name)
	}
	long := strings.Repeat("s", once.MaxScopeLen+1)
	f.checkInvalidKey("scope of 1025 bytes", once.Key{Scope: long, ID: "k"})
	_, _, err := f.s.Advance(f.ctx, long, "e", 1)
	f.wantErr(err, once.ErrInvalidKey, "Advance with a scope of 1025 bytes")
}

// checkInvalidKey checks that every method refuses k with ErrInvalidKey.
func (f *fixture) checkInvalidKey(name string, k once.Key) {
	f.Helper()
	req := f.reqKey(k, "fp")
	_, err := f.s.Claim(f.ctx, req)
	f.wantErr(err, once.ErrInvalidKey, "Claim with key "+name)
	f.wantErr(f.s.Complete(f.ctx, k, 1, result("r")), once.ErrInvalidKey, "Complete with key "+name)
	f.wantErr(f.s.Release(f.ctx, k, 1), once.ErrInvalidKey, "Release with key "+name)
	f.wantErr(f.s.Extend(f.ctx, k, 1, time.Minute), once.ErrInvalidKey, "Extend with key "+name)
	_, err = f.s.Get(f.ctx, k)
	f.wantErr(err, once.ErrInvalidKey, "Get with key "+name)
	f.wantErr(f.s.Delete(f.ctx, k), once.ErrInvalidKey, "Delete with key "+name)
}

// testValidKeyEdges: the longest ID and scope, and every printable byte,
// including those that mean something to Redis, SQL or shells.
func testValidKeyEdges(f *fixture) {
	var all strings.Builder
	for c := byte(0x20); c <= 0x7e; c++ {
		all.WriteByte(c)
	}
	longScope := f.scope + strings.Repeat("s", once.MaxScopeLen-len(f.scope))
	keys := []once.Key{
		f.key(strings.Repeat("k", once.MaxKeyLen)),
		f.key(all.String()),
		f.key(" "),
		f.key("~"),
		f.key(`'; DROP TABLE once; --`),
		f.key(`{tag}*?[x]\"%_`),
		{Scope: longScope, ID: "k"},
	}
	for i, k := range keys {
		t := f.acquire(f.reqKey(k, "fp"), 0, 1)
		f.complete(k, t, result(fmt.Sprint(i)))
		f.checkCompleted(f.get(k), t, result(fmt.Sprint(i)))
		applied, cur, err := f.s.Advance(f.ctx, k.Scope, k.ID, 7)
		if err != nil || !applied || cur != 7 {
			f.Errorf("Advance(%q, 7) = %v, %d, %v; want true, 7, nil", once.Redact(k.ID), applied, cur, err)
		}
	}
}

func testInvalidArgument(f *fixture) {
	bad := map[string]func(*once.ClaimRequest){
		"zero lease":         func(r *once.ClaimRequest) { r.Lease = 0 },
		"negative lease":     func(r *once.ClaimRequest) { r.Lease = -time.Second },
		"zero retention":     func(r *once.ClaimRequest) { r.Retention = 0 },
		"negative retention": func(r *once.ClaimRequest) { r.Retention = -time.Second },
		"unknown policy":     func(r *once.ClaimRequest) { r.Policy = once.AbandonRetry + 1 },
	}
	for name, mutate := range bad {
		req := f.req("invalid-argument", "fp")
		mutate(&req)
		_, err := f.s.Claim(f.ctx, req)
		f.wantErr(err, once.ErrInvalidArgument, "Claim with "+name)
	}
	_, err := f.s.Get(f.ctx, f.key("invalid-argument"))
	f.wantErr(err, once.ErrNotFound, "Get after refused claims")
	req := f.req("invalid-extend", "fp")
	t := f.acquire(req, 0, 1)
	for _, lease := range []time.Duration{0, -time.Second} {
		f.wantErr(f.s.Extend(f.ctx, req.Key, t, lease), once.ErrInvalidArgument, fmt.Sprintf("Extend(lease %v)", lease))
	}
	if r := f.get(req.Key); r.Lease != req.Lease || r.Token != t {
		f.Errorf("after refused Extends, record %s, want lease %v token %d", describe(r), req.Lease, t)
	}
}

func testClose(f *fixture) {
	req := f.req("close", "fp")
	t := f.acquire(req, 0, 1)
	f.closed = true
	if err := f.s.Close(); err != nil {
		f.Fatalf("Close: %v", err)
	}
	for name, err := range closedErrors(f.ctx, f.s, req, t) {
		f.wantErr(err, once.ErrClosed, name+" after Close")
	}
}

// closedErrors calls every method of s, the optional ones included.
func closedErrors(ctx context.Context, s once.Store, req once.ClaimRequest, t uint64) map[string]error {
	k := req.Key
	errs := map[string]error{}
	_, errs["Claim"] = s.Claim(ctx, req)
	errs["Complete"] = s.Complete(ctx, k, t, result("r"))
	errs["Release"] = s.Release(ctx, k, t)
	errs["Extend"] = s.Extend(ctx, k, t, time.Minute)
	_, errs["Get"] = s.Get(ctx, k)
	errs["Delete"] = s.Delete(ctx, k)
	_, _, errs["Advance"] = s.Advance(ctx, k.Scope, "entity", 1)
	if sw, ok := s.(once.Sweeper); ok {
		_, errs["Sweep"] = sw.Sweep(ctx, 10)
	}
	if p, ok := s.(once.Pinger); ok {
		errs["Ping"] = p.Ping(ctx)
	}
	if l, ok := s.(once.Lister); ok {
		errs["List"] = l.List(ctx, k.Scope, func(once.Record) bool { return true })
	}
	if w, ok := s.(once.Watcher); ok {
		var stop func()
		_, stop, errs["Watch"] = w.Watch(ctx, k)
		if stop != nil {
			stop()
		}
	}
	return errs
}
