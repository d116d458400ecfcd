package race_test

import (
	"strings"
	"testing"

	"github.com/oncehq/once/race"
)

// FuzzParseHeader: any input is parsed or refused, and what is accepted
// round-trips through "Name: value".
func FuzzParseHeader(f *testing.F) {
	for _, s := range []string{"Content-Type: application/json", "X-A:", "Idempotency-Key: \"{{key}}\"", "bad", ": v", "a b: c", "A:\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := race.ParseHeader(s)
		if err != nil {
			return
		}
		again, err := race.ParseHeader(h.Name + ": " + h.Value)
		if err != nil || again != h {
			t.Fatalf("%q parsed as %+v, which reparses as %+v, %v", s, h, again, err)
		}
	})
}

// FuzzTemplate: checking and expanding never panic, text without "{{" is
// left alone, and an accepted template leaves no known name behind.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"{{round}}", `{"email":"{{uuid}}@x","i":{{i}}}`, "{{", "}}{{", "{{nope}}", "{{{{key}}}}", "{{ round }}", "{{n}}{{n}}"} {
		f.Add(s)
	}
	v := race.Vars{Round: 7, Key: "k-1", N: 50, UUID: "0f0e-uuid", I: 3}
	f.Fuzz(func(t *testing.T, s string) {
		err := race.CheckTemplate(s, true)
		out := race.Expand(s, v)
		if !strings.Contains(s, "{{") && out != s {
			t.Fatalf("Expand(%q) = %q, want it unchanged", s, out)
		}
		if err == nil && race.CheckTemplate(s, false) == nil && strings.Contains(s, "{{i}}") {
			t.Fatalf("%q: {{i}} accepted outside a request", s)
		}
		for _, name := range []string{"{{round}}", "{{key}}", "{{n}}", "{{uuid}}", "{{i}}"} {
			if err == nil && strings.Contains(out, name) && !strings.Contains(s, "{{"+name) {
				t.Fatalf("Expand(%q) = %q still holds %s", s, out, name)
			}
		}
	})
}
