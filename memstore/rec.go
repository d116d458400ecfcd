package memstore

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/oncehq/once"
)

// rec is a record as a shard keeps it. Its only pointer is blob, which holds
// no pointers: a million records are a million small objects for the garbage
// collector to mark and nothing for it to scan, where a *once.Record (strings,
// slices, a metadata map, five *time.Location) is several objects to follow.
type rec struct {
	// blob holds the key's scope and ID, the fingerprint, the result's data
	// and its metadata as (uvarint length, bytes) pairs, in that order. The
	// bytes within its length are never modified, so views of it stay
	// valid; addResult may fill its spare capacity.
	blob     []byte
	token    uint64
	lease    int64
	times    [numTimes]int64 // offsets on the store's timeline, unless inexact
	hash     uint32          // the key's index hash
	next     int32           // next slot with the same hash, or the next free slot; -1 ends
	hpos     int32           // index of the slot's entry in the purge heap
	fpLen    uint32
	metaLen  uint32
	attempts uint32
	scopeLen uint16
	idLen    uint8
	state    once.State // 0 marks a free slot
	flags    uint8
}

// The record's times, in rec.times.
const (
	tLeaseExpires = iota
	tExpires
	tCreated
	tUpdated
	tCompleted
	numTimes
)

const (
	hasFingerprint = 1 << iota // nil and empty slices and maps stay apart
	hasData
	hasMeta
	inexact // times are in shard.inexact: the clock gave times offsets cannot reproduce
)

func (r *rec) key() (scope, id []byte) {
	n := int(r.scopeLen)
	return r.blob[:n], r.blob[n : n+int(r.idLen)]
}

func (r *rec) is(k once.Key) bool {
	scope, id := r.key()
	return string(id) == k.ID && string(scope) == k.Scope
}

// fingerprint, data and meta return views of the blob that cannot be
// appended to in place. The data's length is what the others leave, so it
// is not bounded by a field's size.
func (r *rec) fingerprint() []byte {
	return capped(r.blob, int(r.scopeLen)+int(r.idLen), int(r.fpLen))
}

func (r *rec) data() []byte {
	at := int(r.scopeLen) + int(r.idLen) + int(r.fpLen)
	return capped(r.blob, at, len(r.blob)-int(r.metaLen)-at)
}

func (r *rec) meta() []byte { return r.blob[len(r.blob)-int(r.metaLen):] }

func capped(b []byte, at, n int) []byte { return b[at : at+n : at+n] }

// smallPayload is the size up to which a payload is built on the stack.
const smallPayload = 128

// pack stores the payload of n (key, fingerprint, result) in a new blob,
// leaving room for reserve more bytes: the result that an in-progress
// record is likely to receive, which addResult then writes in place.
func (r *rec) pack(n *once.Record, reserve int) {
	fixed := len(n.Key.Scope) + len(n.Key.ID) + len(n.Fingerprint) + len(n.Result.Data)
	if fixed > smallPayload {
		size := fixed + reserve
		for k, v := range n.Result.Meta {
			size += 2*binary.MaxVarintLen64 + len(k) + len(v)
		}
		r.blob = appendResult(appendKey(make([]byte, 0, size), n), n.Result)
	} else {
		// Built on the stack and copied into a blob of the right size, so
		// that the metadata map is walked once.
		var scratch [2 * smallPayload]byte
		b := appendResult(appendKey(scratch[:0], n), n.Result)
		r.blob = append(make([]byte, 0, len(b)+reserve), b...)
	}
	r.setLens(n, len(r.blob)-fixed)
}

// addResult stores n's result after the key and fingerprint the blob holds
// already, in the blob's spare room if the result fits there (bytes past the
// blob's length, which no view can reach), else in a new blob.
func (r *rec) addResult(n *once.Record) {
	prefix := int(r.scopeLen) + int(r.idLen) + int(r.fpLen)
	if len(r.blob) != prefix || len(n.Result.Data) > smallPayload {
		r.pack(n, 0)
		return
	}
	var scratch [2 * smallPayload]byte
	res := appendResult(scratch[:0], n.Result)
	if len(res) > cap(r.blob)-len(r.blob) {
		r.pack(n, 0)
		return
	}
	r.blob = append(r.blob, res...)
	r.setLens(n, len(res)-len(n.Result.Data))
}

