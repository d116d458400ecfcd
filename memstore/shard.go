package memstore

import (
	"sync"
	"time"

	"github.com/oncehq/once"
)

// pageBits sets the size of the pages records are kept in: slices that never
// grow, so that a growing shard never copies its records.
const pageBits = 8

type versionKey struct{ scope, entity string }

// shard holds the records whose key hashes to it, under its own lock.
// Records live in slots; index finds a key's slot by 32 bits of the key's
// hash (the bits that did not pick the shard), which halves its size. Keys
// whose index hashes collide share a chain through rec.next.
type shard struct {
	mu       sync.Mutex
	index    map[uint32]int32 // index hash → first slot with that hash
	pages    [][]rec
	slots    int32 // slots ever used
	free     int32 // first free slot, -1 when none
	n        int   // records held
	purge    purgeHeap
	inexact  map[int32]*[numTimes]time.Time // times of the records flagged inexact
	reserve  int                            // the size of the latest result, up to maxReserve
	versions map[versionKey]uint64
}

func (sh *shard) init() {
	sh.index = make(map[uint32]int32)
	sh.free = -1
	sh.purge.sh = sh
	sh.inexact = make(map[int32]*[numTimes]time.Time)
	sh.versions = make(map[versionKey]uint64)
}

func (sh *shard) rec(slot int32) *rec {
	return &sh.pages[slot>>pageBits][slot&(1<<pageBits-1)]
}

// find returns the slot of key k, whose hash is h, or -1; and the first slot
// with hash h, or -1, for add.
func (sh *shard) find(k once.Key, h uint32) (slot, head int32) {
	head, ok := sh.index[h]
	if !ok {
		return -1, -1
	}
	for slot = head; slot >= 0; slot = sh.rec(slot).next {
		if sh.rec(slot).is(k) {
			return slot, head
		}
	}
	return -1, head
}

// add takes a free slot for a record with hash h, whose first slot find
// returned as head, and links it in first.
func (sh *shard) add(h uint32, head int32) int32 {
	slot := sh.free
	if slot >= 0 {
		sh.free = sh.rec(slot).next
	} else {
		if sh.slots&(1<<pageBits-1) == 0 {
			sh.pages = append(sh.pages, make([]rec, 1<<pageBits))
		}
		slot = sh.slots
		sh.slots++
	}
	r := sh.rec(slot)
	r.hash = h
	r.next = head
	sh.index[h] = slot
	sh.n++
	return slot
}

// remove forgets the record in slot and frees the slot.
func (sh *shard) remove(slot int32) {
	r := sh.rec(slot)
	if head := sh.index[r.hash]; head == slot {
		if r.next < 0 {
			delete(sh.index, r.hash)
		} else {
			sh.index[r.hash] = r.next
		}
	} else {
		prev := sh.rec(head)
		for prev.next != slot {
			prev = sh.rec(prev.next)
		}
		prev.next = r.next
	}
	sh.purge.remove(r.hpos)
	if r.flags&inexact != 0 {
		delete(sh.inexact, slot)
	}
	*r = rec{next: sh.free}
	sh.free = slot
	sh.n--
}

// What of a record's payload (key, fingerprint, result) a write changes.
type change uint8

const (
	keepPayload change = iota // Release, Extend, Delete
	newPayload                // Claim
	withResult                // Complete: a result after the same key and fingerprint
)

// maxReserve bounds the room left in an in-progress record's blob for its
// result.
const maxReserve = 128

// put stores n in slot, with the payload change c, and keeps the purge heap
// in order. fresh says the slot was just added.
func (sh *shard) put(slot int32, n *once.Record, tl *timeline, c change, fresh bool) {
	r := sh.rec(slot)
	switch c {
	case newPayload:
		r.pack(n, sh.reserve)
	case withResult:
		r.addResult(n)
		sh.reserve = min(len(r.blob)-int(r.scopeLen)-int(r.idLen)-int(r.fpLen), maxReserve)
	}
	var at int64
	wasInexact := r.flags&inexact != 0
	if r.set(n, tl) {
		if wasInexact {
			delete(sh.inexact, slot)
		}
		at = addSat(r.times[tExpires], r.lease)
	} else {
		var ts [numTimes]time.Time
		for i, t := range recordTimes(n) {
			ts[i] = *t
		}
		sh.inexact[slot] = &ts
		at, _ = tl.offset(n.PurgeAt())
	}
	if fresh {
		sh.purge.push(slot, at)
	} else if sh.purge.items[r.hpos].at != at {
		sh.purge.fix(r.hpos, at)
	}
}

