package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/oncehq/once"
)

// recordFormat is the first byte of every stored record. A decoder meeting
// another value refuses the record instead of guessing at its layout.
const recordFormat = 1

// Flag bits of a stored record. They keep nil apart from empty, so that a
// record reads back exactly as it was written.
const (
	flagFingerprint = 1 << iota // Fingerprint is non-nil
	flagData                    // Result.Data is non-nil
	flagMeta                    // Result.Meta is non-nil
	flagMask        = flagFingerprint | flagData | flagMeta
)

// unixToInternal is the number of seconds from year 1 to 1970. Times are
// stored as seconds since year 1 so that the zero time.Time costs two bytes.
const unixToInternal int64 = 62135596800

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("boltstore: corrupt record")

// appendRecord appends the encoding of r to dst:
//
//	format byte (1) | flags byte | state byte
//	uvarint token | uvarint attempts | varint lease (ns)
//	time leaseExpiresAt, expiresAt, createdAt, updatedAt, completedAt
//	bytes scope | bytes id | [bytes fingerprint] | [bytes data]
//	[uvarint meta count, then bytes key, bytes value per entry, keys sorted]
//
// where bytes is a uvarint length followed by the bytes, the bracketed parts
// are present only when their flag is set, and a time is a varint of seconds
// since year 1 followed by a uvarint of nanoseconds<<1 | 1 if the time is UTC.
func appendRecord(dst []byte, r *once.Record) []byte {
	var flags byte
	if r.Fingerprint != nil {
		flags |= flagFingerprint
	}
	if r.Result.Data != nil {
		flags |= flagData
	}
	if r.Result.Meta != nil {
		flags |= flagMeta
	}
	dst = append(dst, recordFormat, flags, byte(r.State))
	dst = binary.AppendUvarint(dst, r.Token)
	dst = binary.AppendUvarint(dst, uint64(r.Attempts))
	dst = binary.AppendVarint(dst, int64(r.Lease))
	for _, t := range [...]time.Time{r.LeaseExpiresAt, r.ExpiresAt, r.CreatedAt, r.UpdatedAt, r.CompletedAt} {
		dst = appendTime(dst, t)
	}
	dst = appendString(dst, r.Key.Scope)
	dst = appendString(dst, r.Key.ID)
	if r.Fingerprint != nil {
		dst = appendBytes(dst, r.Fingerprint)
	}
	if r.Result.Data != nil {
		dst = appendBytes(dst, r.Result.Data)
	}
	if r.Result.Meta != nil {
		dst = appendMeta(dst, r.Result.Meta)
	}
	return dst
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = binary.AppendVarint(dst, t.Unix()+unixToInternal)
	ns := uint64(t.Nanosecond()) << 1
	if t.Location() == time.UTC {
		ns |= 1
	}
	return binary.AppendUvarint(dst, ns)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// appendMeta writes the entries in key order so that equal maps encode to
// equal bytes.
func appendMeta(dst []byte, m map[string]string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(m)))
	if len(m) == 1 {
		for k, v := range m {
			return appendString(appendString(dst, k), v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		dst = appendString(appendString(dst, k), m[k])
	}
	return dst
}

// decodeRecord decodes what appendRecord wrote. It copies everything it
// returns out of b (bolt's memory is only valid inside its transaction) and
// returns an error wrapping errCorrupt for anything else, trailing bytes
// included.
func decodeRecord(b []byte) (*once.Record, error) {
	d := decoder{b: b}
	r := d.record()
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// decoder reads fields in order; after the first error every read returns
// a zero value and the error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errCorrupt}, args...)...)
	}
	d.b = nil
}

