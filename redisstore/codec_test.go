package redisstore

import (
	"encoding/binary"
	"errors"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []map[string]string{
		nil,
		{"": ""},
		{"status": "200", "content-type": "application/json"},
		{"bin\x00": "\xff\x00", strings.Repeat("k", 300): strings.Repeat("v", 70000)},
	} {
		enc := encodeMeta(m)
		got, err := decodeMeta(enc)
		if err != nil || !maps.Equal(got, m) {
			t.Errorf("decodeMeta(encodeMeta(%d keys)) = %d keys, %v", len(m), len(got), err)
		}
		if encodeMeta(maps.Clone(m)) != enc {
			t.Errorf("encoding of equal maps differs")
		}
	}
	if encodeMeta(map[string]string{}) != "" {
		t.Error("empty map does not encode like nil")
	}
}

func TestDecodeMetaRejects(t *testing.T) {
	for _, s := range []string{"\x05ab", "\x01a", "\x01a\x01", "\x80", "\x01a\x00\x01a\x00", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"} {
		if _, err := decodeMeta(s); err == nil {
			t.Errorf("decodeMeta(%q) accepted", s)
		}
	}
}

func TestMicros(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Nanosecond: "1", time.Microsecond: "1", 1001 * time.Nanosecond: "2",
		time.Second: "1000000", maxDuration * 2: micros(maxDuration),
	} {
		if got := micros(d); got != want {
			t.Errorf("micros(%v) = %s, want %s", d, got, want)
		}
	}
}

func TestHashKey(t *testing.T) {
	if hashKey("p:", 'r', "ab", "c") == hashKey("p:", 'r', "a", "bc") {
		t.Error("scope and id are not separated")
	}
	long := strings.Repeat("s", 1024)
	if hashKey("p:", 'r', long, "x") == hashKey("p:", 'r', long, "y") {
		t.Error("a long scope hides the id")
	}
	k := hashKey("p:", 'r', "s", "}{")
	if !strings.HasPrefix(k, "p:r{") || !strings.HasSuffix(k, "}") || strings.ContainsAny(k[4:len(k)-1], "{}") || len(k) != 4+32+1 {
		t.Errorf("hashKey = %q", k)
	}
}

// FuzzDecodeMeta: decoding never panics, and what decodes re-encodes to a
// canonical form that decodes to the same map.
func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []map[string]string{nil, {"a": "b"}, {"status": "201", "x": ""}} {
		f.Add(encodeMeta(m))
	}
	f.Add("\x05ab")
	f.Add("\x01a\x00\x01a\x00")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := decodeMeta(s)
		if err != nil {
			return
		}
		again, err := decodeMeta(encodeMeta(m))
		if err != nil || !maps.Equal(again, m) {
			t.Fatalf("re-encoding of %q changed it: %v", s, err)
		}
	})
}

// packRecord builds a record value the way the scripts do (see headerLen).
func packRecord(state, flags byte, nums [8]float64, fp, key, result string) string {
	b := []byte{state, flags}
	for _, n := range nums {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(n))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(fp)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(key)))
	return string(b) + fp + key + result
}

func TestDecodeRecord(t *testing.T) {
	k := once.Key{Scope: "s", ID: "id"}
	now := float64(time.Now().UnixMicro())
	result := once.Result{Data: []byte("body"), Meta: map[string]string{"status": "201"}}
	v := packRecord(2, 1, [8]float64{3, 2, 5e6, now + 5e6, now + 6e7, now - 1, now, now}, "fp", encodeKey(k), encodeResult(result))
	r, err := decodeRecord(k, v)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != once.StateCompleted || r.Token != 3 || r.Attempts != 2 || r.Lease != 5*time.Second || string(r.Fingerprint) != "fp" ||
		!r.Result.Equal(result) || r.LeaseExpiresAt != r.UpdatedAt.Add(5*time.Second) || r.CompletedAt != r.UpdatedAt {
		t.Fatalf("decoded %+v", r)
	}
	_, enc, _, err := splitRecord(v)
	if got, _ := decodeKey(enc); err != nil || got != k {
		t.Fatalf("key %v, %v", got, err)
	}
	for name, bad := range map[string]string{
		"short":       v[:headerLen-1],
		"lengths":     v[:len(v)-len(encodeResult(result))-1],
		"state":       packRecord(4, 0, [8]float64{1, 1, 1, 1, 1, 1, 1, 0}, "", "", ""),
		"token 0":     packRecord(1, 0, [8]float64{0, 1, 1, 1, 1, 1, 1, 0}, "", "", ""),
		"token frac":  packRecord(1, 0, [8]float64{1.5, 1, 1, 1, 1, 1, 1, 0}, "", "", ""),
		"attempts":    packRecord(1, 0, [8]float64{1, -1, 1, 1, 1, 1, 1, 0}, "", "", ""),
		"result":      packRecord(2, 0, [8]float64{1, 1, 1, 1, 1, 1, 1, 1}, "", "", "\x09ab"),
		"lease":       packRecord(1, 0, [8]float64{1, 1, -1, 1, 1, 1, 1, 0}, "", "", ""),
		"huge length": packRecord(1, 0, [8]float64{1, 1, 1, 1, 1, 1, 1, 0}, "", "", "")[:70] + "\xff\xff\xff\xff",
	} {
		if _, err := decodeRecord(k, bad); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: decodeRecord = %v, want errCorrupt", name, err)
		}
	}
}

// FuzzDecodeRecord: decoding never panics, and what decodes is a record a
// store could hold.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(packRecord(1, 0, [8]float64{1, 1, 1e6, 2e6, 3e6, 1e6, 1e6, 0}, "", "\x00id", ""))
	f.Add(packRecord(2, 1, [8]float64{7, 3, 1, 2, 3, 4, 5, 6}, "fp", "\x01sid", encodeResult(once.Result{Data: []byte("x")})))
	f.Fuzz(func(t *testing.T, v string) {
		r, err := decodeRecord(once.Key{ID: "x"}, v)
		if err != nil {
			return
		}
		if r.Token == 0 || r.State < once.StateInProgress || r.State > once.StateReleased || r.Lease < 0 {
			t.Fatalf("decoded an impossible record %+v", r)
		}
	})
}
