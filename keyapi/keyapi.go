// Package keyapi serves once's state machine over HTTP, for workers, webhooks
// and agent tool calls written in any language:
//
//	POST   /v1/keys/{key}/claim     {"fingerprint","lease_ms","ttl_ms","abandoned"}
//	POST   /v1/keys/{key}/complete  {"token","result"|"result_base64","meta"}
//	POST   /v1/keys/{key}/release   {"token"}
//	POST   /v1/keys/{key}/extend    {"token","lease_ms"}
//	GET    /v1/keys/{key}
//	DELETE /v1/keys/{key}
//	POST   /v1/versions/{entity}    {"version"}
//	GET    /v1/openapi.json
//
// Claim answers 201 (acquired), 200 (completed, with the result), 409
// (in_progress, with Retry-After; or abandoned), 422 (another fingerprint).
// Complete, release and extend answer 200, or 409 when the token no longer
// holds the key. Every error is application/problem+json; the 409 and 422
// answers of a claim also carry the "state" member.
//
// Authentication: with tokens configured, every request needs
// "Authorization: Bearer TOKEN", and the token's scope namespaces the keys, so
// two tokens with different scopes never see each other's keys. Without
// tokens, the API answers only requests from loopback addresses.
//
// Scopes: a request may name its scope in the Once-Scope header
// (percent-encoded). A token configured with the scope "*" is an operator
// token and may name any scope (the header's absence means the empty scope);
// so may loopback clients when no token is configured. A token with a fixed
// scope always works in that scope: a Once-Scope header naming another one is
// refused with 403. This lets the Go client (onceclient) be a full once.Store
// for trusted callers without letting a tenant's token leave its scope.
package keyapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/oncehttp"
)

//go:embed openapi.json
var openapiJSON []byte

// OpenAPI returns the OpenAPI 3.1 document of the API.
func OpenAPI() []byte { return openapiJSON }

// Config configures a Handler. Zero values are documented defaults.
type Config struct {
	// Store keeps the records. Required.
	Store once.Store
	// Tokens maps bearer tokens to the scope their keys live in; the scope
	// "*" lets the token name any scope with the Once-Scope header. If empty,
	// only loopback clients are served, and they may name any scope.
	Tokens map[string]string
	// Lease is the default lease of a claim (default 30s).
	Lease time.Duration
	// Retention is the default retention of a claim (default 24h).
	Retention time.Duration
	// Abandoned is the default policy for abandoned keys.
	Abandoned once.AbandonPolicy
	// MaxBody bounds request bodies (default 1 MiB); larger ones get 413.
	MaxBody int64
	// Logger receives one line per request that fails on the server's side.
	// Nil discards.
	Logger *slog.Logger
	// Now is the clock used to tell abandoned records apart in answers
	// (default time.Now). The store's clock decides everything else.
	Now func() time.Time
}

// Handler serves the key API. It is safe for concurrent use.
type Handler struct {
	cfg    Config
	tokens []tokenScope
	mux    *http.ServeMux
}

type tokenScope struct {
	digest [sha256.Size]byte
	scope  string
}

// New returns a Handler for cfg.
func New(cfg Config) *Handler {
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	for tok, scope := range cfg.Tokens {
		h.tokens = append(h.tokens, tokenScope{digest: sha256.Sum256([]byte(tok)), scope: scope})
	}
	for _, rt := range h.routes() {
		h.mux.HandleFunc(rt.pattern, rt.handler)
	}
	h.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found", "no such endpoint: "+r.Method+" "+r.URL.Path, nil)
	})
	return h
}

type route struct {
	pattern string
	handler http.HandlerFunc
}

func (h *Handler) routes() []route {
	return []route{
		{"POST /v1/keys/{key}/claim", h.keyed(h.claim)},
		{"POST /v1/keys/{key}/complete", h.keyed(h.complete)},
		{"POST /v1/keys/{key}/release", h.keyed(h.release)},
		{"POST /v1/keys/{key}/extend", h.keyed(h.extend)},
		{"GET /v1/keys/{key}", h.keyed(h.get)},
		{"DELETE /v1/keys/{key}", h.keyed(h.delete)},
		{"POST /v1/versions/{entity}", h.authed(h.advance)},
		{"GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(openapiJSON)
		}},
	}
}

