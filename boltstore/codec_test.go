package boltstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// sampleRecords covers the shapes a record takes: fresh, completed with
// metadata, released, zero and extreme times, nil and empty slices and maps.
func sampleRecords() []*once.Record {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	return []*once.Record{
		{
			Key: once.Key{ID: "k"}, State: once.StateInProgress, Token: 1, Attempts: 1,
			Lease: time.Minute, LeaseExpiresAt: t0.Add(time.Minute), ExpiresAt: t0.Add(24 * time.Hour),
			CreatedAt: t0, UpdatedAt: t0,
		},
		{
			Key: once.Key{Scope: "tenant-1", ID: "order-42"}, Fingerprint: []byte{1, 2, 3},
			State: once.StateCompleted, Token: 7, Attempts: 3, Lease: time.Second,
			LeaseExpiresAt: t0, ExpiresAt: t0.Add(time.Hour), CreatedAt: t0.Add(-time.Hour),
			UpdatedAt: t0, CompletedAt: t0.Local(),
			Result: once.Result{Data: []byte("hello"), Meta: map[string]string{"status": "201", "b": "", "a": "x"}},
		},
		{
			Key: once.Key{Scope: "s", ID: "empty"}, Fingerprint: []byte{}, State: once.StateCompleted,
			Token: 1<<64 - 1, Attempts: 1<<32 - 1, Lease: -1,
			Result: once.Result{Data: []byte{}, Meta: map[string]string{}},
		},
		{
			Key: once.Key{ID: "far"}, State: once.StateReleased, Token: 2, Attempts: 2,
			Lease: 1<<63 - 1, LeaseExpiresAt: time.Unix(1<<62, 999999999).UTC(),
			ExpiresAt: time.Unix(-1<<62, 1), CreatedAt: time.Unix(0, 0), UpdatedAt: time.Unix(0, 0).UTC(),
		},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range sampleRecords() {
		b := appendRecord(nil, r)
		got, err := decodeRecord(b)
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	good := appendRecord(nil, sampleRecords()[1])
	cases := map[string][]byte{
		"empty":         nil,
		"short":         {1, 0},
		"format":        append([]byte{2}, good[1:]...),
		"flags":         append([]byte{1, 0x80}, good[2:]...),
		"state 0":       append([]byte{1, good[1], 0}, good[3:]...),
		"state 4":       append([]byte{1, good[1], 4}, good[3:]...),
		"truncated":     good[:len(good)-1],
		"trailing":      append(bytes.Clone(good), 0),
		"bad uvarint":   {1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"huge length":   append(good[:3:3], binary.AppendUvarint(nil, 1<<62)...),
		"nanos too big": timeWithNanos(2_000_000_000),
	}
	for name, b := range cases {
		if _, err := decodeRecord(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: err = %v, want errCorrupt", name, err)
		}
	}
}

// timeWithNanos is a record whose first time has the given nanoseconds.
func timeWithNanos(ns uint64) []byte {
	b := []byte{recordFormat, 0, byte(once.StateInProgress), 1, 1, 2}
	b = binary.AppendVarint(b, 0)
	return binary.AppendUvarint(b, ns<<1)
}

func TestDecodeRecordDuplicateMeta(t *testing.T) {
	r := &once.Record{Key: once.Key{ID: "k"}, State: once.StateCompleted, Result: once.Result{Meta: map[string]string{"a": "1"}}}
	b := appendRecord(nil, r)
	// Rewrite the one-entry map as two entries with the same key.
	i := len(b) - len("\x01a\x011") - 1
	b = append(b[:i], 2, 1, 'a', 1, '1', 1, 'a', 1, '2')
	if _, err := decodeRecord(b); !errors.Is(err, errCorrupt) {
		t.Fatalf("duplicate meta key: err = %v, want errCorrupt", err)
	}
}

func TestKeysDoNotCollide(t *testing.T) {
	pairs := [][2]string{{"a", "bc"}, {"ab", "c"}, {"", "abc"}, {"abc", ""}, {"\x01a", "b"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		k := string(appendKey(nil, p[0], p[1]))
		if q, dup := seen[k]; dup {
			t.Fatalf("%q and %q share key %q", p, q, k)
		}
		seen[k] = p
	}
}

func TestPurgeTimeOrder(t *testing.T) {
	times := []time.Time{
		time.Unix(-1<<40, 0), time.Time{}, time.Unix(-1<<35, 0), time.Unix(-1, 999999999), time.Unix(0, 0),
		time.Unix(0, 1), time.Unix(1700000000, 5), time.Unix(1<<40, 0),
	}
	for i := 1; i < len(times); i++ {
		a, b := appendPurgeTime(nil, times[i-1]), appendPurgeTime(nil, times[i])
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("purge time %v does not sort before %v", times[i-1], times[i])
		}
	}
}

// FuzzDecodeRecord checks that arbitrary bytes never panic the decoder, that
// whatever it accepts re-encodes to the same record, and that a record built
// from the input survives an encode/decode round trip exactly.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(appendRecord(nil, r))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := decodeRecord(data); err == nil {
			again, err := decodeRecord(appendRecord(nil, r))
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Fatalf("re-encoding %+v: got %+v, %v", r, again, err)
			}
		}
		r := recordFrom(data)
		got, err := decodeRecord(appendRecord(nil, r))
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip of %+v: got %+v, %v", r, got, err)
		}
	})
}

// recordFrom builds a record whose every field is drawn from data.
func recordFrom(data []byte) *once.Record {
	s := &entropy{b: data}
	r := &once.Record{
		Key:      once.Key{Scope: string(s.bytes()), ID: string(s.bytes())},
		State:    once.State(1 + s.u64()%3),
		Token:    s.u64(),
		Attempts: uint32(s.u64()),
		Lease:    time.Duration(s.u64()),
	}
	for _, p := range []*time.Time{&r.LeaseExpiresAt, &r.ExpiresAt, &r.CreatedAt, &r.UpdatedAt, &r.CompletedAt} {
		*p = s.time()
	}
	flags := s.u64()
	if flags&1 != 0 {
		r.Fingerprint = append([]byte{}, s.bytes()...)
	}
	if flags&2 != 0 {
		r.Result.Data = append([]byte{}, s.bytes()...)
	}
	if flags&4 != 0 {
		r.Result.Meta = map[string]string{}
		for range s.u64() % 4 {
			r.Result.Meta[string(s.bytes())] = string(s.bytes())
		}
	}
	return r
}

// entropy hands out the bytes of a fuzz input as values, zeros once spent.
type entropy struct{ b []byte }

func (e *entropy) u64() uint64 {
	var buf [8]byte
	n := copy(buf[:], e.b)
	e.b = e.b[n:]
	return binary.LittleEndian.Uint64(buf[:])
}

func (e *entropy) bytes() []byte {
	n := min(int(e.u64()%16), len(e.b))
	v := e.b[:n]
	e.b = e.b[n:]
	return v
}

func (e *entropy) time() time.Time {
	sel, sec, ns := e.u64(), int64(e.u64()), int64(e.u64()%1e9)
	switch sel % 3 {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(sec, ns).UTC()
	}
	return time.Unix(sec, ns)
}
