package oncehttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oncehq/once"
)

// ProblemTypeBase prefixes every problem type URI; the part after it names the
// problem. The names are stable and documented in docs/gateway.md.
const ProblemTypeBase = "https://oncehq.dev/problems/"

// ContentTypeProblem is the media type of problem details (RFC 9457).
const ContentTypeProblem = "application/problem+json"

// Errors of the HTTP layer. The table in ProblemFor maps them, and the errors
// of package once, to statuses.
var (
	// ErrMissingKey: a request that needs an idempotency key has none.
	ErrMissingKey = errors.New("oncehttp: missing idempotency key")
	// ErrRequestTooLarge: the request body is larger than the limit.
	ErrRequestTooLarge = errors.New("oncehttp: request body too large")
	// ErrBadRequestBody: the request body could not be read.
	ErrBadRequestBody = errors.New("oncehttp: request body could not be read")
	// ErrResponseNotStored: the key's request was executed, but its response
	// was larger than the limit, so it was streamed and not stored: it cannot
	// be replayed.
	ErrResponseNotStored = errors.New("oncehttp: response executed but not stored")
	// ErrUpstreamUnreachable: the request never reached the upstream
	// (connection refused, DNS): the key is released, a retry executes.
	ErrUpstreamUnreachable = errors.New("oncehttp: upstream unreachable")
	// ErrUpstreamTimeout: the upstream did not answer in time after the
	// request was sent: the outcome is unknown.
	ErrUpstreamTimeout = errors.New("oncehttp: upstream timed out")
	// ErrUpstreamFailed: the connection broke after the request was sent, or
	// the response could not be read: the outcome is unknown.
	ErrUpstreamFailed = errors.New("oncehttp: upstream failed mid-request")
	// ErrCorruptResult: a stored result is not a recorded HTTP response.
	ErrCorruptResult = errors.New("oncehttp: stored result is not an HTTP response")
)

// Problem is an RFC 9457 problem details object, with once's extension
// members.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Differs names the parts of the request that differ from the first
	// use of the key (idempotency-key-mismatch), comma separated: method,
	// path, query, body.
	Differs string `json:"differs,omitempty"`
	// Outcome is "unknown" when the request may or may not have taken
	// effect.
	Outcome string `json:"outcome,omitempty"`
	// OriginalStatus is the status of the execution whose response was not
	// stored (response-not-stored).
	OriginalStatus int `json:"original_status,omitempty"`
	// RequestID is the X-Request-Id of the request answered.
	RequestID string `json:"request_id,omitempty"`
	// RetryAfter, if positive, is sent as the Retry-After header.
	RetryAfter time.Duration `json:"-"`
}

// problemSpec is a row of the table.
type problemSpec struct {
	err     error
	status  int
	name    string
	title   string
	detail  string
	outcome string
	// withReason appends the error's own text (safe: it names no secret) to
	// detail.
	withReason bool
}

