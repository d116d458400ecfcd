package oncehttp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oncehq/once"
)

// Headers the middleware reads or writes besides the key.
const (
	// HeaderRequestID identifies a request in logs: taken from the request
	// when present and well-formed, generated otherwise, passed to the
	// wrapped handler and returned to the client.
	HeaderRequestID = "X-Request-Id"
	// HeaderReplayed is set to "true" on an answer that replays a stored
	// response (Stripe's header).
	HeaderReplayed = "Idempotent-Replayed"
)

// DefaultMaxBody is the default limit on request bodies read for
// fingerprinting and on response bodies stored for replay: 1 MiB.
const DefaultMaxBody = 1 << 20

// DefaultBodyIdleTimeout is the default bound on a pause in a keyed request's
// body: 60 seconds, nginx's client_body_timeout.
const DefaultBodyIdleTimeout = 60 * time.Second

// DefaultMethods are the methods that need a key when Config.Methods is empty.
var DefaultMethods = []string{http.MethodPost, http.MethodPatch}

// Config configures Middleware. The zero value needs an Idempotency-Key on
// POST and PATCH, scopes keys by the Authorization header and limits request
// and stored response bodies to 1 MiB.
type Config struct {
	// Methods lists the methods that need a key; the others pass through
	// untouched. Empty means DefaultMethods.
	Methods []string
	// KeyOptional passes a request that needs a key but has none through
	// untouched (nothing stored), instead of answering 400: for a gradual
	// rollout.
	KeyOptional bool
	// ScopeHeader names the header whose value scopes keys: the same key
	// under two values is two records. Only its SHA-256 is kept. Empty means
	// Authorization.
	ScopeHeader string
	// MaxRequestBody limits the body of a keyed request, which is read
	// whole to fingerprint it: a larger one gets 413. Zero or negative means
	// DefaultMaxBody.
	MaxRequestBody int64
	// MaxResponseBody limits the response body stored for replay. A larger
	// response is streamed to the client and recorded as not stored: a
	// retry gets 409 response-not-stored, never a truncated body. Zero or
	// negative means DefaultMaxBody.
	MaxResponseBody int64
	// BodyIdleTimeout bounds each wait for more of a keyed request's body
	// (with http.ResponseController's SetReadDeadline): a client that sends
	// none of it for this long gets 400 and its connection is closed. It
	// bounds the pauses, not the whole body, so that an upload that keeps
	// moving is never cut off, however slow and whatever MaxRequestBody.
	// It is not applied under a server with a ReadTimeout, which bounds the
	// body already. Zero means DefaultBodyIdleTimeout; negative means none.
	BodyIdleTimeout time.Duration
	// Routes override the settings above for path prefixes; the longest
	// matching prefix wins.
	Routes []Route
	// Logger, if set, receives one line per keyed request (see Event.LogAttrs).
	Logger *slog.Logger
	// Observe, if set, is called once per keyed request, after it is answered.
	Observe func(*Event)
}

// Route overrides the middleware's settings for the paths under Prefix.
type Route struct {
	// Prefix matches a path equal to it or under it: "/hooks" matches
	// "/hooks" and "/hooks/github", not "/hooksmith".
	Prefix string
	// Methods lists the methods that need a key. Nil means Config.Methods.
	Methods []string
	// KeyOptional, if set, overrides Config.KeyOptional.
	KeyOptional *bool
	// Key says where the key comes from. The zero value is the
	// Idempotency-Key header.
	Key KeySource
	// Executor, if set, runs this route's keys (e.g. with another
	// retention); nil means the middleware's.
	Executor *once.Executor
}

