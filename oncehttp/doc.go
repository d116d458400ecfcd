// Package oncehttp is net/http middleware that makes requests carrying an
// idempotency key take effect once, following the IETF Idempotency-Key draft
// and Stripe's replay behaviour, over a once.Executor and any once.Store.
//
// Middleware wraps a handler; the gateway (package gateway, "once serve")
// wraps a reverse proxy with it. The package also holds the pieces both use:
// ParseKey (raw token or RFC 8941 sf-string), Fingerprint (per-part SHA-256
// with RFC 8785 canonical JSON, so that Differs can say which part changed),
// EncodeResult and DecodeResult (a response as a once.Result), and ProblemFor,
// the one table from errors to statuses and RFC 9457 problem details.
package oncehttp
