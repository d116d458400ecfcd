// Package e2e holds once's end-to-end tests of distributed stores: they build
// the real once binary, run several "once serve" processes on one shared store
// (Redis, PostgreSQL), drive them over loopback from a counting upstream, and
// kill gateways and stores with real signals. The package has no code of its
// own besides the tests; they skip unless ONCE_TEST_REDIS_URL or
// ONCE_TEST_POSTGRES_URL is set (and fail under ONCE_TEST_REQUIRE=1).
package e2e
