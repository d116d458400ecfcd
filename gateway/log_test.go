package gateway

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"
)

// The fast path writes exactly what slog.JSONHandler writes.
func TestLogHandlerMatchesJSONHandler(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.FixedZone("X", 3600))
	records := []struct {
		level slog.Level
		msg   string
		attrs []slog.Attr
	}{
		{slog.LevelInfo, "once request", []slog.Attr{
			slog.String("request_id", "5f0c2a8e"), slog.String("method", "POST"), slog.String("path", "/orders"),
			slog.String("scope", ""), slog.String("key", "8e03978e…"), slog.String("outcome", "executed"),
			slog.Int("status", 201), slog.Uint64("token", 1), slog.Uint64("attempt", 1),
			slog.Float64("duration_ms", 12.4), slog.Float64("upstream_ms", 0.001),
		}},
		{slog.LevelWarn, "quo\"te\\ <&> \u2028\u2029 \x00\x1f\t\n\r \xff é", []slog.Attr{
			slog.String("k\x01", "v\"\\\u2029\xfe"), slog.Bool("b", true), slog.Duration("d", 1500*time.Millisecond),
			slog.Int64("neg", -42), slog.Float64("zero", 0), slog.Float64("tiny", 1e-7), slog.Float64("huge", 1e21),
			slog.Float64("neg", -3.25), slog.Float64("big", 123456789.125), {}, slog.Int("", 0), slog.String("", ""),
		}},
		{slog.LevelError + 2, "", nil},
		// The general path: groups, errors, times, values of any kind.
		{slog.LevelInfo, "slow", []slog.Attr{slog.Group("g", slog.Int("a", 1)), slog.Any("err", errors.New("boom"))}},
		{slog.LevelInfo, "slow", []slog.Attr{slog.Time("t", at), slog.Any("m", map[string]int{"a": 1}), slog.Float64("nan", math.NaN())}},
	}
	for _, rc := range records {
		for _, tm := range []time.Time{at, {}} {
			r := slog.NewRecord(tm, rc.level, rc.msg, 0)
			r.AddAttrs(rc.attrs...)
			var want, got bytes.Buffer
			_ = slog.NewJSONHandler(&want, nil).Handle(context.Background(), r)
			_ = NewLogHandler(&got, nil).Handle(context.Background(), r)
			if got.String() != want.String() {
				t.Errorf("NewLogHandler wrote\n%s\nslog.JSONHandler\n%s", got.String(), want.String())
			}
		}
	}
}

func TestLogHandlerLevelAndDerived(t *testing.T) {
	var out bytes.Buffer
	l := slog.New(NewLogHandler(&out, slog.LevelWarn))
	l.Info("hidden")
	l.Warn("shown", "n", 1)
	l.With("svc", "once").WithGroup("g").Error("derived", "n", 2)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"msg":"shown","n":1}`) || !strings.Contains(lines[1], `"svc":"once","g":{"n":2}}`) {
		t.Fatalf("lines:\n%s", out.String())
	}
}

func BenchmarkLogHandler(b *testing.B) {
	attrs := []slog.Attr{
		slog.String("request_id", "5f0c2a8e9b7d4c1f8e3a6b2d9c0f1e7a"), slog.String("method", "POST"), slog.String("path", "/orders"),
		slog.String("scope", ""), slog.String("key", "8e03978e…"), slog.String("outcome", "executed"),
		slog.Int("status", 201), slog.Uint64("token", 1), slog.Uint64("attempt", 1),
		slog.Float64("duration_ms", 0.123), slog.Float64("upstream_ms", 0.1),
	}
	for _, c := range []struct {
		name string
		h    slog.Handler
	}{{"slog.JSONHandler", slog.NewJSONHandler(discard{}, nil)}, {"NewLogHandler", NewLogHandler(discard{}, nil)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "once request", 0)
				r.AddAttrs(attrs...)
				_ = c.h.Handle(context.Background(), r)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func FuzzLogHandler(f *testing.F) {
	f.Add("once request", "key", "8e03978e…", 12.4, int64(201))
	f.Add("\u2028\xff\"", "\x00", "\\", 1e-7, int64(-1))
	f.Fuzz(func(t *testing.T, msg, key, val string, fl float64, n int64) {
		r := slog.NewRecord(time.Unix(1700000000, 123456789).UTC(), slog.LevelInfo, msg, 0)
		r.AddAttrs(slog.String(key, val), slog.Float64(key, fl), slog.Int64(key, n), slog.Uint64(val, uint64(n)))
		var want, got bytes.Buffer
		_ = slog.NewJSONHandler(&want, nil).Handle(context.Background(), r)
		_ = NewLogHandler(&got, nil).Handle(context.Background(), r)
		if got.String() != want.String() {
			t.Fatalf("NewLogHandler wrote\n%q\nslog.JSONHandler\n%q", got.String(), want.String())
		}
	})
}
