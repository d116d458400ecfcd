package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once/race/racetest"
)

// runRace runs "once race args..." in-process with stdin, returning stdout,
// stderr and the exit code.
func runRace(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	code := m.exitCode(m.Run(context.Background(), append([]string{"race"}, args...)))
	return out.String(), errb.String(), code
}

// racyServer is seed 000's user-creation endpoint (check-then-insert). After
// each request it writes the number of users with the request's email to
// dir/EMAIL, so that a --check can count rows the way psql would.
func racyServer(t *testing.T, dir string) *httptest.Server {
	users := racetest.NewUsers(time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		users.ServeHTTP(w, r)
		var in struct{ Email string }
		if json.Unmarshal(body, &in) == nil && dir != "" && !strings.ContainsAny(in.Email, `/\`) {
			os.WriteFile(filepath.Join(dir, in.Email), fmt.Appendf(nil, "%d\n", users.Count(in.Email)), 0o644)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// behindGateway puts the once gateway in front of upstream.
func behindGateway(t *testing.T, upstream *httptest.Server) *httptest.Server {
	u, _ := url.Parse(upstream.URL)
	srv := httptest.NewServer(newTestGateway(t, u))
	t.Cleanup(srv.Close)
	return srv
}

const usersBody = `{"email":"{{uuid}}@example.com"}`

func TestRaceRacyServerBreaks(t *testing.T) {
	srv := racyServer(t, "")
	out, errs, code := runRace(t, "", "-n", "20", "--rounds", "3", "-d", usersBody, srv.URL+"/users")
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, want := range []string{
		"round 1/3", "broken: ", "different 2xx answers to one Idempotency-Key",
		"3 of 3 rounds broke the invariant (flake rate 100.0%); 60 requests",
		"first broken round: 1 (key ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	// The duplicates are named: two created users with one email.
	created := regexp.MustCompile(`(?m)^  201 ×\d+  \{"id":\d+,"email":"([0-9a-f-]+@example.com)"\}$`).FindAllStringSubmatch(out, -1)
	if len(created) < 2 || created[0][1] != created[1][1] {
		t.Errorf("stdout does not list two created users with one email:\n%s", out)
	}
}

func TestRaceBehindGatewayHolds(t *testing.T) {
	srv := behindGateway(t, racyServer(t, ""))
	out, errs, code := runRace(t, "", srv.URL+"/users", "-n", "20", "--rounds", "3", "-d", usersBody)
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	if !strings.Contains(out, "0 of 3 rounds broke the invariant (flake rate 0.0%)") || strings.Contains(out, "broken") {
		t.Errorf("stdout:\n%s", out)
	}
	if !regexp.MustCompile(`round 1/3  201×20  2xx bodies 1  replayed 19  held`).MatchString(out) {
		t.Errorf("round line not as expected:\n%s", out)
	}
}

func TestRaceCheck(t *testing.T) {
	dir := t.TempDir()
	racy := racyServer(t, dir)
	check := fmt.Sprintf(`cat %q/{{uuid}}@example.com`, dir)
	args := []string{"-n", "10", "--rounds", "2", "-d", usersBody, "--check", check, "--expect", "1"}

	out, errs, code := runRace(t, "", append(args, racy.URL)...)
	if code != 1 || !strings.Contains(out, `check gave "`) || !strings.Contains(out, `want "1"`) {
		t.Errorf("racy: exit %d, want 1 and the check's values\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	out, errs, code = runRace(t, "", append(args, behindGateway(t, racy).URL)...)
	if code != 0 || strings.Count(out, `check "1"  held`) != 2 {
		t.Errorf("behind the gateway: exit %d, want 0 and two held checks\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
}

func TestRaceCheckCannotRun(t *testing.T) {
	srv := racyServer(t, "")
	_, errs, code := runRace(t, "", "-n", "2", "-d", usersBody, "--check", "exit 7", "--expect", "1", srv.URL)
	if code != 2 || !strings.Contains(errs, "round 1: check failed: exit status 7") {
		t.Errorf("exit %d, stderr %q; want 2 naming the failed check", code, errs)
	}
}

func TestRaceJSON(t *testing.T) {
	schema := loadSchema(t, "testdata/race-report.schema.json")
	racy := racyServer(t, "")
	for _, tc := range []struct {
		name   string
		url    string
		code   int
		failed int
	}{
		{"racy", racy.URL, 1, 2},
		{"gateway", behindGateway(t, racy).URL, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errs, code := runRace(t, "", "--format", "json", "-n", "8", "--rounds", "2", "-d", usersBody, tc.url)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.code, errs)
			}
			var doc any
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("stdout is not one JSON document: %v\n%s", err, out)
			}
			schema.validate(t, "$", doc)
			var rep struct {
				Rounds  int `json:"rounds"`
				Failed  int `json:"rounds_failed"`
				Details []struct {
					Answers []any `json:"answers"`
				} `json:"round_details"`
			}
			json.Unmarshal([]byte(out), &rep)
			if rep.Rounds != 2 || rep.Failed != tc.failed || len(rep.Details) != 2 || len(rep.Details[0].Answers) == 0 {
				t.Errorf("report: %+v", rep)
			}
		})
	}
}

func TestRaceFlagsAndBody(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Header.Get("X-Round")+" "+r.Header.Get("Idempotency-Key")+" "+string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "body")
	os.WriteFile(file, []byte("from file {{round}}"), 0o644)
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{srv.URL, "-n", "3", "--rounds", "1", "-X", "PUT", "-H", "X-Round: r{{round}}", "--key", "none", "-d", "@" + file}, "PUT r1  from file 1"},
		{"from stdin", []string{"-n=3", "--rounds=1", "--key=none", "-d", "@-", "--", srv.URL}, "POST   from stdin"},
	} {
		seen = nil
		_, errs, code := runRace(t, tc.stdin, tc.args...)
		if code != 0 || len(seen) != 3 || seen[0] != tc.want {
			t.Errorf("%q: exit %d (stderr %q), requests %q; want 3 × %q", tc.args, code, errs, seen, tc.want)
		}
		if !strings.Contains(errs, "--key none and no --check, rounds are not judged") {
			t.Errorf("%q: no warning that rounds are not judged: %q", tc.args, errs)
		}
	}
}