// Middleware returns net/http middleware that makes the keyed requests it
// wraps take effect once per (scope, key), with o's lease, wait, retention and
// abandon policy:
//
//   - A request that needs a key and has none gets 400; a malformed key 400;
//     nothing reaches the handler.
//   - The first request with a key runs the handler, whose response is
//     recorded, stored, then sent. Every status is stored, 5xx included,
//     except 429, after which the key is released so that a retry runs.
//   - A retry gets the stored status, headers and body byte for byte with
//     Idempotent-Replayed: true; a concurrent duplicate waits for the first
//     (up to o's wait, then 409 with Retry-After) and gets the same.
//   - The same key with another method, path, query or body gets 422,
//     naming the part that differs.
//   - A store error gets 503: nothing runs (fail closed).
//
// The handler runs with a context that is not cancelled when the client goes
// away, so that its response is stored for the client's retry. A handler
// reports a failure that is not a response with Fail. Errors are answered by
// ProblemFor's table as application/problem+json.
func Middleware(o *once.Executor, cfg Config) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler { return newHandler(o, cfg, next) }
}

// route is a Route with the defaults applied.
type route struct {
	prefix   string
	methods  []string
	optional bool
	key      KeySource
	exec     *once.Executor
}

type handler struct {
	next        http.Handler
	routes      []route // longest prefix first; the last has prefix ""
	scopeHeader string
	maxReq      int64
	maxResp     int64
	bodyIdle    time.Duration
	log         *slog.Logger
	observe     func(*Event)
}

func newHandler(o *once.Executor, cfg Config, next http.Handler) *handler {
	h := &handler{next: next, scopeHeader: cfg.ScopeHeader, maxReq: cfg.MaxRequestBody, maxResp: cfg.MaxResponseBody,
		bodyIdle: cfg.BodyIdleTimeout, log: cfg.Logger, observe: cfg.Observe}
	if h.scopeHeader == "" {
		h.scopeHeader = "Authorization"
	}
	if h.maxReq <= 0 {
		h.maxReq = DefaultMaxBody
	}
	if h.maxResp <= 0 {
		h.maxResp = DefaultMaxBody
	}
	if h.bodyIdle == 0 {
		h.bodyIdle = DefaultBodyIdleTimeout
	}
	methods := cfg.Methods
	if len(methods) == 0 {
		methods = DefaultMethods
	}
	for _, r := range cfg.Routes {
		rt := route{prefix: r.Prefix, methods: r.Methods, optional: cfg.KeyOptional, key: r.Key, exec: r.Executor}
		if rt.methods == nil {
			rt.methods = methods
		}
		if r.KeyOptional != nil {
			rt.optional = *r.KeyOptional
		}
		if rt.exec == nil {
			rt.exec = o
		}
		h.routes = append(h.routes, rt)
	}
	sort.SliceStable(h.routes, func(i, j int) bool { return len(h.routes[i].prefix) > len(h.routes[j].prefix) })
	h.routes = append(h.routes, route{methods: methods, optional: cfg.KeyOptional, exec: o})
	return h
}

// route returns the route of path.
func (h *handler) route(path string) *route {
	for i := range h.routes {
		p := h.routes[i].prefix
		if strings.HasPrefix(path, p) && (len(path) == len(p) || p == "" || p[len(p)-1] == '/' || path[len(p)] == '/') {
			return &h.routes[i]
		}
	}
	return &h.routes[len(h.routes)-1]
}

// ServeHTTP implements http.Handler.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	given := r.Header[HeaderRequestID]
	reqID := requestID(given)
	if len(given) != 1 || given[0] != reqID {
		r.Header.Set(HeaderRequestID, reqID)
	}
	rt := h.route(r.URL.Path)
	if !slices.Contains(rt.methods, r.Method) {
		h.next.ServeHTTP(&idWriter{ResponseWriter: w, id: reqID}, r)
		return
	}
	att := &attempt{h: h, w: w, r: r}
	att.ev = Event{RequestID: reqID, Method: r.Method, Path: r.URL.Path, start: time.Now()}
	defer h.emit(r.Context(), &att.ev)
	h.serveKeyed(w, r, rt, att)
}

