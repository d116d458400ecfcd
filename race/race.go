// Package race reproduces a race condition on demand: it fires the same
// request many times at once, round after round, and judges each round
// against an invariant, either "every 2xx answer is the same" (what an
// idempotent endpoint must do for one Idempotency-Key) or a check of the
// side effect (a row count, a charge count) that must give an expected value.
//
// It is the engine of "once race"; package oncetest offers the same barrier
// to Go tests.
package race

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// MaxN is the largest number of requests a round may send.
const MaxN = 10000

// KeyMode says which Idempotency-Key header the requests carry.
type KeyMode string

// The key modes.
const (
	// KeySame gives every request of a round one key, new each round.
	KeySame KeyMode = "same"
	// KeyUnique gives every request a key of its own: {{key}}-{{i}}.
	KeyUnique KeyMode = "unique"
	// KeyNone sends no Idempotency-Key header.
	KeyNone KeyMode = "none"
)

// ParseKeyMode parses "same", "unique" or "none".
func ParseKeyMode(s string) (KeyMode, error) {
	switch m := KeyMode(s); m {
	case KeySame, KeyUnique, KeyNone:
		return m, nil
	}
	return "", fmt.Errorf("%q is not same, unique or none", s)
}

// CheckFunc measures the side effect of a round, e.g. by counting rows. Its
// result, trimmed of surrounding space, is compared with Config.Expect.
type CheckFunc func(ctx context.Context, v Vars) (string, error)

// Config describes a race. URL, Header values, Body and Expect may hold
// templates (see Vars); the URL's scheme and host may not. The zero values of
// the other fields are the defaults of "once race".
type Config struct {
	URL    string
	Method string // default POST
	Header []Header
	Body   string
	N      int     // requests per round, default 50, at most MaxN
	Rounds int     // default 10
	Key    KeyMode // default KeySame
	// Timeout, Spread and TLSConfig are passed to Fire.
	Timeout   time.Duration
	Spread    time.Duration
	TLSConfig *tls.Config
	// Check, if set, judges each round: its value must equal Expect.
	// Without it, a KeySame round holds when all its 2xx answers are
	// byte-identical, and other rounds are not judged.
	Check  CheckFunc
	Expect string
	// OnAnswer, if set, is called after each request with the number of
	// the round's requests done so far, from the requests' goroutines: it
	// must be safe for concurrent use. OnRound, if set, is called after each
	// round from Run's goroutine.
	OnAnswer func(round, done, n int)
	OnRound  func(Round)
}

// Validate applies the defaults to c and returns an error naming what is
// wrong, if anything, by the "once race" flag that sets it.
func (c *Config) Validate() error {
	c.defaults()
	if strings.Contains(origin(c.URL), "{{") {
		return fmt.Errorf("URL %q: templates are allowed in the path and query only", c.URL)
	}
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		return fmt.Errorf("URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("URL %q: scheme must be http or https", c.URL)
	case u.Host == "":
		return fmt.Errorf("URL %q: no host", c.URL)
	case c.N < 1 || c.N > MaxN:
		return fmt.Errorf("-n %d: must be 1 to %d requests per round", c.N, MaxN)
	case c.Rounds < 1:
		return fmt.Errorf("--rounds %d: must be at least 1", c.Rounds)
	case !isToken(c.Method):
		return fmt.Errorf("-X %q: not an HTTP method token", c.Method)
	case c.Spread < 0:
		return fmt.Errorf("--spread %v: must not be negative", c.Spread)
	}
	if _, err := ParseKeyMode(string(c.Key)); err != nil {
		return fmt.Errorf("--key %v", err)
	}
	return c.checkTemplates()
}

// origin returns the scheme and authority of a URL, as written: the part
// that decides where requests go, and which templates may not change.
func origin(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	return scheme + "://" + rest
}

func (c *Config) defaults() {
	if c.Method == "" {
		c.Method = http.MethodPost
	}
	if c.N == 0 {
		c.N = 50
	}
	if c.Rounds == 0 {
		c.Rounds = 10
	}
	if c.Key == "" {
		c.Key = KeySame
	}
}

func (c *Config) checkTemplates() error {
	if err := CheckTemplate(c.URL, true); err != nil {
		return fmt.Errorf("URL: %v", err)
	}
	if err := CheckTemplate(c.Body, true); err != nil {
		return fmt.Errorf("-d: %v", err)
	}
	for _, h := range c.Header {
		if err := CheckTemplate(h.Value, true); err != nil {
			return fmt.Errorf("-H %s: %v", h.Name, err)
		}
	}
	if err := CheckTemplate(c.Expect, false); err != nil {
		return fmt.Errorf("--expect: %v", err)
	}
	return nil
}