// setLens records the lengths of n's payload, whose metadata took meta bytes.
func (r *rec) setLens(n *once.Record, meta int) {
	if uint64(len(n.Fingerprint)) > math.MaxUint32 || uint64(meta) > math.MaxUint32 {
		panic("memstore: a fingerprint or metadata of 4 GiB or more")
	}
	r.scopeLen = uint16(len(n.Key.Scope))
	r.idLen = uint8(len(n.Key.ID))
	r.fpLen = uint32(len(n.Fingerprint))
	r.metaLen = uint32(meta)
	r.flags &^= hasFingerprint | hasData | hasMeta
	r.flags |= flagIf(n.Fingerprint != nil, hasFingerprint) | flagIf(n.Result.Data != nil, hasData) | flagIf(n.Result.Meta != nil, hasMeta)
}

func appendKey(b []byte, n *once.Record) []byte {
	b = append(b, n.Key.Scope...)
	b = append(b, n.Key.ID...)
	return append(b, n.Fingerprint...)
}

func appendResult(b []byte, res once.Result) []byte {
	b = append(b, res.Data...)
	for k, v := range res.Meta {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

// set stores the fixed-size fields of n. It reports false, storing nothing
// of the times, if they do not all have exact offsets on tl.
func (r *rec) set(n *once.Record, tl *timeline) (exact bool) {
	r.state = n.State
	r.token = n.Token
	r.attempts = n.Attempts
	r.lease = int64(n.Lease)
	var offs [numTimes]int64
	exact = true
	for i, t := range recordTimes(n) {
		var ok bool
		offs[i], ok = tl.offset(*t)
		exact = exact && ok
	}
	if !exact {
		r.flags |= inexact
		return false
	}
	r.times = offs
	r.flags &^= inexact
	return true
}

// view returns the record with key k. Its Fingerprint and Result.Data alias
// the blob (read-only); its Result.Meta is built afresh, so it belongs to
// whoever receives the record. times are the record's times if inexact.
func (r *rec) view(k once.Key, tl *timeline, times *[numTimes]time.Time) once.Record {
	v := once.Record{
		Key:      k,
		State:    r.state,
		Token:    r.token,
		Attempts: r.attempts,
		Lease:    time.Duration(r.lease),
	}
	if r.flags&hasFingerprint != 0 {
		v.Fingerprint = r.fingerprint()
	}
	if r.flags&hasData != 0 {
		v.Result.Data = r.data()
	}
	if r.flags&hasMeta != 0 {
		v.Result.Meta = unpackMeta(r.meta())
	}
	for i, t := range recordTimes(&v) {
		if times != nil {
			*t = times[i]
		} else {
			*t = tl.at(r.times[i])
		}
	}
	return v
}

// recordTimes returns n's times in the order of rec.times.
func recordTimes(n *once.Record) [numTimes]*time.Time {
	return [numTimes]*time.Time{&n.LeaseExpiresAt, &n.ExpiresAt, &n.CreatedAt, &n.UpdatedAt, &n.CompletedAt}
}

// unpackMeta decodes metadata into a new map whose strings share one new
// allocation, not the blob.
func unpackMeta(b []byte) map[string]string {
	s := string(b)
	m := make(map[string]string)
	for at := 0; at < len(b); {
		k, next := field(b, s, at)
		v, next := field(b, s, next)
		m[k] = v
		at = next
	}
	return m
}

// field reads the (uvarint length, bytes) pair at b[at:] and returns it as a
// substring of s, which holds the same bytes as b.
func field(b []byte, s string, at int) (string, int) {
	n, w := binary.Uvarint(b[at:])
	start := at + w
	return s[start : start+int(n)], start + int(n)
}

func flagIf(cond bool, f uint8) uint8 {
	if cond {
		return f
	}
	return 0
}
