// Package b mints keys for package a, to test facts across packages.
package b

import "time"

// NewKey returns a key derived from the clock.
func NewKey(prefix string) string { // want NewKey:`fresh\(time.Now\)`
	return prefix + time.Now().String()
}
