package oncetest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/oncehq/once/race"
)

// keepBody is how much of each body RaceHTTP keeps: whole answers in
// practice. Answers are grouped by a hash of the whole body either way.
const keepBody = 1 << 20

// Group is a set of identical answers: same status, same body. Body holds
// the first MiB of the body (Truncated says when there was more).
type Group = race.Group

// Answers are the answers of a RaceHTTP, grouped.
type Answers struct {
	N      int     // requests sent
	Groups []Group // by status and body, most frequent first
	// Errors are the requests that got no answer (URL targets only).
	Errors []error
}

// Count returns how many answers had status.
func (a Answers) Count(status int) int {
	n := 0
	for _, g := range a.Groups {
		if g.Status == status {
			n += g.Count
		}
	}
	return n
}

// Distinct2xx returns how many different 2xx answers there were. One
// idempotency key must get one: the first execution's, replayed.
func (a Answers) Distinct2xx() int {
	n := 0
	for _, g := range a.Groups {
		if g.Status >= 200 && g.Status < 300 {
			n++
		}
	}
	return n
}

// Replayed returns how many answers carried Idempotent-Replayed: true.
func (a Answers) Replayed() int {
	n := 0
	for _, g := range a.Groups {
		n += g.Replayed
	}
	return n
}

// String lists the groups, one per line: "201 ×1 {...}".
func (a Answers) String() string {
	var b strings.Builder
	for _, g := range a.Groups {
		body := g.Body
		if len(body) > 200 {
			body = body[:200] + "…"
		}
		fmt.Fprintf(&b, "%d ×%d %s\n", g.Status, g.Count, strings.TrimSuffix(body, "\n"))
	}
	for _, err := range a.Errors {
		fmt.Fprintf(&b, "no answer: %v\n", err)
	}
	return b.String()
}

// RaceHTTP sends req n times at once to target and returns the answers,
// grouped by status and body. req's body is read once and sent with every
// copy.
//
// target is either an http.Handler, whose ServeHTTP is called directly by n
// goroutines released by a barrier (as Race does), or a server: a URL
// string, a *url.URL or an *httptest.Server (whose certificate is trusted).
// A server gets n requests over n connections dialled beforehand and
// released together, as "once race" sends them. With a server, only req's
// path and query are used: requests go to target's scheme and host, and
// redirects are not followed.
//
// RaceHTTP calls tb.Fatalf when target is of another type, when req's body
// cannot be read, or when the server cannot be reached at all.
func RaceHTTP(tb TB, target any, n int, req *http.Request) Answers {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("oncetest.RaceHTTP: n = %d, want at least 1", n)
		return Answers{}
	}
	body, err := readBody(req)
	if err != nil {
		tb.Fatalf("oncetest.RaceHTTP: reading the request body: %v", err)
		return Answers{}
	}
	switch t := target.(type) {
	case http.Handler:
		return raceHandler(tb, t, n, req, body)
	case *httptest.Server:
		roots := x509.NewCertPool()
		if t.Certificate() != nil {
			roots.AddCert(t.Certificate())
		}
		return raceURL(tb, t.URL, n, req, body, &tls.Config{RootCAs: roots})
	case *url.URL:
		return raceURL(tb, t.String(), n, req, body, nil)
	case string:
		return raceURL(tb, t, n, req, body, nil)
	}
	tb.Fatalf("oncetest.RaceHTTP: target is a %T; want an http.Handler, a URL string, a *url.URL or an *httptest.Server", target)
	return Answers{}
}

func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	return io.ReadAll(req.Body)
}

// clone copies req for one request of the race, with its own body.
func clone(ctx context.Context, req *http.Request, body []byte) *http.Request {
	r := req.Clone(ctx)
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	return r
}

func raceHandler(tb TB, h http.Handler, n int, req *http.Request, body []byte) Answers {
	tb.Helper()
	answers := make([]race.Answer, n)
	Race(tb, n, func(i int) error {
		r := clone(req.Context(), req, body)
		if r.RequestURI == "" {
			r.RequestURI = r.URL.RequestURI()
		}
		if r.RemoteAddr == "" {
			r.RemoteAddr = "192.0.2.1:1234"
		}
		rec := httptest.NewRecorder()
		began := time.Now()
		h.ServeHTTP(rec, r)
		answers[i] = race.NewAnswer(rec.Code, rec.Result().Header, rec.Body.Bytes(), keepBody)
		answers[i].Latency = time.Since(began)
		return nil
	})
	return Answers{N: n, Groups: race.GroupAnswers(answers)}
}

func raceURL(tb TB, target string, n int, req *http.Request, body []byte, tlsConf *tls.Config) Answers {
	tb.Helper()
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		tb.Fatalf("oncetest.RaceHTTP: target %q is not an http(s) URL", target)
		return Answers{}
	}
	if req.URL != nil && req.URL.Path != "" {
		u.Path, u.RawPath = req.URL.Path, req.URL.RawPath
	}
	if req.URL != nil && req.URL.RawQuery != "" {
		u.RawQuery = req.URL.RawQuery
	}
	reqs := make([]*http.Request, n)
	for i := range reqs {
		r := clone(req.Context(), req, body)
		uu := *u
		r.URL, r.Host, r.RequestURI = &uu, "", "" // a client request, to target
		reqs[i] = r
	}
	answers, err := race.Fire(req.Context(), reqs, race.FireOptions{TLSConfig: tlsConf, KeepBody: keepBody})
	if err != nil {
		tb.Fatalf("oncetest.RaceHTTP: %v", err)
		return Answers{}
	}
	a := Answers{N: n, Groups: race.GroupAnswers(answers)}
	for _, ans := range answers {
		if ans.Err != nil {
			a.Errors = append(a.Errors, ans.Err)
		}
	}
	return a
}