// serveKeyed serves a request whose method needs a key.
func (h *handler) serveKeyed(w http.ResponseWriter, r *http.Request, rt *route, att *attempt) {
	ev := &att.ev
	id, body, err := h.readKey(w, r, rt, &att.bodyIn)
	if err != nil && errors.Is(err, ErrMissingKey) && rt.optional {
		ev.Outcome = OutcomePassthrough
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		iw := &idWriter{ResponseWriter: w, id: ev.RequestID}
		h.next.ServeHTTP(iw, r)
		ev.Status = iw.status
		return
	}
	if err != nil {
		h.fail(w, ev, err, nil)
		return
	}
	key := once.Key{Scope: Scope(r.Header.Values(h.scopeHeader)), ID: id}
	ev.Scope, ev.Key = shortScope(key.Scope), once.Redact(id)
	fp := Fingerprint(r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type"), body)
	att.info = Info{Key: key, RequestID: ev.RequestID}
	// Detached from the client: a client that gives up must not cancel the
	// execution whose response its retry will want.
	att.parent, att.body = context.WithoutCancel(r.Context()), body
	exec, err := rt.exec.Do(att, key, fp, att.execute)
	h.respond(w, att, exec, err, ev, fp)
}

// readKey returns the request's key and, for a keyed request, its body, read
// through in.
func (h *handler) readKey(w http.ResponseWriter, r *http.Request, rt *route, in *idleReader) (string, []byte, error) {
	var id string
	var err error
	if !rt.key.needsBody() {
		if id, err = rt.key.fromHeader(r.Header); err != nil {
			return "", nil, err
		}
	}
	body, err := h.readBody(w, r, in)
	if err != nil {
		return "", nil, err
	}
	if rt.key.needsBody() {
		id, err = rt.key.fromBody(body)
	}
	return id, body, err
}

// readBody reads r's body whole through in, up to h.maxReq bytes, waiting for
// each part up to h.bodyIdle.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request, in *idleReader) ([]byte, error) {
	limit := h.maxReq
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrRequestTooLarge, r.ContentLength, limit)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return []byte{}, nil
	}
	var b []byte
	if r.ContentLength >= 0 {
		// The declared length, and one byte more to see the end, but no more
		// than firstBodyBuffer before any byte has arrived: the declared
		// length is the client's word, and a client that sends only headers
		// must not make the server hold the whole limit.
		b = make([]byte, 0, min(r.ContentLength+1, firstBodyBuffer))
	}
	h.bound(in, w, r)
	b, err := readAll(b, in, limit+1)
	var tooLarge *http.MaxBytesError // an http.MaxBytesHandler around this one
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrRequestTooLarge, tooLarge.Limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequestBody, err)
	}
	if int64(len(b)) > limit {
		// The deadline stays: it bounds what the server discards of the rest.
		return nil, fmt.Errorf("%w: more than %d bytes", ErrRequestTooLarge, limit)
	}
	in.disarm()
	return b, nil
}

// bound makes in read r's body, each read bounded by h.bodyIdle if that
// applies (see Config.BodyIdleTimeout).
func (h *handler) bound(in *idleReader, w http.ResponseWriter, r *http.Request) {
	*in = idleReader{r: r.Body}
	if srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server); h.bodyIdle > 0 && (srv == nil || srv.ReadTimeout <= 0) {
		in.rc, in.idle = *http.NewResponseController(w), h.bodyIdle
	}
}

// idleReader is a request body whose reads wait at most idle for the client:
// the connection's read deadline moves forward before each read. It moves at
// most once per idle/64, so that a body read in many small parts costs few
// deadline changes: a pause shorter than 63/64 of idle is never cut off.
type idleReader struct {
	r     io.Reader
	rc    http.ResponseController
	idle  time.Duration // 0: no bound
	armed time.Time     // when the deadline last moved
}

func (ir *idleReader) Read(p []byte) (int, error) {
	if ir.idle > 0 {
		if now := time.Now(); now.Sub(ir.armed) > ir.idle/64 {
			if err := ir.rc.SetReadDeadline(now.Add(ir.idle)); err != nil {
				ir.idle = 0 // the writer cannot: no bound
			}
			ir.armed = now
		}
	}
	return ir.r.Read(p)
}

// disarm lifts the deadline once the body has been read whole, so that it
// cannot end the connection while the handler runs.
func (ir *idleReader) disarm() {
	if ir.idle > 0 && !ir.armed.IsZero() {
		_ = ir.rc.SetReadDeadline(time.Time{})
	}
}

