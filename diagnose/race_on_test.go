//go:build race

package diagnose

// raceEnabled: the race detector distorts heap sizes and is slow on big inputs.
const raceEnabled = true
