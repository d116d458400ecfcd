// Package onceclient is a once.Store backed by a remote once server's key API
// (once serve --api-listen), so that once.Do works unchanged against a server
// shared by many processes written in many languages:
//
//	store, err := onceclient.Open("once+http://127.0.0.1:8081?token=SECRET")
//	o := once.New(store, once.Config{})
//
// The store's clock is the server's store's: leases are decided there.
package onceclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/oncehq/once"
	"github.com/oncehq/once/keyapi"
)

// Config configures a Client. Zero values are documented defaults.
type Config struct {
	// BaseURL is the key API's base, e.g. http://127.0.0.1:8081. Required.
	BaseURL string
	// Token is the bearer token; empty sends none (loopback servers).
	Token string
	// HTTPClient makes the requests. If nil, a client with keep-alive
	// connection reuse and a 30s timeout is used.
	HTTPClient *http.Client
	// Retries is how many times a request that may safely be repeated is
	// retried after a transport error or a 502/503/504 (default 2; negative
	// disables).
	Retries int
}

// Client is a once.Store over HTTP. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	token   string
	hc      *http.Client
	retries int
	closed  atomic.Bool
}

var (
	_ once.Store  = (*Client)(nil)
	_ once.Pinger = (*Client)(nil)
)

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("onceclient: base URL %q: want http://host:port or https://host:port", cfg.BaseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c := &Client{base: u, token: cfg.Token, hc: cfg.HTTPClient, retries: cfg.Retries}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.hc = &http.Client{Transport: t, Timeout: 30 * time.Second}
	}
	if c.retries == 0 {
		c.retries = 2
	}
	return c, nil
}

// Open parses a store URL once+http://host:port[/base]?token=T (or
// once+https://…) and returns a Client.
func Open(rawURL string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("onceclient: store URL: %v", err)
	}
	scheme, ok := strings.CutPrefix(u.Scheme, "once+")
	if !ok {
		return nil, fmt.Errorf("onceclient: store URL %q: want once+http:// or once+https://", u.Redacted())
	}
	q := u.Query()
	token := q.Get("token")
	q.Del("token")
	u.Scheme, u.RawQuery = scheme, q.Encode()
	return New(Config{BaseURL: u.String(), Token: token})
}

// retrySafe says whether a request may be sent again when its answer was
// lost. Every key operation is safe to repeat: a repeated claim can never
// make the effect run twice (at worst the lost claim holds the key until its
// lease passes, and a retry then sees it in progress or abandoned); complete,
// release and extend carry the token and are idempotent for it; get is a
// read. Advance is not: a repeat of an applied version would report
// applied=false, so it is sent once.
type retrySafe bool

// do sends one API request and decodes a 2xx JSON answer into out. Problem
// answers become errors matching once's sentinels.
func (c *Client) do(ctx context.Context, method, path, scope string, in, out any, safe retrySafe) (int, *problem, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, nil, err
		}
	}
	var lastErr error
	for attempt := 0; ; attempt++ {
		status, p, err := c.once(ctx, method, path, scope, body, out)
		if err == nil || !bool(safe) || attempt >= c.retries || ctx.Err() != nil || !transient(status, err) {
			return status, p, err
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return 0, nil, lastErr
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
}

func transient(status int, err error) bool {
	var ne net.Error
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable ||
		status == http.StatusGatewayTimeout || (status == 0 && (errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)))
}

type problem struct {
	keyapi.StateResponse
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (c *Client) once(ctx context.Context, method, path, scope string, body []byte, out any) (int, *problem, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if scope != "" {
		req.Header.Set(keyapi.ScopeHeader, url.PathEscape(scope))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", once.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%w: reading answer: %v", once.ErrUnavailable, err)
	}
	if resp.StatusCode/100 == 2 {
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return resp.StatusCode, nil, fmt.Errorf("%w: decoding answer: %v", once.ErrUnavailable, err)
			}
		}
		return resp.StatusCode, nil, nil
	}
	p := &problem{}
	json.Unmarshal(data, p)
	return resp.StatusCode, p, problemError(resp.StatusCode, p)
}

// problemError maps a problem answer to once's sentinels.
func problemError(status int, p *problem) error {
	detail := p.Detail
	if detail == "" {
		detail = http.StatusText(status)
	}
	switch {
	case status == http.StatusConflict && p.State == "fenced":
		return once.ErrFenced
	case status == http.StatusNotFound && strings.HasSuffix(p.Type, "/not-found"):
		return once.ErrNotFound
	case status == http.StatusBadRequest && strings.HasSuffix(p.Type, "/invalid-key"):
		return fmt.Errorf("%w: %s", once.ErrInvalidKey, detail)
	case status == http.StatusForbidden && strings.HasSuffix(p.Type, "/scope-forbidden"):
		return fmt.Errorf("%w: %s", once.ErrInvalidKey, detail)
	case status == http.StatusBadRequest:
		return fmt.Errorf("%w: %s", once.ErrInvalidArgument, detail)
	case status == http.StatusConflict || status == http.StatusUnprocessableEntity:
		return nil // claim outcomes, handled by Claim
	}
	return fmt.Errorf("%w: server answered %d: %s", once.ErrUnavailable, status, detail)
}