// firstBodyBuffer bounds the buffer allocated for a request body before its
// bytes arrive; a larger body grows it as they do.
const firstBodyBuffer = 64 << 10

// readAll appends what r holds to b, up to max bytes in b, like io.ReadAll of
// an io.LimitReader into a buffer sized beforehand.
func readAll(b []byte, r io.Reader, max int64) ([]byte, error) {
	for int64(len(b)) < max {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		free := b[len(b):cap(b)]
		if int64(len(free)) > max-int64(len(b)) {
			free = free[:max-int64(len(b))]
		}
		n, err := r.Read(free)
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// execute is the function that Do runs once per key: the wrapped handler
// writing into a recorder.
func (a *attempt) execute(ctx context.Context) (once.Result, error) {
	h := a.h
	rec := &a.recorder
	rec.init(a.w, h.maxResp, a.info.RequestID)
	req := a.r.WithContext(ctx)
	a.reader.Reset(a.body)
	req.Body = &a.reader
	req.ContentLength = int64(len(a.body))
	req.TransferEncoding = nil
	// Lets a proxy's transport resend the request on a keep-alive
	// connection the upstream had already closed (it never read it).
	req.GetBody = a.getBody
	start := time.Now()
	p := serveRecovering(h.next, rec, req)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rec, a.handlerTime = rec, time.Since(start)
	return a.outcome(rec, p)
}

func (a *attempt) getBody() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(a.body)), nil
}

// bodyReader is a request body read from memory.
type bodyReader struct{ bytes.Reader }

func (*bodyReader) Close() error { return nil }

// serveRecovering serves r, returning what the handler panicked with, if
// anything, so that Do releases the key before the panic goes on (respond
// panics again with the value).
func serveRecovering(next http.Handler, w http.ResponseWriter, r *http.Request) (p any) {
	defer func() { p = recover() }()
	next.ServeHTTP(w, r)
	return nil
}

// respond answers the client once Do has returned.
func (h *handler) respond(w http.ResponseWriter, att *attempt, exec once.Execution, err error, ev *Event, fp []byte) {
	ev.Token, ev.Attempts, ev.HandlerTime, ev.Err = exec.Token, exec.Attempts, att.handlerTime, err
	var rel *releasedError
	switch {
	case att.panicVal != nil:
		ev.Outcome, ev.Status = OutcomeReleased, http.StatusInternalServerError
		panic(att.panicVal) // after Do released the key; net/http logs it
	case att.streamed() && err == nil:
		ev.Outcome, ev.Status = OutcomeExecuted, att.rec.status
	case att.streamed():
		// Headers and part of the body are out: break the connection so that
		// the client cannot take a truncated body for a whole one.
		ev.Outcome, ev.Status = outcomeFor(err), att.rec.status
		panic(http.ErrAbortHandler)
	case err == nil:
		ev.Outcome = OutcomeExecuted
		if exec.Shared {
			ev.Outcome = OutcomeWaited
		} else if exec.Replayed {
			ev.Outcome = OutcomeReplayed
		}
		h.writeResult(w, exec.Result, exec.Replayed || exec.Shared, ev)
	case errors.As(err, &rel):
		ev.Outcome, ev.Err = OutcomeReleased, nil
		h.writeResult(w, rel.res, false, ev)
	case hasResponse(exec.Result) && !errors.Is(err, once.ErrFenced):
		// The handler answered but the answer could not be stored (the
		// store is down): the client still gets the real response. Not
		// when another execution took the key over (fenced): the key keeps
		// that one's response, and every client of the key must get the
		// same answer, so this one gets lease-lost and its retry the key's.
		ev.Outcome = OutcomeExecuted
		h.writeResult(w, exec.Result, false, ev)
	default:
		h.fail(w, ev, err, fp)
	}
}

