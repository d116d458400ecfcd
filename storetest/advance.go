package storetest

import "math"

func testAdvance(f *fixture) {
	steps := []struct {
		entity  string
		version uint64
		applied bool
		current uint64
	}{
		{"e", 0, false, 0},
		{"e", 5, true, 5},
		{"e", 5, false, 5},
		{"e", 3, false, 5},
		{"e", 6, true, 6},
		{"other", 1, true, 1},
		{"e", 2, false, 6},
		// Versions beyond 2^53 must not pass through floating point.
		{"big", 1<<62 + 1, true, 1<<62 + 1},
		{"big", 1 << 62, false, 1<<62 + 1},
		{"big", 1<<62 + 2, true, 1<<62 + 2},
		{"big", math.MaxUint64, true, math.MaxUint64},
		{"big", math.MaxUint64 - 1, false, math.MaxUint64},
	}
	for _, s := range steps {
		f.wantAdvance(f.scope, s.entity, s.version, s.applied, s.current)
	}
	// Scopes are independent.
	f.wantAdvance(f.scope+"-2", "e", 1, true, 1)
	f.wantAdvance(f.scope, "e", 6, false, 6)
}

func (f *fixture) wantAdvance(scope, entity string, version uint64, applied bool, current uint64) {
	f.Helper()
	a, c, err := f.s.Advance(f.ctx, scope, entity, version)
	if err != nil || a != applied || c != current {
		f.Errorf("Advance(%q, %d) = %v, %d, %v; want %v, %d, nil", entity, version, a, c, err, applied, current)
	}
}
