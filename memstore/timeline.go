package memstore

import (
	"math"
	"time"

	"github.com/oncehq/once"
)

// noTime is the offset that stands for the zero time.Time.
const noTime = math.MinInt64

// timeline turns the store's clock readings into int64 offsets from base and
// back, exactly: records keep offsets rather than time.Time values, whose
// *Location would be a pointer for the garbage collector to follow.
type timeline struct {
	clock once.Clock // nil: base plus the monotonic time elapsed since start
	start time.Time  // carries the monotonic reading
	base  time.Time  // no monotonic reading, so offsets are plain wall-clock arithmetic
	// base as Unix seconds and nanoseconds, and its location.
	sec, nsec int64
	loc       *time.Location
}

func newTimeline(clock once.Clock) timeline {
	if clock == nil {
		// The same readings as once.SystemClock, taken without a call
		// through a func value and with the offset known up front.
		start := time.Now()
		return newBase(timeline{start: start}, start)
	}
	return newBase(timeline{clock: clock}, clock())
}

func newBase(tl timeline, base time.Time) timeline {
	tl.base = base.Round(0)
	tl.sec, tl.nsec, tl.loc = tl.base.Unix(), int64(tl.base.Nanosecond()), tl.base.Location()
	return tl
}

// now reads the clock once.
func (tl *timeline) now() time.Time {
	if tl.clock == nil {
		return tl.base.Add(time.Since(tl.start))
	}
	return tl.clock()
}

// maxSec bounds the seconds an offset may span.
const maxSec = math.MaxInt64/int64(time.Second) - 1

// offset returns t as an offset from base, and whether the offset gives t back
// exactly: t has base's location and no monotonic reading, so that base.Add
// rebuilds the same time.Time, and lies within ±292 years of base. An inexact
// offset still orders times: it saturates.
func (tl *timeline) offset(t time.Time) (int64, bool) {
	if t == (time.Time{}) {
		return noTime, true
	}
	switch sec := t.Unix(); {
	case sec < tl.sec-maxSec:
		return math.MinInt64, false
	case sec > tl.sec+maxSec:
		return math.MaxInt64, false
	default:
		d := (sec-tl.sec)*int64(time.Second) + int64(t.Nanosecond()) - tl.nsec
		return d, t.Location() == tl.loc && t == t.Round(0)
	}
}

// at returns the time at offset off.
func (tl *timeline) at(off int64) time.Time {
	if off == noTime {
		return time.Time{}
	}
	return tl.base.Add(time.Duration(off))
}

// addSat returns a+b, saturated to the range of int64.
func addSat(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}
