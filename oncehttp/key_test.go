package oncehttp

import (
	"errors"
	"strings"
	"testing"

	"github.com/oncehq/once"
)

func TestParseKey(t *testing.T) {
	good := map[string]string{
		"abc":                                  "abc",
		`"abc"`:                                "abc",
		"  abc\t":                              "abc",
		`"a\"b\\c"`:                            `a"b\c`,
		`"abc";p=1`:                            "abc",
		`"abc";p;q="x";r=?1;s=:YQ==:`:          "abc",
		`"with space"`:                         "with space",
		"raw, with comma":                      "raw, with comma",
		strings.Repeat("k", 255):               strings.Repeat("k", 255),
		"8e03978e-40d5-43e8-bc93-6894a57f9324": "8e03978e-40d5-43e8-bc93-6894a57f9324",
	}
	for in, want := range good {
		got, err := ParseKey([]string{in})
		if err != nil || got != want {
			t.Errorf("ParseKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{"", "  ", `""`, `"abc`, `"a\b"`, `"abc" x`, `"a", "b"`, `"abc";`, `"abc";P=1`, `"abc";p=`,
		"a\x01b", "a\x7fb", "clé", strings.Repeat("k", 256), `"` + strings.Repeat("k", 256) + `"`, "\"a\x01\""}
	for _, in := range bad {
		if got, err := ParseKey([]string{in}); !errors.Is(err, once.ErrInvalidKey) {
			t.Errorf("ParseKey(%q) = %q, %v; want ErrInvalidKey", in, got, err)
		}
	}
	if _, err := ParseKey(nil); !errors.Is(err, ErrMissingKey) {
		t.Errorf("no header: %v, want ErrMissingKey", err)
	}
	if _, err := ParseKey([]string{"a", "a"}); !errors.Is(err, once.ErrInvalidKey) {
		t.Errorf("two headers: %v, want ErrInvalidKey", err)
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"abc", `"abc"`, `"a\"b";p=1`, `"abc";x=:YQ==:;y=?0`, `"a", "b"`, "", `"`, `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		key, err := ParseKey([]string{v})
		if err != nil {
			if !errors.Is(err, once.ErrInvalidKey) {
				t.Fatalf("ParseKey(%q): %v does not wrap ErrInvalidKey", v, err)
			}
			return
		}
		if err := once.ValidateID(key); err != nil {
			t.Fatalf("ParseKey(%q) = %q, which is not a valid ID: %v", v, key, err)
		}
		// A key re-encoded as an sf-string parses back to itself.
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
		if back, err := ParseKey([]string{quoted}); err != nil || back != key {
			t.Fatalf("sf-string %q of %q parsed as %q, %v", quoted, key, back, err)
		}
	})
}
