package oncetest

// Integer is the type of a counter's value.
type Integer interface {
	~int | ~int8 | ~int16 | ~int32 | ~int64 | ~uint | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

// Counter is anything with a Load method returning a count: the counters
// of sync/atomic (atomic.Int64, atomic.Int32, atomic.Uint64, …) and
// CountFunc.
type Counter[V Integer] interface {
	Load() V
}

// CountFunc adapts a function to a Counter, e.g. a row count:
//
//	oncetest.ExactlyOnce(t, oncetest.CountFunc(func() int64 {
//		var n int64
//		db.QueryRow(`SELECT count(*) FROM users WHERE email = $1`, email).Scan(&n)
//		return n
//	}))
type CountFunc func() int64

// Load calls f.
func (f CountFunc) Load() int64 { return f() }

// ExactlyOnce reports an error to tb unless counter's value is 1, and
// returns whether it was.
func ExactlyOnce[V Integer](tb TB, counter Counter[V]) bool {
	tb.Helper()
	return Exactly(tb, counter, 1)
}

// Exactly reports an error to tb unless counter's value is want, and returns
// whether it was.
func Exactly[V Integer](tb TB, counter Counter[V], want V) bool {
	tb.Helper()
	if got := counter.Load(); got != want {
		tb.Errorf("the effect happened %d times, want exactly %d", got, want)
		return false
	}
	return true
}

// SameAnswer reports an error to tb unless every 2xx answer in a is the
// same (status and body), which is what one idempotency key must get, and
// returns whether it was. The error lists the distinct answers.
func SameAnswer(tb TB, a Answers) bool {
	tb.Helper()
	if n := a.Distinct2xx(); n > 1 {
		tb.Errorf("%d different 2xx answers to %d identical requests, want 1:\n%s", n, a.N, a)
		return false
	}
	return true
}
