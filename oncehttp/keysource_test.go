package oncehttp

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/oncehq/once"
)

func TestParseKeySource(t *testing.T) {
	for in, want := range map[string]string{
		"header:x-github-delivery": "header:X-Github-Delivery",
		"json:/id":                 "json:/id",
		"json:/data/object/id":     "json:/data/object/id",
		"json:":                    "json:",
	} {
		ks, err := ParseKeySource(in)
		if err != nil || ks.String() != want {
			t.Errorf("ParseKeySource(%q) = %v, %v; want %s", in, ks, err, want)
		}
	}
	for _, in := range []string{"", "header", "header:", "header:a b", "json:id", "json:/a~2", "query:x", "body:/id"} {
		if _, err := ParseKeySource(in); err == nil {
			t.Errorf("ParseKeySource(%q) accepted", in)
		}
	}
	if (KeySource{}).String() != "header:Idempotency-Key" {
		t.Error("zero KeySource is not the Idempotency-Key header")
	}
}

func TestLookupPointer(t *testing.T) {
	doc := []byte(`{"id":"evt_1","n":42,"a/b":"slash","m~n":"tilde","list":[{"id":"x"}],"obj":{},"":"empty"}`)
	for ptr, want := range map[string]string{
		"/id": "evt_1", "/n": "42", "/a~1b": "slash", "/m~0n": "tilde", "/list/0/id": "x", "/": "empty",
	} {
		got, err := lookupPointer(doc, ptr)
		if err != nil || got != want {
			t.Errorf("lookupPointer(%q) = %q, %v; want %q", ptr, got, err, want)
		}
	}
	for ptr, want := range map[string]error{
		"/missing": ErrMissingKey, "/list/1": ErrMissingKey, "/list/01": ErrMissingKey, "/id/x": ErrMissingKey,
		"/obj": once.ErrInvalidKey, "/list": once.ErrInvalidKey, "": once.ErrInvalidKey,
	} {
		if _, err := lookupPointer(doc, ptr); !errors.Is(err, want) {
			t.Errorf("lookupPointer(%q): %v, want %v", ptr, err, want)
		}
	}
	if _, err := lookupPointer([]byte("not json"), "/id"); !errors.Is(err, ErrMissingKey) {
		t.Errorf("non-JSON body: %v", err)
	}
}

// A number names one key however it is spelled, and keeps every digit.
func TestNumberKey(t *testing.T) {
	for in, want := range map[string]string{
		"7": "7", "7.0": "7", "7e0": "7", "70e-1": "7", "0.7E1": "7", "-0": "0", "-0.0": "0",
		"7.50": "7.5", "1.5e-3": "0.0015", "1E2": "100", "-12.250": "-12.25",
		"12345678901234567890123": "12345678901234567890123",
		"12345678901234567890124": "12345678901234567890124",
	} {
		got, err := numberKey(json.Number(in))
		if err != nil || got != want {
			t.Errorf("numberKey(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"1e999999999", "1e-300", "1e256"} {
		if got, err := numberKey(json.Number(in)); !errors.Is(err, once.ErrInvalidKey) {
			t.Errorf("numberKey(%s) = %q, %v; want ErrInvalidKey", in, got, err)
		}
	}
}

func FuzzKeySource(f *testing.F) {
	f.Add("json:/id", []byte(`{"id":"a"}`))
	f.Add("json:/a/0/~1", []byte(`{"a":[{"/":7}]}`))
	f.Add("header:X-Key", []byte(``))
	f.Fuzz(func(t *testing.T, src string, body []byte) {
		ks, err := ParseKeySource(src)
		if err != nil {
			return
		}
		if back, err := ParseKeySource(ks.String()); err != nil || back.String() != ks.String() {
			t.Fatalf("%q round-trips to %q, %v", ks.String(), back.String(), err)
		}
		if !ks.needsBody() {
			return
		}
		key, err := ks.fromBody(body)
		if err == nil {
			if once.ValidateID(key) != nil {
				t.Fatalf("invalid key %q accepted", key)
			}
		} else if !errors.Is(err, ErrMissingKey) && !errors.Is(err, once.ErrInvalidKey) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}
