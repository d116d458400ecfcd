package race

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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
	// Timeout bounds each request, from its start until its answer's body
	// is read, and each dial made to prepare a round. Zero means 30 seconds.
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

// maxRoundBytes bounds the memory the prepared requests of a round take.
const maxRoundBytes = 256 << 20

// Fire sends reqs at once and returns their answers, in the order of reqs.
// Every request must go to the same scheme, host and port. Before anything
// is sent, Fire writes each request out to bytes and dials one connection per
// request (TLS handshakes included); then it holds all the requests at a
// barrier until every goroutine is ready, and releases them together: each
// writes its bytes on its connection with one call and reads the answer. So
// the requests reach the server as close together as the machine allows,
// which is what hits a check-then-act window.
//
// Each request goes over HTTP/1.1 on a connection of its own, with
// "Connection: close". Redirects are not followed (a 3xx is an answer like
// any other), no proxy is used, and no other host is ever contacted.
//
// It returns a *ConnError when not even one connection could be made, and an
// error when a request cannot be written out or goes to another host. Other
// failures (a timeout, a reset connection) are left in Answer.Err.
func Fire(ctx context.Context, reqs []*http.Request, o FireOptions) ([]Answer, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	o = o.withDefaults()
	shots, err := prepare(reqs)
	if err != nil {
		return nil, err
	}
	p, err := newPool(ctx, reqs[0].URL, len(reqs), o.Timeout, o.TLSConfig)
	if err != nil {
		return nil, err
	}
	defer p.close()

	answers := make([]Answer, len(reqs))
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(len(reqs))
	done.Add(len(reqs))
	for i, s := range shots {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			answers[i] = o.send(ctx, p, s)
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

// shot is a request ready to leave: the request (for reading its answer)
// and its bytes on the wire.
type shot struct {
	req  *http.Request
	wire []byte
}

// prepare writes every request out, so that sending one after the barrier
// is a single write. It consumes the requests' bodies.
func prepare(reqs []*http.Request) ([]shot, error) {
	scheme, addr := reqs[0].URL.Scheme, hostPort(reqs[0].URL)
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("%q: only http and https URLs can be raced", reqs[0].URL.Redacted())
	}
	shots := make([]shot, len(reqs))
	total := 0
	for i, r := range reqs {
		if r.URL.Scheme != scheme || hostPort(r.URL) != addr {
			return nil, fmt.Errorf("request %d goes to %s://%s, not %s://%s: a race talks to one host", i+1, r.URL.Scheme, hostPort(r.URL), scheme, addr)
		}
		r.Close = true
		var b bytes.Buffer
		if err := r.Write(&b); err != nil {
			return nil, fmt.Errorf("request %d: %v", i+1, err)
		}
		if total += b.Len(); total > maxRoundBytes {
			return nil, fmt.Errorf("the round's %d requests take more than %d MiB: send a smaller body or fewer requests", len(reqs), maxRoundBytes>>20)
		}
		shots[i] = shot{req: r, wire: b.Bytes()}
	}
	return shots, nil
}

func (o FireOptions) send(ctx context.Context, p *pool, s shot) Answer {
	if o.Spread > 0 && !sleep(ctx, rand.N(o.Spread)) {
		return Answer{Err: ctx.Err()}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	began := time.Now()
	conn, err := p.take(ctx)
	if err != nil {
		return Answer{Err: err, Latency: time.Since(began)}
	}
	defer conn.Close()
	// A deadline in the past unblocks the read or write in progress.
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })()
	a, err := roundTrip(conn, s, o.KeepBody)
	a.Latency = time.Since(began)
	if err != nil {
		switch {
		case parent.Err() != nil:
			err = parent.Err()
		case ctx.Err() != nil:
			err = fmt.Errorf("no answer within %v: %w", o.Timeout, ctx.Err())
		}
		return Answer{Err: err, Latency: a.Latency}
	}
	return a
}

// roundTrip writes the request and reads its answer, skipping interim (1xx)
// responses.
func roundTrip(conn net.Conn, s shot, keep int) (Answer, error) {
	if _, err := conn.Write(s.wire); err != nil {
		return Answer{}, err
	}
	br := bufio.NewReader(conn)
	for {
		resp, err := http.ReadResponse(br, s.req)
		if err != nil {
			return Answer{}, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			defer resp.Body.Close()
			return readAnswer(resp, keep)
		}
	}
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

// Write keeps what fits and reports everything written.
func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
