package memstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// TestHashCollisions: keys whose hashes collide share a chain; each is found,
// removed and purged on its own.
func TestHashCollisions(t *testing.T) {
	base, tl := testBase, testTimeline()
	var sh shard
	sh.init()
	const h = 42
	var keys []once.Key
	for i := range 5 {
		k := once.Key{Scope: "s", ID: fmt.Sprint("k", i)}
		keys = append(keys, k)
		slot, head := sh.find(k, h)
		if slot >= 0 {
			t.Fatalf("find(%v) before adding = %d", k, slot)
		}
		n := once.Record{Key: k, State: once.StateInProgress, Token: uint64(i + 1), Lease: time.Second,
			ExpiresAt: base.Add(time.Duration(5-i) * time.Second), CreatedAt: base, UpdatedAt: base}
		sh.put(sh.add(h, head), &n, &tl, newPayload, true)
	}
	mustFind := func(k once.Key, token uint64) {
		t.Helper()
		slot, _ := sh.find(k, h)
		if token == 0 {
			if slot >= 0 {
				t.Fatalf("find(%v) = %d after removal", k, slot)
			}
			return
		}
		if slot < 0 {
			t.Fatalf("find(%v) = -1", k)
		}
		if v := sh.view(slot, k, &tl); v.Token != token || v.Key != k {
			t.Fatalf("view(%v) = %+v, want token %d", k, v, token)
		}
	}
	for i, k := range keys {
		mustFind(k, uint64(i+1))
	}
	// The chain runs 4, 3, 2, 1, 0: remove its head and one further on.
	for _, i := range []int{4, 1} {
		slot, _ := sh.find(keys[i], h)
		sh.remove(slot)
		mustFind(keys[i], 0)
	}
	for _, i := range []int{0, 2, 3} {
		mustFind(keys[i], uint64(i+1))
	}
	// Purge times are 6s, 4s and 3s on: key 3 goes first, then 2, then 0.
	if got := sh.evict(base.Add(5*time.Second), &tl, 10); got != 2 || sh.n != 1 {
		t.Fatalf("evict at +5s forgot %d, %d left; want 2, 1", got, sh.n)
	}
	mustFind(keys[0], 1)
	mustFind(keys[2], 0)
	if got := sh.evict(base.Add(6*time.Second), &tl, 10); got != 1 || len(sh.index) != 0 {
		t.Fatalf("evict at +6s forgot %d, index %v; want 1, empty", got, sh.index)
	}
}

// TestPurgeHeap: entries come out in purge order however they were pushed,
// fixed and removed, and each slot knows its entry.
func TestPurgeHeap(t *testing.T) {
	var sh shard
	sh.init()
	const n = 200
	for i := range n {
		sh.add(uint32(i), -1)
		sh.purge.push(int32(i), int64((i*7919)%n))
	}
	for i := 0; i < n; i += 3 {
		sh.purge.fix(sh.rec(int32(i)).hpos, int64(n+i))
	}
	for i := 1; i < n; i += 5 {
		sh.purge.remove(sh.rec(int32(i)).hpos)
	}
	last := int64(-1)
	for len(sh.purge.items) > 0 {
		for j, it := range sh.purge.items {
			if sh.rec(it.slot).hpos != int32(j) {
				t.Fatalf("slot %d at heap index %d thinks it is at %d", it.slot, j, sh.rec(it.slot).hpos)
			}
		}
		top := sh.purge.items[0]
		if top.at < last {
			t.Fatalf("popped %d after %d", top.at, last)
		}
		last = top.at
		sh.purge.remove(0)
	}
}

// TestInexactThenExact: a record whose times had to be kept aside goes back
// to offsets once its times allow, and leaves nothing aside.
func TestInexactThenExact(t *testing.T) {
	base, tl := testBase, testTimeline()
	var sh shard
	sh.init()
	k := once.Key{ID: "k"}
	n := once.Record{Key: k, State: once.StateInProgress, Token: 1, Lease: time.Second, ExpiresAt: base.Add(time.Hour)}
	east := n
	east.CreatedAt = base.In(time.FixedZone("east", 3600))
	slot := sh.add(1, -1)
	sh.put(slot, &east, &tl, newPayload, true)
	if v := sh.view(slot, k, &tl); v.CreatedAt != east.CreatedAt || len(sh.inexact) != 1 {
		t.Fatalf("CreatedAt = %v, %d kept aside; want %v, 1", v.CreatedAt, len(sh.inexact), east.CreatedAt)
	}
	sh.put(slot, &n, &tl, keepPayload, false)
	if v := sh.view(slot, k, &tl); v.CreatedAt != n.CreatedAt || len(sh.inexact) != 0 {
		t.Fatalf("CreatedAt = %v, %d kept aside; want %v, 0", v.CreatedAt, len(sh.inexact), n.CreatedAt)
	}
}