// writeResult sends a recorded response.
func (h *handler) writeResult(w http.ResponseWriter, res once.Result, replayed bool, ev *Event) {
	status, err := decodeStatus(res)
	if err != nil {
		p := ProblemFor(err)
		p.OriginalStatus = status
		if replayed {
			w.Header().Set(HeaderReplayed, "true")
		}
		h.writeProblem(w, ev, p)
		return
	}
	out := w.Header()
	decodeHeader(res, out)
	// Keep net/http from adding what the recorded response did not have.
	if _, ok := res.Meta[MetaHeaderPrefix+"Content-Type"]; !ok {
		out["Content-Type"] = nil
	}
	if _, ok := res.Meta[MetaHeaderPrefix+"Date"]; !ok {
		out["Date"] = nil
	}
	out[HeaderRequestID] = []string{ev.RequestID}
	if replayed {
		out[HeaderReplayed] = []string{"true"}
	}
	ev.Status = status
	w.WriteHeader(status)
	_, _ = w.Write(res.Data)
}

// fail answers err as a problem.
func (h *handler) fail(w http.ResponseWriter, ev *Event, err error, fp []byte) {
	if ev.Outcome == "" {
		ev.Outcome = outcomeFor(err)
	}
	ev.Err = err
	p := ProblemFor(err)
	var ce *once.ClaimError
	if errors.Is(err, once.ErrMismatch) && errors.As(err, &ce) {
		if d := Differs(ce.Record.Fingerprint, fp); len(d) > 0 {
			p.Differs = strings.Join(d, ",")
			p.Detail = fmt.Sprintf("This idempotency key was first used with a different request: %s; nothing was forwarded", differsText(d))
		}
	}
	h.writeProblem(w, ev, p)
}

func (h *handler) writeProblem(w http.ResponseWriter, ev *Event, p Problem) {
	p.RequestID = ev.RequestID
	w.Header().Set(HeaderRequestID, ev.RequestID)
	ev.Status = p.Status
	WriteProblem(w, p)
}

// hasResponse reports whether res records a response.
func hasResponse(res once.Result) bool {
	_, ok := res.Meta[MetaStatus]
	return ok
}

