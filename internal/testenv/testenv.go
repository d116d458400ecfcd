// Package testenv tells tests where the real backends are. A backend's URL
// comes from an environment variable; when it is unset the test is skipped
// with a message naming the variable, unless ONCE_TEST_REQUIRE=1, which turns
// the skip into a failure (CI sets it).
package testenv

import (
	"os"
	"testing"
)

// Required reports whether ONCE_TEST_REQUIRE=1: a missing backend fails.
func Required() bool { return os.Getenv("ONCE_TEST_REQUIRE") == "1" }

// URL returns the value of the environment variable name, or skips (fails
// under ONCE_TEST_REQUIRE=1) the test when it is unset.
func URL(tb testing.TB, name string) string {
	tb.Helper()
	u := os.Getenv(name)
	if u == "" {
		Skip(tb, name+" is not set")
	}
	return u
}

// Skip skips the test with reason, or fails it under ONCE_TEST_REQUIRE=1.
func Skip(tb testing.TB, reason string) {
	tb.Helper()
	if Required() {
		tb.Fatalf("%s (ONCE_TEST_REQUIRE=1 turns this skip into a failure)", reason)
	}
	tb.Skip(reason)
}

// RedisURL returns ONCE_TEST_REDIS_URL, e.g. redis://127.0.0.1:6379/0.
func RedisURL(tb testing.TB) string { tb.Helper(); return URL(tb, "ONCE_TEST_REDIS_URL") }

// PostgresURL returns ONCE_TEST_POSTGRES_URL, e.g.
// postgres://postgres@127.0.0.1:5432/test.
func PostgresURL(tb testing.TB) string { tb.Helper(); return URL(tb, "ONCE_TEST_POSTGRES_URL") }

// NATSURL returns ONCE_TEST_NATS_URL, e.g. nats://127.0.0.1:4222.
func NATSURL(tb testing.TB) string { tb.Helper(); return URL(tb, "ONCE_TEST_NATS_URL") }