func (d *decoder) record() *once.Record {
	if len(d.b) < 3 {
		d.fail("%d bytes, too short", len(d.b))
		return nil
	}
	format, flags, state := d.b[0], d.b[1], once.State(d.b[2])
	d.b = d.b[3:]
	switch {
	case format != recordFormat:
		d.fail("format %d, want %d", format, recordFormat)
	case flags&^flagMask != 0:
		d.fail("unknown flags 0x%02x", flags)
	case state < once.StateInProgress || state > once.StateReleased:
		d.fail("unknown state %d", state)
	}
	r := &once.Record{State: state}
	r.Token = d.uvarint()
	r.Attempts = uint32(d.uvarintMax(math.MaxUint32, "attempts"))
	r.Lease = time.Duration(d.varint())
	r.LeaseExpiresAt = d.time()
	r.ExpiresAt = d.time()
	r.CreatedAt = d.time()
	r.UpdatedAt = d.time()
	r.CompletedAt = d.time()
	r.Key.Scope = string(d.bytes())
	r.Key.ID = string(d.bytes())
	if flags&flagFingerprint != 0 {
		r.Fingerprint = d.clone()
	}
	if flags&flagData != 0 {
		r.Result.Data = d.clone()
	}
	if flags&flagMeta != 0 {
		r.Result.Meta = d.meta()
	}
	return r
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarintMax(limit uint64, what string) uint64 {
	v := d.uvarint()
	if v > limit {
		d.fail("%s %d out of range", what, v)
		return 0
	}
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	ns := d.uvarintMax(999_999_999<<1|1, "nanoseconds")
	if d.err != nil {
		return time.Time{}
	}
	t := time.Unix(sec-unixToInternal, int64(ns>>1))
	if ns&1 != 0 {
		t = t.UTC()
	}
	return t
}

// bytes returns the next length-prefixed field without copying it.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("field of %d bytes, %d left", n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// clone returns a copy of the next length-prefixed field, non-nil even when
// empty (the caller only calls it when the field's flag says non-nil).
func (d *decoder) clone() []byte {
	v := d.bytes()
	if d.err != nil {
		return nil
	}
	return append([]byte{}, v...)
}

func (d *decoder) meta() map[string]string {
	// Each entry takes at least two bytes, which bounds the map's size hint
	// by the input rather than by a count read from it.
	n := d.uvarintMax(uint64(len(d.b)/2), "meta count")
	if d.err != nil {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		k, v := string(d.bytes()), string(d.bytes())
		if d.err != nil {
			return nil
		}
		if _, dup := m[k]; dup {
			d.fail("duplicate meta key")
			return nil
		}
		m[k] = v
	}
	return m
}

// appendKey appends the bolt key of (scope, id): both length-prefixed, so
// that no two pairs share a key.
func appendKey(dst []byte, scope, id string) []byte {
	return appendString(appendString(dst, scope), id)
}

// purgeTimeLen is the length of the time prefix of a purge index key.
const purgeTimeLen = 12

// appendPurgeTime appends t as 12 bytes that sort in time order: seconds
// since 1970 with the sign bit flipped, then nanoseconds, both big-endian.
// Unlike UnixNano this covers every time a record can hold, whatever
// retention a caller asks for.
func appendPurgeTime(dst []byte, t time.Time) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(dst, uint32(t.Nanosecond()))
}

// appendPurgeKey appends the purge index key of the record under the bolt
// key key that is purged at t: t, then key.
func appendPurgeKey[K string | []byte](dst []byte, t time.Time, key K) []byte {
	return append(appendPurgeTime(dst, t), key...)
}

// purgeTimeOf decodes only what the purge time of the stored record v
// depends on (Record.PurgeAt: expiry plus lease), for the purge index.
func purgeTimeOf(v []byte) (time.Time, error) {
	d := decoder{b: v}
	if len(v) < 3 || v[0] != recordFormat {
		d.fail("no record header")
		return time.Time{}, d.err
	}
	d.b = v[3:]
	d.uvarint() // token
	d.uvarint() // attempts
	lease := time.Duration(d.varint())
	d.time() // lease expiry
	expires := d.time()
	return expires.Add(lease), d.err
}