func keyPath(key once.Key, op string) string {
	p := "/v1/keys/" + url.PathEscape(key.ID)
	if op != "" {
		p += "/" + op
	}
	return p
}

// check validates key. Its scope is sent in the Once-Scope header: a token
// with a fixed scope may only use that scope (or the empty one, meaning its
// own); an operator token ("*") or a loopback client may use any.
func (c *Client) check(key once.Key) error {
	if c.closed.Load() {
		return once.ErrClosed
	}
	return key.Validate()
}

// Claim implements once.Store.
func (c *Client) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	if err := c.check(req.Key); err != nil {
		return once.ClaimResult{}, err
	}
	if err := req.Validate(); err != nil {
		return once.ClaimResult{}, err
	}
	body := keyapi.ClaimRequest{
		Fingerprint: keyapi.EncodeFingerprint(req.Fingerprint),
		LeaseMS:     max(req.Lease.Milliseconds(), 1),
		TTLMS:       max(req.Retention.Milliseconds(), 1),
		Abandoned:   req.Policy.String(),
	}
	var s keyapi.StateResponse
	status, p, err := c.do(ctx, http.MethodPost, keyPath(req.Key, "claim"), req.Key.Scope, body, &s, true)
	if err != nil {
		return once.ClaimResult{}, err
	}
	if p != nil {
		s = p.StateResponse
	}
	rec, err := s.ToRecord(req.Key.Scope)
	if err != nil {
		return once.ClaimResult{}, fmt.Errorf("%w: decoding result: %v", once.ErrUnavailable, err)
	}
	res := once.ClaimResult{Record: rec}
	switch {
	case status == http.StatusCreated:
		res.Outcome, res.Token = once.Acquired, s.Token
	case status == http.StatusOK && s.State == "completed":
		res.Outcome = once.Completed
	case s.State == "in_progress":
		res.Outcome = once.InProgress
		res.RetryAfter = time.Duration(s.RetryAfterMS) * time.Millisecond
	case s.State == "abandoned":
		res.Outcome = once.Abandoned
	case s.State == "mismatch":
		res.Outcome = once.Mismatch
	default:
		return once.ClaimResult{}, fmt.Errorf("%w: unexpected claim answer %d %q", once.ErrUnavailable, status, s.State)
	}
	return res, nil
}

// Complete implements once.Store.
func (c *Client) Complete(ctx context.Context, key once.Key, token uint64, result once.Result) error {
	if err := c.check(key); err != nil {
		return err
	}
	for k, v := range result.Meta {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: result metadata must be valid UTF-8 to cross the key API (key %q)", once.ErrInvalidArgument, k)
		}
	}
	body := keyapi.CompleteRequest{Token: token, Meta: result.Meta}
	if len(result.Data) > 0 {
		body.ResultBase64 = base64Std(result.Data)
	}
	_, _, err := c.do(ctx, http.MethodPost, keyPath(key, "complete"), key.Scope, body, nil, true)
	return err
}

// Release implements once.Store.
func (c *Client) Release(ctx context.Context, key once.Key, token uint64) error {
	if err := c.check(key); err != nil {
		return err
	}
	_, _, err := c.do(ctx, http.MethodPost, keyPath(key, "release"), key.Scope, keyapi.TokenRequest{Token: token}, nil, true)
	return err
}

// Extend implements once.Store.
func (c *Client) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	if err := c.check(key); err != nil {
		return err
	}
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be positive", once.ErrInvalidArgument)
	}
	body := keyapi.ExtendRequest{Token: token, LeaseMS: max(lease.Milliseconds(), 1)}
	_, _, err := c.do(ctx, http.MethodPost, keyPath(key, "extend"), key.Scope, body, nil, true)
	return err
}

// Get implements once.Store.
func (c *Client) Get(ctx context.Context, key once.Key) (once.Record, error) {
	if err := c.check(key); err != nil {
		return once.Record{}, err
	}
	var s keyapi.StateResponse
	if _, _, err := c.do(ctx, http.MethodGet, keyPath(key, ""), key.Scope, nil, &s, true); err != nil {
		return once.Record{}, err
	}
	return s.ToRecord(key.Scope)
}

// Delete implements once.Store.
func (c *Client) Delete(ctx context.Context, key once.Key) error {
	if err := c.check(key); err != nil {
		return err
	}
	_, _, err := c.do(ctx, http.MethodDelete, keyPath(key, ""), key.Scope, nil, nil, false)
	return err
}

// Advance implements once.Store.
func (c *Client) Advance(ctx context.Context, scope, entity string, version uint64) (bool, uint64, error) {
	if err := c.check(once.Key{Scope: scope, ID: entity}); err != nil {
		return false, 0, err
	}
	var v keyapi.VersionResponse
	_, _, err := c.do(ctx, http.MethodPost, "/v1/versions/"+url.PathEscape(entity), scope, keyapi.VersionRequest{Version: version}, &v, false)
	return v.Applied, v.Current, err
}

// Ping implements once.Pinger: it fetches the API's OpenAPI document.
func (c *Client) Ping(ctx context.Context) error {
	if c.closed.Load() {
		return once.ErrClosed
	}
	_, _, err := c.do(ctx, http.MethodGet, "/v1/openapi.json", "", nil, nil, true)
	return err
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.hc.CloseIdleConnections()
	return nil
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
