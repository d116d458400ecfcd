package gateway

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	f, err := ParseConfig([]byte(`
upstream: http://127.0.0.1:3000
max_request_body: 2MiB
methods: [post, patch, put]
routes:
  /webhooks/github:
    key: header:X-GitHub-Delivery
    methods: POST
  /webhooks/stripe:
    key: json:/id
    ttl: 72h
    required: false
`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Settings["upstream"] != "http://127.0.0.1:3000" || f.Settings["max-request-body"] != "2MiB" || f.Settings["methods"] != "post,patch,put" {
		t.Fatalf("settings %v", f.Settings)
	}
	if len(f.Rules) != 2 {
		t.Fatalf("rules %+v", f.Rules)
	}
	gh, st := f.Rules[0], f.Rules[1]
	if gh.Prefix != "/webhooks/github" || gh.Key.String() != "header:X-Github-Delivery" || gh.Methods[0] != "POST" || gh.Required != nil {
		t.Errorf("github rule %+v", gh)
	}
	if st.Key.String() != "json:/id" || st.TTL != 72*time.Hour || st.Required == nil || *st.Required {
		t.Errorf("stripe rule %+v", st)
	}
	empty, err := ParseConfig(nil)
	if err != nil || len(empty.Rules) != 0 {
		t.Fatalf("empty file: %v %v", empty, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for doc, want := range map[string]string{
		"routes:\n  - path: /a\n    keey: header:X": "line 3: route field keey: unknown field",
		"routes:\n  - key: header:X":                "path prefix",
		"routes:\n  - path: /a\n    key: query:x":   "unknown kind",
		"routes:\n  - path: /a\n    ttl: forever":   "ttl",
		"routes:\n  - path: /a\n    ttl: -1h":       "positive",
		"routes:\n  - path: /a\n    required: 2":    "required",
		"routes:\n  - path: /a\n    methods: [P0]":  "letters only",
		"routes: 7":                              "list of routes",
		"- a\n- b":                               "mapping",
		"routes: [":                              "yaml",
		"routes:\n  - path: /a\n    key: {a: 1}": "want a value",
	} {
		_, err := ParseConfig([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig(%q) = %v, want an error containing %q", doc, err, want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("routes:\n  - path: /a\n    key: json:/id\n    ttl: 1h\n")
	f.Add("upstream: x\nroutes:\n  /b: {key: 'header:X', required: true}\n")
	f.Fuzz(func(t *testing.T, doc string) {
		cf, err := ParseConfig([]byte(doc))
		if err != nil {
			return
		}
		for _, r := range cf.Rules {
			if !strings.HasPrefix(r.Prefix, "/") || r.TTL < 0 {
				t.Fatalf("accepted rule %+v", r)
			}
		}
	})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1MiB": 1 << 20, "512KiB": 512 << 10, "1048576": 1 << 20, "1mb": 1_000_000, "2G": 2 << 30, "1.5KiB": 1536, " 10 B ": 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1XB", "-1", "1e3", "99999999999GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	for _, n := range []int64{1 << 20, 512 << 10, 1000, 3 << 30} {
		if back, _ := ParseSize(FormatSize(n)); back != n {
			t.Errorf("FormatSize(%d) = %q parses back to %d", n, FormatSize(n), back)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	f.Add("1MiB")
	f.Add("1.5 kb")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}