// Scope returns the scope of keys sent with the given values of the scope
// header: the hex SHA-256 of the values, or "" when there are none. The
// header itself is never stored.
func Scope(values []string) string {
	v := strings.Join(values, ", ")
	if v == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

func shortScope(scope string) string {
	if len(scope) > 8 {
		return scope[:8]
	}
	return scope
}

// releasedError ends an execution whose key is released although the
// handler answered (429: the handler says it did not process the request).
// It carries the answer, for every caller that shared the execution.
type releasedError struct{ res once.Result }

func (e *releasedError) Error() string {
	return "oncehttp: key released after status " + e.res.Meta[MetaStatus]
}

// Info describes the keyed request being executed.
type Info struct {
	Key       once.Key
	RequestID string
}

type attemptKey struct{}

// attempt is one keyed request, allocated once with what serving it needs. It
// is also the context.Context that the request executes in: the client's
// values without its cancellation, plus the attempt for FromContext and Fail.
type attempt struct {
	h      *handler
	w      http.ResponseWriter
	r      *http.Request
	parent context.Context // the client's, without its cancellation
	body   []byte
	bodyIn idleReader // reads the client's body
	reader bodyReader // the body as the handler reads it
	info   Info
	ev     Event

	mu          sync.Mutex
	failed      error
	rec         *recorder // set once the handler has run
	recorder    recorder
	handlerTime time.Duration
	panicVal    any
}

func (a *attempt) Deadline() (time.Time, bool) { return a.parent.Deadline() }
func (a *attempt) Done() <-chan struct{}       { return a.parent.Done() }
func (a *attempt) Err() error                  { return a.parent.Err() }

func (a *attempt) Value(key any) any {
	if key == (attemptKey{}) {
		return a
	}
	return a.parent.Value(key)
}

// FromContext returns the keyed request that ctx (the context of a request
// given to the wrapped handler) belongs to.
func FromContext(ctx context.Context) (Info, bool) {
	a, ok := ctx.Value(attemptKey{}).(*attempt)
	if !ok {
		return Info{}, false
	}
	return a.info, true
}

// Fail reports that the wrapped handler serving r failed with err instead of
// producing a response: whatever it wrote is discarded and the client gets
// ProblemFor(err). The key is released, so a retry runs again, unless err is
// from once.Abandon: then the outcome is unknown and the key is left to become
// abandoned. Fail returns false, doing nothing, if r is not a keyed request
// under Middleware. The first call wins.
func Fail(r *http.Request, err error) bool {
	a, ok := r.Context().Value(attemptKey{}).(*attempt)
	if !ok || err == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failed == nil {
		a.failed = err
	}
	return true
}

// outcome turns the handler's end into Do's result. Called with a.mu held.
func (a *attempt) outcome(rec *recorder, p any) (once.Result, error) {
	switch {
	case a.failed != nil:
		return once.Result{}, a.failed
	case rec.streaming && p != nil:
		// Part of the response went out, then the handler gave up: the
		// effect may have happened, and the client must not take what it
		// got for a whole response (respond aborts the connection).
		return once.Result{}, once.Abandon(fmt.Errorf("%w: the handler panicked after its response began: %v", ErrUpstreamFailed, p))
	case rec.streaming:
		// The status is known and the response went out (or the client
		// left): the request took effect, its response is not stored.
		return notStoredResult(rec.status, rec.size, a.info.RequestID), nil
	case p == http.ErrAbortHandler:
		return once.Result{}, once.Abandon(fmt.Errorf("%w: the handler aborted its response", ErrUpstreamFailed))
	case p != nil:
		a.panicVal = p
		return once.Result{}, fmt.Errorf("oncehttp: handler panicked: %v", p)
	}
	completeHeader(rec.header, rec.statusOrOK(), rec.body.Bytes())
	res := EncodeResult(rec.statusOrOK(), rec.header, rec.body.Bytes(), a.info.RequestID)
	if rec.statusOrOK() == http.StatusTooManyRequests {
		return once.Result{}, &releasedError{res: res}
	}
	return res, nil
}

// streamed reports whether the response went to the client while executing.
func (a *attempt) streamed() bool { return a.rec != nil && a.rec.streaming }

// idWriter adds X-Request-Id to a response that passes through untouched.
type idWriter struct {
	http.ResponseWriter
	id     string
	status int
}

func (w *idWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.Header().Set(HeaderRequestID, w.id)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *idWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the client's writer (flushes,
// upgrades).
func (w *idWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush and Hijack keep the interfaces that handlers check for (streaming,
// WebSocket upgrades) on a request that passes through. A flush before
// any write sends the headers, X-Request-Id included.
func (w *idWriter) Flush() { _ = w.FlushError() }

func (w *idWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
		w.Header().Set(HeaderRequestID, w.id)
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *idWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// differsText says which parts differ: "the body differs", "the path and
// the body differ", "the method, the path and the body differ".
func differsText(names []string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = "the " + n
	}
	switch len(parts) {
	case 0:
		return "it differs"
	case 1:
		return parts[0] + " differs"
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1] + " differ"
}

// completeHeader adds to a recorded response what net/http would have added
// had the handler written to the client: a Date, and a Content-Type sniffed
// from the body when the handler set none (not even an empty one). They are
// stored with the rest, so that the first answer is the handler's as a bare
// server would send it, and every replay the same.
func completeHeader(h http.Header, status int, body []byte) {
	// Trailers are not stored (docs/gateway.md): neither the declaration
	// nor the values a handler set after writing, which would otherwise
	// come back as headers.
	for _, v := range h.Values("Trailer") {
		for name := range strings.SplitSeq(v, ",") {
			delete(h, http.CanonicalHeaderKey(strings.TrimSpace(name)))
		}
	}
	delete(h, "Trailer")
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			delete(h, k)
		}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	if _, ok := h["Content-Type"]; !ok && len(body) > 0 && bodyAllowed(status) && h.Get("Transfer-Encoding") == "" {
		h["Content-Type"] = []string{http.DetectContentType(body)}
	}
}

// bodyAllowed reports whether a response of status may have a body.
func bodyAllowed(status int) bool {
	return (status < 100 || status >= 200) && status != http.StatusNoContent && status != http.StatusNotModified
}
