package redisstore

import (
	"maps"
	"strings"
	"testing"
	"time"
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

func TestSlotHash(t *testing.T) {
	if slotHash("ab", "c") == slotHash("a", "bc") {
		t.Error("scope and id are not separated")
	}
	if h := slotHash("s", "}{"); strings.ContainsAny(h, "{}") || len(h) != 32 {
		t.Errorf("slotHash = %q", h)
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
