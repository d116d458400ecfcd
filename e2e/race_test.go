//go:build race

package e2e

// Under -race the gateways are built with -race too, so that a race inside
// "once serve" under real multi-process load is reported (see gateway.cleanup).
func init() { raceEnabled = true }