func TestRaceUsageErrors(t *testing.T) {
	body := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "want exactly one URL, got 0"},
		{[]string{"http://a", "http://b"}, "want exactly one URL, got 2"},
		{[]string{"-n", "10001", "http://a"}, "-n 10001: must be 1 to 10000"},
		{[]string{"-n", "0", "http://a"}, "-n 0"},
		{[]string{"--rounds", "0", "http://a"}, "--rounds 0"},
		{[]string{"--key", "each", "http://a"}, `--key "each" is not same, unique or none`},
		{[]string{"--format", "xml", "http://a"}, `--format "xml"`},
		{[]string{"--timeout", "0s", "http://a"}, "--timeout 0s"},
		{[]string{"--check", "true", "http://a"}, "--check and --expect go together"},
		{[]string{"--expect", "1", "http://a"}, "--check and --expect go together"},
		{[]string{"--check", "echo {{i}}", "--expect", "1", "http://a"}, "--check: {{i}}"},
		{[]string{"-d", "@" + body, "http://a"}, "-d open " + body},
		{[]string{"-d", "{{bogus}}", "http://a"}, "-d: unknown template {{bogus}}"},
		{[]string{"-H", "nocolon", "http://a"}, `invalid value "nocolon" for flag -H`},
		{[]string{"ftp://a"}, "scheme must be http or https"},
		{[]string{"http://{{uuid}}/"}, "templates are allowed in the path and query only"},
		{[]string{"-X", "A B", "http://a"}, `-X "A B"`},
		{[]string{"--spread", "-1s", "http://a"}, "--spread -1s"},
		{[]string{"--nope", "http://a"}, "flag provided but not defined: -nope"},
	} {
		out, errs, code := runRace(t, "", tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || out != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tc.args, code, out, errs, tc.want)
		}
	}
}

func TestRaceConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, format := range []string{"text", "json"} {
		out, errs, code := runRace(t, "", "--format", format, "http://"+addr+"/users")
		if code != 2 || !strings.Contains(errs, "round 1: cannot reach "+addr) || !strings.Contains(errs, "connection refused") {
			t.Errorf("%s: exit %d, stderr %q; want 2 naming %s and the refusal", format, code, errs, addr)
		}
		if format == "json" && !strings.Contains(out, `"error": "round 1: cannot reach`) {
			t.Errorf("json: the report does not carry the error:\n%s", out)
		}
	}
}

func TestRaceHelp(t *testing.T) {
	_, errs, code := runRace(t, "", "-h")
	for _, want := range []string{"Usage: once race [flags] URL", "{{round}}", "-spread DURATION", "Exit status: 0 every round held"} {
		if !strings.Contains(errs, want) {
			t.Errorf("help lacks %q:\n%s", want, errs)
		}
	}
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// jsonSchema is the subset of JSON Schema that race-report.schema.json uses:
// type, required, properties, additionalProperties, items, enum and $ref to
// #/$defs. It keeps the test free of a schema library.
type jsonSchema struct {
	Type       string                 `json:"type"`
	Required   []string               `json:"required"`
	Properties map[string]*jsonSchema `json:"properties"`
	Additional json.RawMessage        `json:"additionalProperties"`
	Items      *jsonSchema            `json:"items"`
	Enum       []string               `json:"enum"`
	Ref        string                 `json:"$ref"`
	Defs       map[string]*jsonSchema `json:"$defs"`

	root *jsonSchema
}

func loadSchema(t *testing.T, path string) *jsonSchema {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s jsonSchema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	s.root = &s
	return &s
}

func (s *jsonSchema) validate(t *testing.T, at string, v any) {
	t.Helper()
	if s.Ref != "" {
		def := s.root.Defs[strings.TrimPrefix(s.Ref, "#/$defs/")]
		if def == nil {
			t.Fatalf("%s: unknown $ref %s", at, s.Ref)
		}
		def.root = s.root
		def.validate(t, at, v)
		return
	}
	if !s.hasType(v) {
		t.Errorf("%s: %v (%T) is not of type %s", at, v, v, s.Type)
		return
	}
	if len(s.Enum) > 0 && !contains(s.Enum, fmt.Sprint(v)) {
		t.Errorf("%s: %v is not one of %q", at, v, s.Enum)
	}
	switch v := v.(type) {
	case map[string]any:
		s.validateObject(t, at, v)
	case []any:
		for i, item := range v {
			s.child(s.Items).validate(t, fmt.Sprintf("%s[%d]", at, i), item)
		}
	}
}

func (s *jsonSchema) validateObject(t *testing.T, at string, obj map[string]any) {
	t.Helper()
	for _, name := range s.Required {
		if _, ok := obj[name]; !ok {
			t.Errorf("%s: required %q missing", at, name)
		}
	}
	var extra *jsonSchema
	if len(s.Additional) > 0 && string(s.Additional) != "false" {
		json.Unmarshal(s.Additional, &extra)
	}
	for name, v := range obj {
		p := s.Properties[name]
		switch {
		case p != nil:
			s.child(p).validate(t, at+"."+name, v)
		case extra != nil:
			s.child(extra).validate(t, at+"."+name, v)
		case string(s.Additional) == "false":
			t.Errorf("%s: unexpected property %q", at, name)
		}
	}
}

func (s *jsonSchema) child(c *jsonSchema) *jsonSchema {
	if c == nil {
		return &jsonSchema{root: s.root}
	}
	c.root = s.root
	return c
}

func (s *jsonSchema) hasType(v any) bool {
	switch s.Type {
	case "":
		return true
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "number", "integer":
		f, ok := v.(float64)
		return ok && (s.Type == "number" || f == float64(int64(f)))
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
