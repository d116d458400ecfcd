package oncehttp

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

// canonicalCases are documents whose canonical form the canonicalizer must
// write as jcs does.
var canonicalCases = []string{
	`{"item":"book","qty":1}`,
	`{ "qty": 1, "item": "book" }`,
	"{\n  \"b\": [1, 2.50, -0, 1e3, 1E-7, 123456789012345678, 0.1],\n  \"a\": {\"z\": null, \"y\": [true, false, {}], \"x\": []}\n}",
	`{"\u00e9":1,"e":2,"\ud83d\ude00":3,"\uffff":4,"a\"b":5,"a\\b":6,"a\/b":7}`,
	`["\u0000\u001f\b\f\n\r\t","é😀","\u2028","\u007f"]`,
	`"top"`, `12`, `-0`, `true`, ` null `,
	`{"a":{"c":1,"b":2},"A":[{"y":1,"x":2}]}`,
	`[1.0, 2e0, 100, 1e21, 1e-6, 1e-7, 9007199254740993, 999999999999999, -999999999999999]`,
}

func TestCanonicalizerAgreesWithJCS(t *testing.T) {
	var c canonicalizer
	for _, doc := range canonicalCases {
		want, err := jcs.Transform([]byte(doc))
		if err != nil {
			t.Fatalf("jcs refuses %s: %v", doc, err)
		}
		got, ok := c.canonicalize([]byte(doc))
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("canonicalize(%s) = %s, %v; jcs: %s", doc, got, ok, want)
		}
	}
	// Refused: left to jcs (which refuses them too, or may accept them).
	for _, doc := range []string{``, `{`, `{"a":1,}`, `[1,]`, `{"a":1,"a":2}`, `{"a" 1}`, `01`, `1.`, `.5`, `+1`, `1e400`,
		`"\ud800"`, `"\udc00\ud800"`, "\"\x01\"", "\"\xff\"", `"\x"`, `[1 2]`, `tru`, `{"a":1}x`, strings.Repeat("[", 65) + strings.Repeat("]", 65)} {
		if got, ok := c.canonicalize([]byte(doc)); ok {
			t.Errorf("canonicalize(%q) = %s, want it refused", doc, got)
		}
	}
}

// FuzzCanonical checks that a body's canonical hash is the one jcs gives (or
// the raw body's hash where jcs refuses it), whichever canonicalizer answers.
func FuzzCanonical(f *testing.F) {
	for _, doc := range canonicalCases {
		f.Add([]byte(doc))
	}
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		want := sha256.Sum256(doc)
		if out, err := jcs.Transform(doc); err == nil {
			want = sha256.Sum256(out)
		}
		if got := canonicalSum(doc); got != want {
			var c canonicalizer
			out, ok := c.canonicalize(doc)
			ref, err := jcs.Transform(doc)
			t.Fatalf("%q: canonicalize = %q, %v; jcs = %q, %v", doc, out, ok, ref, err)
		}
	})
}

func BenchmarkCanonical(b *testing.B) {
	body := []byte(`{"qty":1,"item":"book","price":9.99,"tags":["a","b"],"customer":{"name":"Ann","id":"c_1"}}`)
	b.Run("jcs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := jcs.Transform(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("canonicalSum", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			canonicalSum(body)
		}
	})
}