// Routes lists the patterns the handler serves ("METHOD /path"), as
// documented in the OpenAPI document.
func Routes() []string {
	var out []string
	for _, r := range (&Handler{}).routes() {
		out = append(out, r.pattern)
	}
	return out
}

// LoopbackOnly reports whether the handler serves only loopback clients
// because no token is configured.
func (h *Handler) LoopbackOnly() bool { return len(h.tokens) == 0 }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ScopeHeader names the scope of a request's keys (percent-encoded).
const ScopeHeader = "Once-Scope"

// AnyScope as a token's scope lets it name any scope with ScopeHeader.
const AnyScope = "*"

// errScope is a request whose token may not use the scope it names.
var errScope = errors.New("keyapi: scope not allowed for this token")

// scope authenticates r and returns the scope of its keys. ok is false when
// r is not authenticated; err is set when it names a scope it may not use.
func (h *Handler) scope(r *http.Request) (scope string, ok bool, err error) {
	allowed, ok := h.tokenScope(r)
	if !ok {
		return "", false, nil
	}
	vals := r.Header.Values(ScopeHeader)
	if len(vals) > 1 {
		return "", true, fmt.Errorf("more than one %s header", ScopeHeader)
	}
	if len(vals) == 0 {
		if allowed == AnyScope {
			return "", true, nil
		}
		return allowed, true, nil
	}
	asked, err := url.PathUnescape(vals[0])
	if err != nil {
		return "", true, fmt.Errorf("%s header: %v", ScopeHeader, err)
	}
	if allowed != AnyScope && asked != allowed {
		return "", true, errScope
	}
	return asked, true, nil
}

// tokenScope returns the scope r's credentials allow: the token's, or
// AnyScope for loopback clients when no token is configured.
func (h *Handler) tokenScope(r *http.Request) (string, bool) {
	if len(h.tokens) == 0 {
		return AnyScope, isLoopback(r.RemoteAddr)
	}
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		return "", false
	}
	d := sha256.Sum256([]byte(tok))
	scope, found := "", 0
	for _, t := range h.tokens { // every token is compared: constant time
		eq := subtle.ConstantTimeCompare(d[:], t.digest[:])
		if eq == 1 {
			scope = t.scope
		}
		found |= eq
	}
	return scope, found == 1
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type scopedHandler func(w http.ResponseWriter, r *http.Request, scope string)
type keyedHandler func(w http.ResponseWriter, r *http.Request, key once.Key)

