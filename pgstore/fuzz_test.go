package pgstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/oncehq/once"
)

// FuzzPrefix: any prefix is either refused with ErrInvalidArgument or gives
// a schema whose placeholders are all filled and whose names are quoted.
func FuzzPrefix(f *testing.F) {
	for _, s := range []string{"", "once_", "app.once_", "a.", ".", "x-y", "1a", "\"; DROP TABLE x; --", "a.b.c", "É"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, prefix string) {
		ddl, err := Config{Prefix: prefix}.Schema()
		if err != nil {
			if !errors.Is(err, once.ErrInvalidArgument) {
				t.Fatalf("Schema(%q) = %v, want ErrInvalidArgument", prefix, err)
			}
			return
		}
		if strings.Contains(ddl, "{{") {
			t.Fatalf("Schema(%q) left a placeholder", prefix)
		}
		n, _ := parsePrefix(prefix)
		for _, q := range []string{n.records, n.versions, n.schemaVersion, n.purgeIndex} {
			if !strings.HasPrefix(q, `"`) || strings.Count(q, `"`)%2 != 0 || strings.ContainsAny(q, ";' \n") {
				t.Fatalf("Schema(%q): name %s is not a plain quoted identifier", prefix, q)
			}
		}
	})
}

// FuzzMeta: metadata is refused with ErrInvalidArgument or comes back
// equal from its stored form.
func FuzzMeta(f *testing.F) {
	f.Add("status", "201")
	f.Add("", "")
	f.Add("k\x00", "v")
	f.Add("k", "\xff")
	f.Add("ünï", "\"quoted\"\n\\")
	f.Fuzz(func(t *testing.T, k, v string) {
		m := map[string]string{k: v}
		enc, err := encodeMeta(m)
		if err != nil {
			if !errors.Is(err, once.ErrInvalidArgument) {
				t.Fatalf("encodeMeta(%q) = %v, want ErrInvalidArgument", m, err)
			}
			return
		}
		got, err := decodeMeta([]byte(enc.String))
		if err != nil || !(once.Result{Meta: got}).Equal(once.Result{Meta: m}) {
			t.Fatalf("decodeMeta(encodeMeta(%q)) = %q, %v", m, got, err)
		}
	})
}

// FuzzParseURL: ParseURL never panics and refuses with ErrInvalidArgument,
// without echoing a password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"postgres://u@h/db", "postgresql://u:pw@h:5432/db?sslmode=disable&pool_max_conns=3",
		"redis://h", "postgres://u:secretpw@h/db?pool_max_conns=x", "postgres://[::1", "", "postgres://u@h/db?connect_timeout=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		pc, err := ParseURL(raw)
		if err != nil {
			if !errors.Is(err, once.ErrInvalidArgument) {
				t.Fatalf("ParseURL(%q) = %v, want ErrInvalidArgument", raw, err)
			}
			if strings.Contains(raw, "secretpw") && strings.Contains(err.Error(), "secretpw") {
				t.Fatalf("ParseURL error shows the password: %v", err)
			}
			return
		}
		if pc.MaxConns <= 0 {
			t.Fatalf("ParseURL(%q).MaxConns = %d", raw, pc.MaxConns)
		}
	})
}