// view returns the record in slot, with key k.
func (sh *shard) view(slot int32, k once.Key, tl *timeline) once.Record {
	r := sh.rec(slot)
	if r.flags&inexact != 0 {
		return r.view(k, tl, sh.inexact[slot])
	}
	return r.view(k, tl, nil)
}

// expiresAt returns the retention deadline of the record in slot.
func (sh *shard) expiresAt(slot int32, tl *timeline) time.Time {
	if r := sh.rec(slot); r.flags&inexact == 0 {
		return tl.at(r.times[tExpires])
	}
	return sh.inexact[slot][tExpires]
}

// purgeAt returns when the record in slot may be forgotten.
func (sh *shard) purgeAt(slot int32, tl *timeline) time.Time {
	return sh.expiresAt(slot, tl).Add(time.Duration(sh.rec(slot).lease))
}

// live returns copies of the live records of scope, read under the lock.
func (sh *shard) live(scope string, tl *timeline) []once.Record {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := tl.now()
	var out []once.Record
	for slot := range sh.slots {
		r := sh.rec(slot)
		if r.state == 0 || int(r.scopeLen) != len(scope) || string(r.blob[:r.scopeLen]) != scope {
			continue
		}
		if now.Before(sh.expiresAt(slot, tl)) {
			_, id := r.key()
			out = append(out, detach(sh.view(slot, once.Key{Scope: scope, ID: string(id)}, tl)))
		}
	}
	return out
}

// evict looks at no more than limit heap entries that are due at now and
// forgets their records. It returns how many it forgot. The heap orders
// records by their purge time's offset; the decision itself compares times,
// so that an offset that saturated (a purge time centuries away) or a clock
// whose times have no exact offsets only delays reclaiming, never hastens it.
func (sh *shard) evict(now time.Time, tl *timeline, limit int) int {
	nowOff, _ := tl.offset(now)
	n := 0
	for ; n < limit && len(sh.purge.items) > 0; n++ {
		top := sh.purge.items[0]
		if top.at > nowOff || now.Before(sh.purgeAt(top.slot, tl)) {
			break
		}
		sh.remove(top.slot)
	}
	return n
}

// purgeHeap is a min-heap of slots by purge time offset. Each slot in use
// has exactly one entry, whose index the slot's rec.hpos tracks, so that a
// record whose purge time moves is fixed in place rather than queued again.
type purgeHeap struct {
	sh    *shard
	items []purgeItem
}

type purgeItem struct {
	at   int64
	slot int32
}

func (h *purgeHeap) push(slot int32, at int64) {
	if len(h.items) == cap(h.items) {
		// Doubling, where append grows large slices by a quarter: a
		// growing store copies its heap half as often.
		h.items = append(make([]purgeItem, 0, max(2*cap(h.items), 64)), h.items...)
	}
	h.items = append(h.items, purgeItem{at: at, slot: slot})
	h.sh.rec(slot).hpos = int32(len(h.items) - 1)
	h.up(len(h.items) - 1)
}

func (h *purgeHeap) fix(i int32, at int64) {
	h.items[i].at = at
	if !h.down(int(i)) {
		h.up(int(i))
	}
}

func (h *purgeHeap) remove(i int32) {
	last := len(h.items) - 1
	if int(i) != last {
		h.swap(int(i), last)
	}
	h.items = h.items[:last]
	if int(i) != last && !h.down(int(i)) {
		h.up(int(i))
	}
}

func (h *purgeHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.sh.rec(h.items[i].slot).hpos = int32(i)
	h.sh.rec(h.items[j].slot).hpos = int32(j)
}

func (h *purgeHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if h.items[p].at <= h.items[i].at {
			return
		}
		h.swap(i, p)
		i = p
	}
}

// down moves entry i down to its place and reports whether it moved.
func (h *purgeHeap) down(i int) bool {
	start := i
	for {
		c := 2*i + 1
		if c >= len(h.items) {
			break
		}
		if r := c + 1; r < len(h.items) && h.items[r].at < h.items[c].at {
			c = r
		}
		if h.items[i].at <= h.items[c].at {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}
