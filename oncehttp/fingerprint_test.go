package oncehttp

import (
	"bytes"
	"slices"
	"testing"
)

func TestFingerprint(t *testing.T) {
	base := Fingerprint("POST", "/orders", "a=1", "application/json", []byte(`{"b":[1,2],"a":"x"}`))
	if len(base) != FingerprintSize {
		t.Fatalf("size %d, want %d", len(base), FingerprintSize)
	}
	same := []struct {
		name, ct, body string
	}{
		{"reordered", "application/json; charset=utf-8", "{\n  \"a\": \"x\",\n  \"b\": [1, 2]\n}"},
		{"+json", "application/vnd.api+json", `{"a":"x","b":[1,2]}`},
		{"number spelling", "application/json", `{"a":"x","b":[1.0,2e0]}`},
	}
	for _, c := range same {
		if fp := Fingerprint("POST", "/orders", "a=1", c.ct, []byte(c.body)); !bytes.Equal(fp, base) {
			t.Errorf("%s: fingerprint differs in %v", c.name, Differs(base, fp))
		}
	}
	differs := []struct {
		fp   []byte
		want []string
	}{
		{Fingerprint("PATCH", "/orders", "a=1", "application/json", []byte(`{"a":"x","b":[1,2]}`)), []string{"method"}},
		{Fingerprint("POST", "/orders/", "a=1", "application/json", []byte(`{"a":"x","b":[1,2]}`)), []string{"path"}},
		{Fingerprint("POST", "/orders", "a=2", "application/json", []byte(`{"a":"x","b":[1,2]}`)), []string{"query"}},
		{Fingerprint("POST", "/orders", "a=1", "application/json", []byte(`{"a":"x","b":[2,1]}`)), []string{"body"}},
		{Fingerprint("POST", "/orders", "a=1", "text/plain", []byte(`{"b":[1,2],"a":"x"}`)), []string{"body"}},
		{Fingerprint("GET", "/", "", "", nil), []string{"method", "path", "query", "body"}},
		{[]byte("other"), []string{"request"}},
	}
	for _, c := range differs {
		if got := Differs(base, c.fp); !slices.Equal(got, c.want) {
			t.Errorf("Differs = %v, want %v", got, c.want)
		}
	}
	if d := Differs(base, base); d != nil {
		t.Errorf("Differs(x, x) = %v", d)
	}
	// Invalid JSON with a JSON type is hashed raw, not rejected.
	a := Fingerprint("POST", "/", "", "application/json", []byte(`{"a":`))
	b := Fingerprint("POST", "/", "", "application/json", []byte(`{"a": `))
	if slices.Equal(Differs(a, b), nil) {
		t.Error("raw-hashed invalid JSON bodies compare equal")
	}
}

func FuzzFingerprint(f *testing.F) {
	f.Add("POST", "/a", "q=1", "application/json", []byte(`{"b":1,"a":[true,null,"x"]}`))
	f.Add("POST", "/a", "", "text/plain", []byte("hello"))
	f.Add("PATCH", "/", "", "application/json", []byte(`{"a":1e400}`))
	f.Fuzz(func(t *testing.T, method, path, query, ct string, body []byte) {
		fp := Fingerprint(method, path, query, ct, body)
		if len(fp) != FingerprintSize {
			t.Fatalf("size %d", len(fp))
		}
		if !bytes.Equal(fp, Fingerprint(method, path, query, ct, body)) {
			t.Fatal("not deterministic")
		}
		other := Fingerprint(method+"X", path, query, ct, body)
		if d := Differs(fp, other); !slices.Equal(d, []string{"method"}) {
			t.Fatalf("changing the method differs in %v", d)
		}
	})
}
