package diagnose

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func parseOne(t testing.TB, line string, entity ...string) *event {
	t.Helper()
	ev, ok := newLineParser(newClassifier(entity)).parse([]byte(line))
	if !ok {
		t.Fatalf("parse(%s) failed", line)
	}
	return ev
}

func TestParseLoggers(t *testing.T) {
	at := time.Date(2025, 4, 29, 10, 0, 15, 123_000_000, time.UTC).UnixNano()
	for _, tc := range []struct {
		logger, line string
	}{
		{"slog", `{"time":"2025-04-29T10:00:15.123Z","level":"INFO","msg":"charge requested","request_id":"r1","user":"u1","attempt":2}`},
		{"zap", `{"level":"info","ts":1745920815.123,"caller":"x.go:1","msg":"charge requested","requestId":"r1","user":"u1","retry_count":2}`},
		{"zerolog", `{"level":"info","request_id":"r1","user":"u1","attempt":"2","time":1745920815123,"message":"charge requested"}`},
		{"logrus", `{"level":"info","msg":"charge requested","req_id":"r1","user":"u1","retry":2,"time":"2025-04-29T12:00:15.123+02:00"}`},
		{"bunyan", `{"name":"api","hostname":"h","pid":1,"level":30,"msg":"charge requested","req_id":"r1","user":"u1","attempt":2,"time":"2025-04-29T10:00:15.123Z","v":0}`},
		{"ecs", `{"@timestamp":"2025-04-29T10:00:15.123Z","message":"charge requested","trace":{"id":"x"},"correlation_id":"r1","user":"u1","attempt":2}`},
		{"nested", `{"ts":1745920815123000000,"event":"charge requested","http":{"request_id":"r1"},"user":"u1","attempt":2}`},
	} {
		t.Run(tc.logger, func(t *testing.T) {
			ev := parseOne(t, tc.line)
			if ev.t != at || ev.msg != "charge requested" || ev.corr != "r1" || ev.attempt != 2 {
				t.Errorf("got t=%d msg=%q corr=%q attempt=%d, want t=%d", ev.t, ev.msg, ev.corr, ev.attempt, at)
			}
			if ev.entity() != "user=u1" {
				t.Errorf("entity = %q, want user=u1", ev.entity())
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	ev := parseOne(t, `{"msg":"x","request_id":"r","trace_id":"t","userId":"u","order_id":7,"span_id":"s","session_id":"z","password":"p","Idempotency-Key":"k","version":"12","level":"error"}`)
	if ev.corr != "r" {
		t.Errorf("corr = %q: request_id outranks trace_id", ev.corr)
	}
	if got := ev.entity(); got != "userId=u order_id=7" {
		t.Errorf("entities = %q", got)
	}
	if len(ev.keys) != 1 || ev.keys[0].Value != "k" || !ev.hasVer || ev.version != 12 || !ev.failed {
		t.Errorf("keys=%v version=%d/%v failed=%v", ev.keys, ev.version, ev.hasVer, ev.failed)
	}
	ev = parseOne(t, `{"msg":"x","user":"u","order_id":"o","product":"p"}`, "product")
	if ev.entity() != "product=p" {
		t.Errorf("--entity product: entities = %q", ev.entity())
	}
}

func TestParseEpoch(t *testing.T) {
	want := time.Date(2025, 4, 29, 10, 0, 15, 0, time.UTC).UnixNano()
	for _, s := range []string{"1745920815", "1745920815000", "1745920815000000", "1745920815000000000", "1745920815.000", "1.745920815e9"} {
		if got, ok := parseEpoch(s); !ok || got != want {
			t.Errorf("parseEpoch(%s) = %d, %v; want %d", s, got, ok, want)
		}
	}
	for _, s := range []string{"-1", "abc", "0", "1e400"} {
		if _, ok := parseEpoch(s); ok {
			t.Errorf("parseEpoch(%s) accepted", s)
		}
	}
}

func TestParseRejects(t *testing.T) {
	p := newLineParser(newClassifier(nil))
	for _, l := range []string{"", "plain text", "[1,2]", `"s"`, `{"a":1`, `{"a":1}x`, `{"a":01}`, `{"a":"\x01"}`, `{a:1}`, `{"a":tru}`, `{"a":1,}`} {
		if _, ok := p.parse([]byte(l)); ok {
			t.Errorf("parse(%q) accepted", l)
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{"userId": "user_id", "requestID": "request_id", "@timestamp": "at_timestamp",
		"http.method": "http_method", "X-Request-Id": "x_request_id", "user_id": "user_id", "HTTPStatus": "http_status"} {
		if got := normalize(in); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClassifyMsg(t *testing.T) {
	for msg, want := range map[string]msgKind{
		"stripe charge created":     kEffect,
		"charge skipped: duplicate": kNegative,
		"user lookup":               kRead | kCheck,
		"profile saved":             kWrite,
		"retrying charge":           kRetry,
		"stripe.chargeCreated":      kEffect,
	} {
		if got := classifyMsg(msg) &^ kApply; got&want != want {
			t.Errorf("classifyMsg(%q) = %b, want at least %b", msg, got, want)
		}
	}
}

// FuzzParseLine checks the scanner against encoding/json: it accepts exactly
// the JSON objects (up to its nesting limit) and reports the same top-level
// strings, and it never panics.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`{"time":"2025-04-29T10:00:15.123Z","level":"INFO","msg":"charge requested","request_id":"r1","user":"u1"}`,
		`{"ts":1745920815.123,"msg":"x","a":{"b":{"c":"d"}},"arr":[1,{"x":2},"s"],"n":null,"t":true}`,
		`{"msg":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/","user":"\u0000"}`,
		`{"time":1745920815123,"message":"m","version":"7","attempt":true}`,
		`{}`, `not json`, `{"a":-0.5e+10}`, "{\"a\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var sc scanner
		got := map[string]string{}
		err := sc.scanObject(line, func(name, val []byte, kind valueKind) {
			if kind == kindString && !strings.Contains(string(name), ".") {
				got[string(name)] = string(val)
			}
		})
		var m map[string]any
		jerr := json.Unmarshal(line, &m)
		if (err == nil) != (jerr == nil && m != nil) {
			if jerr == nil && strings.Count(string(line), "{")+strings.Count(string(line), "[") >= 60 {
				return // beyond the scanner's nesting limit
			}
			t.Fatalf("scanner err=%v, encoding/json err=%v for %q", err, jerr, line)
		}
		if err != nil {
			return
		}
		for k, v := range m {
			if s, ok := v.(string); ok && !strings.Contains(k, ".") && got[k] != s {
				// Duplicate names: encoding/json keeps the last, so does got.
				t.Fatalf("field %q: scanner %q, encoding/json %q", k, got[k], s)
			}
		}
		p := newLineParser(newClassifier(nil))
		p.parse(line)
	})
}

// FuzzRun feeds arbitrary logs through the whole pipeline: it must never
// panic, and must count every line.
func FuzzRun(f *testing.F) {
	for _, name := range []string{"charge-race.slog.jsonl", "job-retry.zerolog.jsonl", "subscription-stale.logrus.jsonl", "profile-lost-update.bunyan.jsonl"} {
		b, err := os.ReadFile(filepath.Join("testdata", "logs", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := Run(Config{Window: time.Second}, []Input{{Name: "f", R: bytes.NewReader(data)}})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		if rep.LinesSkipped > rep.LinesRead {
			t.Fatalf("skipped %d > read %d", rep.LinesSkipped, rep.LinesRead)
		}
	})
}
