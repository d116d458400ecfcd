package memstore

import (
	"math"
	"testing"
	"time"
)

// testBase is where the timelines of these tests start: a time with
// nanoseconds, in UTC.
var testBase = time.Date(2031, 3, 4, 5, 6, 7, 8, time.UTC)

func testTimeline() timeline { return newBase(timeline{}, testBase) }

// TestTimelineExact: an offset reported exact gives back the very same
// time.Time (==, not just Equal); any other time is reported inexact.
func TestTimelineExact(t *testing.T) {
	base, tl := testBase, testTimeline()
	tests := []struct {
		name  string
		t     time.Time
		exact bool
	}{
		{"base", base, true},
		{"zero", time.Time{}, true},
		{"later", base.Add(time.Hour + 1), true},
		{"earlier", base.Add(-100 * 24 * time.Hour), true},
		{"250 years on", base.AddDate(250, 0, 0), true},
		{"300 years on", base.AddDate(300, 0, 0), false},
		{"300 years back", base.AddDate(-300, 0, 0), false},
		{"other location", base.In(time.FixedZone("X", 3600)), false},
		{"local", base.Local(), false},
		{"monotonic", time.Now(), false},
		{"zero instant elsewhere", time.Time{}.In(time.FixedZone("X", 3600)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, exact := tl.offset(tt.t)
			if exact != tt.exact {
				t.Fatalf("offset(%v) exact = %v, want %v", tt.t, exact, tt.exact)
			}
			if exact && tl.at(off) != tt.t {
				t.Fatalf("at(offset(%v)) = %v", tt.t, tl.at(off))
			}
		})
	}
}

// TestTimelineOrder: inexact offsets still order times, saturating.
func TestTimelineOrder(t *testing.T) {
	tl := testTimeline()
	far, _ := tl.offset(tl.base.AddDate(300, 0, 0))
	past, _ := tl.offset(tl.base.AddDate(-300, 0, 0))
	if far != math.MaxInt64 || past != math.MinInt64 {
		t.Errorf("offsets 300 years away = %d, %d; want saturated", far, past)
	}
	mono := time.Now()
	tl = newBase(timeline{}, mono)
	if off, _ := tl.offset(mono.Add(time.Second)); off != int64(time.Second) {
		t.Errorf("offset of a monotonic time a second on = %v", time.Duration(off))
	}
}

func TestSystemTimeline(t *testing.T) {
	tl := newTimeline(nil)
	a := tl.now()
	b := tl.now()
	if b.Before(a) || a != a.Round(0) {
		t.Errorf("now() = %v then %v; want no monotonic reading, never going back", a, b)
	}
	if off, exact := tl.offset(b); !exact || tl.at(off) != b {
		t.Errorf("system clock time %v has no exact offset", b)
	}
}

func TestAddSat(t *testing.T) {
	for _, tt := range []struct{ a, b, want int64 }{
		{1, 2, 3},
		{math.MaxInt64, 1, math.MaxInt64},
		{math.MinInt64, -1, math.MinInt64},
		{math.MaxInt64, math.MinInt64, -1},
	} {
		if got := addSat(tt.a, tt.b); got != tt.want {
			t.Errorf("addSat(%d, %d) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
