package race

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultKeepBody is how many bytes of each distinct answer are kept for
// display when FireOptions.KeepBody is zero. Answers are compared by a hash of
// their whole body, so what is kept does not change any verdict.
const DefaultKeepBody = 4096

// FireOptions tune Fire. The zero value is usable.
type FireOptions struct {
	// Timeout bounds each request, from its start until its body is read,
	// and each dial. Zero means 30 seconds.
	Timeout time.Duration
	// Spread delays each request after the barrier by a random duration in
	// [0, Spread). Zero releases them all at once.
	Spread time.Duration
	// TLSConfig is the base TLS configuration for https URLs. Nil means the
	// system's roots.
	TLSConfig *tls.Config
	// KeepBody is how many bytes of each body Answer.Body keeps. Zero means
	// DefaultKeepBody.
	KeepBody int
	// OnAnswer, if set, is called once per finished request, from the
	// request's goroutine; it must be safe for concurrent use.
	OnAnswer func()
}

// Answer is what one request got back.
type Answer struct {
	Status    int           // HTTP status; 0 when Err is set
	Replayed  bool          // the answer carried Idempotent-Replayed: true
	Size      int64         // length of the whole body
	Sum       [32]byte      // SHA-256 of the whole body
	Body      []byte        // the first KeepBody bytes of the body
	Truncated bool          // Body is shorter than the whole body
	Latency   time.Duration // from the request's start to its body's end
	Err       error         // the request got no (complete) answer
}

// Fire sends reqs at once and returns their answers, in the order of reqs.
// Every request must be for the same scheme and host: Fire dials one
// connection per request to that host first, holds all requests at a barrier
// until every goroutine is ready, and then releases them together, so that
// they really overlap on the server. Redirects are not followed (a 3xx is an
// answer like any other), no proxy is used, and any other host is refused.
//
// It returns a *ConnError when not even one connection could be made. Other
// failures (a timeout, a reset connection) are left in Answer.Err.
func Fire(ctx context.Context, reqs []*http.Request, o FireOptions) ([]Answer, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	o = o.withDefaults()
	p, err := newPool(ctx, reqs[0].URL, len(reqs), o.Timeout, o.TLSConfig)
	if err != nil {
		return nil, err
	}
	defer p.close()
	client := p.client()
	defer client.CloseIdleConnections()

	answers := make([]Answer, len(reqs))
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(len(reqs))
	done.Add(len(reqs))
	for i, req := range reqs {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			answers[i] = o.send(ctx, client, req)
			if o.OnAnswer != nil {
				o.OnAnswer()
			}
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return answers, nil
}

func (o FireOptions) withDefaults() FireOptions {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.KeepBody <= 0 {
		o.KeepBody = DefaultKeepBody
	}
	return o
}

// client returns an HTTP/1.1 client whose every connection comes from p, one
// per request (no keep-alive), and which never follows a redirect.
func (p *pool) client() *http.Client {
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       p.dial,
		DialTLSContext:    p.dial,
		DisableKeepAlives: true,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (o FireOptions) send(ctx context.Context, c *http.Client, req *http.Request) Answer {
	if o.Spread > 0 {
		if !sleep(ctx, rand.N(o.Spread)) {
			return Answer{Err: ctx.Err()}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	began := time.Now()
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		return Answer{Err: err, Latency: time.Since(began)}
	}
	defer resp.Body.Close()
	a, err := readAnswer(resp, o.KeepBody)
	a.Latency = time.Since(began)
	if err != nil {
		return Answer{Err: err, Latency: a.Latency}
	}
	return a
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// readAnswer hashes the whole body and keeps its first keep bytes.
func readAnswer(resp *http.Response, keep int) (Answer, error) {
	h := sha256.New()
	var head limitedBuffer
	head.max = keep
	n, err := io.Copy(io.MultiWriter(h, &head), resp.Body)
	if err != nil {
		return Answer{}, err
	}
	a := Answer{
		Status:    resp.StatusCode,
		Replayed:  isReplayed(resp.Header),
		Size:      n,
		Body:      head.buf,
		Truncated: n > int64(len(head.buf)),
	}
	h.Sum(a.Sum[:0])
	return a, nil
}

// NewAnswer makes the Answer of a response that is already in memory, as
// from an httptest.ResponseRecorder.
func NewAnswer(status int, header http.Header, body []byte, keep int) Answer {
	if keep <= 0 {
		keep = DefaultKeepBody
	}
	a := Answer{Status: status, Replayed: isReplayed(header), Size: int64(len(body)), Sum: sha256.Sum256(body)}
	a.Body = body[:min(keep, len(body))]
	a.Truncated = len(a.Body) < len(body)
	return a
}

// isReplayed reports Stripe's replay header, which the once gateway sends too.
func isReplayed(h http.Header) bool {
	return strings.EqualFold(strings.TrimSpace(h.Get("Idempotent-Replayed")), "true")
}

// limitedBuffer keeps the first max bytes written and discards the rest.
type limitedBuffer struct {
	buf []byte
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// errNoAnswer is the reason recorded when every request of a round failed.
var errNoAnswer = errors.New("no request got an answer")