func (h *Handler) authed(next scopedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scope, ok, err := h.scope(r)
		if ok && err != nil {
			status, typ := http.StatusBadRequest, "invalid-scope"
			if errors.Is(err, errScope) {
				status, typ = http.StatusForbidden, "scope-forbidden"
			}
			writeProblem(w, status, typ, "Scope not allowed", err.Error(), nil)
			return
		}
		if !ok {
			if len(h.tokens) == 0 {
				writeProblem(w, http.StatusForbidden, "loopback-only", "Forbidden",
					"no API token is configured, so the key API serves loopback clients only (configure --api-token)", nil)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="once"`)
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "Unauthorized",
				"a valid Authorization: Bearer token is required", nil)
			return
		}
		next(w, r, scope)
	}
}

func (h *Handler) keyed(next keyedHandler) http.HandlerFunc {
	return h.authed(func(w http.ResponseWriter, r *http.Request, scope string) {
		key := once.Key{Scope: scope, ID: r.PathValue("key")}
		if err := key.Validate(); err != nil {
			writeProblem(w, http.StatusBadRequest, "invalid-key", "Invalid key", "path segment {key}: "+strings.TrimPrefix(err.Error(), "once: "), nil)
			return
		}
		next(w, r, key)
	})
}

// decode reads r's JSON body into v. An empty body leaves v as it is when
// optional. It answers the client itself and returns false on failure.
func (h *Handler) decode(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeProblem(w, http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
			fmt.Sprintf("the body is larger than %d bytes", h.cfg.MaxBody), nil)
		return false
	}
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", "reading the body: "+err.Error(), nil)
		return false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return true
		}
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", "a JSON body is required", nil)
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", describeJSONError(err), nil)
		return false
	}
	if dec.More() {
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", "the body holds more than one JSON value", nil)
		return false
	}
	return true
}

// describeJSONError names the offending field where encoding/json says it.
func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("field %q: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown field " + f + " (see /v1/openapi.json)"
	}
	return "malformed JSON: " + msg
}

func ms(name string, v int64, def time.Duration) (time.Duration, error) {
	if v < 0 {
		return 0, fmt.Errorf("field %q must be positive, got %d", name, v)
	}
	if v == 0 {
		return def, nil
	}
	return time.Duration(v) * time.Millisecond, nil
}

func (h *Handler) claim(w http.ResponseWriter, r *http.Request, key once.Key) {
	var req ClaimRequest
	if !h.decode(w, r, &req, true) {
		return
	}
	lease, err1 := ms("lease_ms", req.LeaseMS, h.cfg.Lease)
	ttl, err2 := ms("ttl_ms", req.TTLMS, h.cfg.Retention)
	policy := h.cfg.Abandoned
	var err3 error
	if req.Abandoned != "" {
		if policy, err3 = once.ParseAbandonPolicy(req.Abandoned); err3 != nil {
			err3 = fmt.Errorf("field \"abandoned\": want reject or retry, got %q", req.Abandoned)
		}
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", err.Error(), nil)
		return
	}
	res, err := h.cfg.Store.Claim(r.Context(), once.ClaimRequest{
		Key: key, Fingerprint: []byte(req.Fingerprint), Lease: lease, Retention: ttl, Policy: policy,
	})
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	h.claimAnswer(w, res)
}

func (h *Handler) claimAnswer(w http.ResponseWriter, res once.ClaimResult) {
	now := h.cfg.Now()
	s := FromRecord(&res.Record, now)
	switch res.Outcome {
	case once.Acquired:
		s.State = "acquired"
		writeJSON(w, http.StatusCreated, s)
	case once.Completed:
		writeJSON(w, http.StatusOK, s)
	case once.InProgress:
		s.State = "in_progress"
		s.RetryAfterMS = max(res.RetryAfter.Milliseconds(), 1)
		w.Header().Set("Retry-After", strconv.FormatInt(int64((res.RetryAfter+time.Second-1)/time.Second), 10))
		writeProblem(w, http.StatusConflict, "in-progress", "Key in progress",
			"another holder's lease on this key is live; retry after it", s)
	case once.Abandoned:
		s.State = "abandoned"
		writeProblem(w, http.StatusConflict, "outcome-unknown", "Key abandoned, outcome unknown",
			"the holder's lease passed without completion; claim with \"abandoned\":\"retry\" to take it over", s)
	case once.Mismatch:
		s.StoredState, s.State = s.State, "mismatch"
		writeProblem(w, http.StatusUnprocessableEntity, "fingerprint-mismatch", "Key reused with a different request",
			"this key was claimed with another fingerprint", s)
	}
}

func (h *Handler) complete(w http.ResponseWriter, r *http.Request, key once.Key) {
	var req CompleteRequest
	if !h.decode(w, r, &req, false) {
		return
	}
	if len(req.Result) > 0 && req.ResultBase64 != "" {
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", `fields "result" and "result_base64" are exclusive`, nil)
		return
	}
	data, err := DecodeResult(compactJSON(req.Result), req.ResultBase64)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", `field "result_base64": `+err.Error(), nil)
		return
	}
	err = h.cfg.Store.Complete(r.Context(), key, req.Token, once.Result{Data: data, Meta: req.Meta})
	h.tokenAnswer(w, r, err, StateResponse{State: "completed", Key: key.ID, Token: req.Token})
}

func compactJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}

func (h *Handler) release(w http.ResponseWriter, r *http.Request, key once.Key) {
	var req TokenRequest
	if !h.decode(w, r, &req, false) {
		return
	}
	err := h.cfg.Store.Release(r.Context(), key, req.Token)
	h.tokenAnswer(w, r, err, StateResponse{State: "released", Key: key.ID, Token: req.Token})
}

func (h *Handler) extend(w http.ResponseWriter, r *http.Request, key once.Key) {
	var req ExtendRequest
	if !h.decode(w, r, &req, false) {
		return
	}
	lease, err := ms("lease_ms", req.LeaseMS, h.cfg.Lease)
	if err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-body", "Invalid body", err.Error(), nil)
		return
	}
	err = h.cfg.Store.Extend(r.Context(), key, req.Token, lease)
	h.tokenAnswer(w, r, err, StateResponse{State: "in_progress", Key: key.ID, Token: req.Token, LeaseMS: lease.Milliseconds()})
}

// tokenAnswer answers complete, release and extend.
func (h *Handler) tokenAnswer(w http.ResponseWriter, r *http.Request, err error, ok StateResponse) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, ok)
	case errors.Is(err, once.ErrFenced):
		writeProblem(w, http.StatusConflict, "fenced", "Token no longer holds the key",
			"the token is stale: the key was completed, released, taken over or has expired", StateResponse{State: "fenced", Key: ok.Key})
	default:
		h.storeError(w, r, err)
	}
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, key once.Key) {
	rec, err := h.cfg.Store.Get(r.Context(), key)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, FromRecord(&rec, h.cfg.Now()))
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request, key once.Key) {
	if err := h.cfg.Store.Delete(r.Context(), key); err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, StateResponse{State: "deleted", Key: key.ID})
}

func (h *Handler) advance(w http.ResponseWriter, r *http.Request, scope string) {
	entity := r.PathValue("entity")
	if err := once.ValidateID(entity); err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-key", "Invalid entity", "path segment {entity}: "+strings.TrimPrefix(err.Error(), "once: "), nil)
		return
	}
	var req VersionRequest
	if !h.decode(w, r, &req, false) {
		return
	}
	applied, cur, err := h.cfg.Store.Advance(r.Context(), scope, entity, req.Version)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, VersionResponse{Applied: applied, Current: cur})
}

// storeError answers an error from the store: the sentinels by their
// meaning, anything else as 503 without its text.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, once.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "not-found", "Key not found", "no live record for this key", nil)
	case errors.Is(err, once.ErrInvalidKey):
		writeProblem(w, http.StatusBadRequest, "invalid-key", "Invalid key", strings.TrimPrefix(err.Error(), "once: "), nil)
	case errors.Is(err, once.ErrInvalidArgument):
		writeProblem(w, http.StatusBadRequest, "invalid-argument", "Invalid argument", strings.TrimPrefix(err.Error(), "once: "), nil)
	default:
		h.cfg.Logger.Error("key api: store error", "method", r.Method, "path_key", once.Redact(r.PathValue("key")), "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "store-unavailable", "Store unavailable",
			"the store could not be reached; nothing was changed that the client can rely on, retry later", nil)
	}
}

// ProblemTypeBase prefixes every problem type URI: the gateway's, so that
// one documentation page names them all.
const ProblemTypeBase = oncehttp.ProblemTypeBase

func writeProblem(w http.ResponseWriter, status int, typ, title, detail string, state any) {
	p := map[string]any{"type": ProblemTypeBase + typ, "title": title, "status": status, "detail": detail}
	if s, ok := state.(StateResponse); ok {
		b, _ := json.Marshal(s)
		var m map[string]any
		json.Unmarshal(b, &m)
		for k, v := range m {
			p[k] = v
		}
	}
	w.Header().Set("Content-Type", oncehttp.ContentTypeProblem)
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// EncodeFingerprint turns opaque fingerprint bytes into the API's string form
// (hex when they are not printable ASCII), used by Go clients.
func EncodeFingerprint(fp []byte) string {
	if once.ValidateID(string(fp)) == nil {
		return string(fp)
	}
	if len(fp) == 0 {
		return ""
	}
	return "b64:" + base64.RawURLEncoding.EncodeToString(fp)
}

// DecodeFingerprint is the inverse of EncodeFingerprint.
func DecodeFingerprint(s string) []byte {
	if b64, ok := strings.CutPrefix(s, "b64:"); ok {
		if fp, err := base64.RawURLEncoding.DecodeString(b64); err == nil {
			return fp
		}
	}
	if s == "" {
		return nil
	}
	return []byte(s)
}