// problems is the one error→status table, for the middleware and the
// gateway. Order matters: the first row whose error matches wins.
var problems = []problemSpec{
	{err: ErrMissingKey, status: 400, name: "missing-idempotency-key", title: "Idempotency key missing",
		detail: "This request needs an idempotency key, e.g. Idempotency-Key: \"<uuid>\"; nothing was forwarded", withReason: true},
	{err: once.ErrInvalidKey, status: 400, name: "invalid-idempotency-key", title: "Invalid idempotency key",
		detail: "The idempotency key must be one header of 1 to 255 printable ASCII characters, raw or as a quoted sf-string; nothing was forwarded", withReason: true},
	{err: ErrBadRequestBody, status: 400, name: "invalid-request-body", title: "Request body could not be read",
		detail: "The request body could not be read; nothing was forwarded"},
	{err: ErrRequestTooLarge, status: 413, name: "request-too-large", title: "Request body too large",
		detail: "The request body is larger than the limit for requests with an idempotency key; nothing was forwarded", withReason: true},
	{err: once.ErrMismatch, status: 422, name: "idempotency-key-mismatch", title: "Idempotency key reused with a different request",
		detail: "This idempotency key was first used with a different request; nothing was forwarded"},
	{err: once.ErrInProgress, status: 409, name: "request-in-progress", title: "A request with this idempotency key is in progress",
		detail: "Another request with this idempotency key is still being executed; retry after the Retry-After delay to get its response"},
	{err: once.ErrAbandoned, status: 409, name: "outcome-unknown", title: "Outcome of this idempotency key is unknown", outcome: "unknown",
		detail: "An earlier request with this idempotency key was interrupted mid-execution; it may or may not have taken effect, so it is not executed again. Check the outcome, then use a new key"},
	{err: ErrResponseNotStored, status: 409, name: "response-not-stored", title: "Request executed, response not stored",
		detail: "The request with this idempotency key was executed, but its response was larger than the gateway stores, so it cannot be replayed; it is not executed again"},
	{err: ErrUpstreamUnreachable, status: 502, name: "upstream-unreachable", title: "Upstream unreachable",
		detail: "The request could not be sent to the upstream, so it did not take effect; retry with the same key"},
	{err: once.ErrLeaseLost, status: 503, name: "lease-lost", title: "Lease on the idempotency key lost", outcome: "unknown",
		detail: "The lease on this idempotency key passed while the request was executed (the server stalled, or the store could not be reached to renew it), so its execution was cut short: it may or may not have taken effect, and its response is not stored. A retry with the same key gets what the store holds for the key: 409 outcome-unknown, or a new execution where abandoned keys are retried"},
	{err: ErrUpstreamTimeout, status: 504, name: "upstream-timeout", title: "Upstream timed out", outcome: "unknown",
		detail: "The request was sent to the upstream, which did not answer in time: it may or may not have taken effect. A retry with the same key does not execute it again (unless abandoned keys are retried)"},
	{err: once.ErrOutcomeUnknown, status: 502, name: "upstream-failed", title: "Upstream failed mid-request", outcome: "unknown",
		detail: "The request was sent to the upstream, but its response could not be read: it may or may not have taken effect. A retry with the same key does not execute it again (unless abandoned keys are retried)"},
	{err: ErrUpstreamFailed, status: 502, name: "upstream-failed", title: "Upstream failed mid-request", outcome: "unknown",
		detail: "The request was sent to the upstream, but its response could not be read: it may or may not have taken effect. A retry with the same key does not execute it again (unless abandoned keys are retried)"},
	{err: once.ErrUnavailable, status: 503, name: "store-unavailable", title: "Idempotency store unavailable",
		detail: "The idempotency store could not be reached; nothing was forwarded. Retry later with the same key"},
	{err: once.ErrClosed, status: 503, name: "shutting-down", title: "Shutting down",
		detail: "The server is shutting down; nothing was forwarded. Retry with the same key"},
	{err: once.ErrFenced, status: 503, name: "lease-lost", title: "Lease on the idempotency key lost",
		detail: "The request was executed, but meanwhile the key was taken over by another execution, whose response is the one the key keeps; this one's was not stored. A retry with the same key gets the key's response"},
	{err: ErrCorruptResult, status: 500, name: "internal-error", title: "Internal error",
		detail: "The stored response for this key could not be read"},
}

var internalProblem = problemSpec{status: 500, name: "internal-error", title: "Internal error",
	detail: "An internal error occurred; it has been logged"}

// ProblemFor returns the problem that answers err, from the one table shared
// by the middleware and the gateway. Unknown errors give 500 internal-error,
// whose detail never includes the error's text.
func ProblemFor(err error) Problem {
	spec := internalProblem
	for _, s := range problems {
		if errors.Is(err, s.err) {
			spec = s
			break
		}
	}
	p := Problem{Type: ProblemTypeBase + spec.name, Title: spec.title, Status: spec.status, Detail: spec.detail, Outcome: spec.outcome}
	if spec.withReason {
		if r := reason(err, spec.err); r != "" {
			p.Detail += ": " + r
		}
	}
	if d, ok := once.RetryAfter(err); ok {
		// The time left on the holder's lease bounds when the key is
		// decided, but with a renewed lease it says little (a 300 ms
		// execution under a 30 s lease would have clients wait 30 s), and
		// a retry waits for the execution again: one second.
		p.RetryAfter = min(d, time.Second)
	} else if spec.status == http.StatusServiceUnavailable {
		p.RetryAfter = time.Second
	}
	return p
}

// reason is err's text without the sentinel's own ("" if err is the
// sentinel).
func reason(err, sentinel error) string {
	s := err.Error()
	if s == sentinel.Error() {
		return ""
	}
	if i := strings.LastIndex(s, sentinel.Error()+": "); i >= 0 {
		return s[i+len(sentinel.Error())+2:]
	}
	return s
}

// Name returns the last part of p's type URI, e.g. "outcome-unknown".
func (p Problem) Name() string { return strings.TrimPrefix(p.Type, ProblemTypeBase) }

// WriteProblem answers w with p as application/problem+json, with a
// Retry-After header (whole seconds, at least 1) if p.RetryAfter is set.
func WriteProblem(w http.ResponseWriter, p Problem) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)              // a detail reads "<uuid>", not "\u003cuuid\u003e"
	if err := enc.Encode(p); err != nil { // cannot happen: Problem has only strings and ints
		buf.Reset()
		buf.WriteString(`{"type":"` + ProblemTypeBase + `internal-error","status":500}` + "\n")
	}
	body := buf.Bytes()
	h := w.Header()
	h.Set("Content-Type", ContentTypeProblem)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	if p.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64((p.RetryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}