// Run runs c.Rounds rounds and returns their report. It stops early, with
// the rounds run so far, when a round could not be run: a *ConnError when the
// target could not be reached, the check's error, or ctx's.
func Run(ctx context.Context, c Config) (*Report, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	rep := newReport(&c)
	for r := 1; r <= c.Rounds; r++ {
		round, answers, err := runRound(ctx, &c, r)
		if err != nil {
			rep.Error = err.Error()
			rep.finish()
			return rep, err
		}
		rep.add(round, answers)
		if c.OnRound != nil {
			c.OnRound(round)
		}
	}
	rep.finish()
	return rep, nil
}

// newVars draws the round's key and UUID.
func newVars(c *Config, round int) Vars {
	return Vars{Round: round, Key: uuid(), N: c.N, UUID: uuid()}
}

// uuid returns a random (version 4) UUID.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// requests builds the round's requests before the barrier, so that building
// them costs nothing once the round has started.
func (c *Config) requests(ctx context.Context, v Vars) ([]*http.Request, error) {
	reqs := make([]*http.Request, c.N)
	for i := range reqs {
		v.I = i + 1
		req, err := c.request(ctx, v)
		if err != nil {
			return nil, err
		}
		reqs[i] = req
	}
	return reqs, nil
}

func (c *Config) request(ctx context.Context, v Vars) (*http.Request, error) {
	var body *strings.Reader
	if c.Body != "" {
		body = strings.NewReader(Expand(c.Body, v))
	}
	req, err := newRequest(ctx, c.Method, Expand(c.URL, v), body)
	if err != nil {
		return nil, fmt.Errorf("URL: %v", err)
	}
	for _, h := range c.Header {
		req.Header.Add(h.Name, Expand(h.Value, v))
	}
	if h := req.Header.Get("Host"); h != "" {
		req.Host = h
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "once-race")
	}
	c.setKey(req, v)
	if body != nil && req.Header.Get("Content-Type") == "" && looksJSON(c.Body) {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func newRequest(ctx context.Context, method, u string, body *strings.Reader) (*http.Request, error) {
	if body == nil {
		return http.NewRequestWithContext(ctx, method, u, nil)
	}
	return http.NewRequestWithContext(ctx, method, u, body)
}

// setKey adds the Idempotency-Key header, unless the user gave one. The value
// is sent bare, as Stripe and most APIs expect it; a server that wants the
// IETF draft's quoted sf-string can be given -H 'Idempotency-Key: "{{key}}"'.
func (c *Config) setKey(req *http.Request, v Vars) {
	if req.Header.Get("Idempotency-Key") != "" {
		return
	}
	switch c.Key {
	case KeySame:
		req.Header.Set("Idempotency-Key", v.Key)
	case KeyUnique:
		req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", v.Key, v.I))
	}
}

// looksJSON reports whether a body template is JSON, to label it so; other
// bodies go without a Content-Type unless -H gives one.
func looksJSON(s string) bool {
	s = strings.TrimSpace(s)
	return strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[")
}

// errNoAnswer is the reason recorded when every request of a round failed.
var errNoAnswer = errors.New("no request got an answer")

// runRound fires one round and judges it.
func runRound(ctx context.Context, c *Config, r int) (Round, []Answer, error) {
	v := newVars(c, r)
	reqs, err := c.requests(ctx, v)
	if err != nil {
		return Round{}, nil, err
	}
	answers, err := Fire(ctx, reqs, c.fireOptions(r))
	if ctx.Err() != nil {
		return Round{}, nil, ctx.Err() // interrupted: the round is incomplete
	}
	if err != nil {
		var ce *ConnError
		if errors.As(err, &ce) {
			ce.Round = r
		}
		return Round{}, nil, err
	}
	round := summarize(r, v, c.Key, answers)
	if round.Errors == len(answers) {
		return Round{}, nil, &ConnError{Round: r, Addr: hostPort(reqs[0].URL), Err: fmt.Errorf("%w; the first: %v", errNoAnswer, answers[0].Err)}
	}
	if err := judge(ctx, c, v, &round); err != nil {
		return Round{}, nil, err
	}
	return round, answers, nil
}

func (c *Config) fireOptions(round int) FireOptions {
	o := FireOptions{Timeout: c.Timeout, Spread: c.Spread, TLSConfig: c.TLSConfig}
	if c.OnAnswer != nil {
		var done atomic.Int64
		o.OnAnswer = func() { c.OnAnswer(round, int(done.Add(1)), c.N) }
	}
	return o
}
