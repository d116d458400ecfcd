package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/oncehttp"
)

// newTransport returns a transport for one upstream: enough idle
// connections for many concurrent clients, and bounded dials.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // the upstream is reached directly
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// newProxy returns the reverse proxy to target. Its failures are reported to
// the middleware with oncehttp.Fail, classified by whether the request can
// have reached the upstream.
func newProxy(target *url.URL, transport http.RoundTripper, timeout time.Duration, log *slog.Logger) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			inMemoryBody(pr)
			noResend(pr.Out)
		},
		Transport:      transport,
		ModifyResponse: watchBody,
		ErrorHandler:   proxyError,
		BufferPool:     bufferPool{},
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if timeout <= 0 {
		return rp
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
}

// bufferPool reuses the proxy's copy buffers (32 KiB each), which would
// otherwise be allocated per response.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// proxyError handles a failed upstream call: a keyed request fails its
// execution (see classify); any other request gets the problem at once.
func proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if cause := context.Cause(r.Context()); errors.Is(cause, once.ErrLeaseLost) {
		// The executor cut the call short: its lease passed. Whatever the
		// Transport says (a deadline, a cancellation), the request may
		// have reached the upstream: outcome unknown.
		err = once.Abandon(cause)
	} else {
		err = classify(err)
	}
	if oncehttp.Fail(r, err) {
		return
	}
	p := oncehttp.ProblemFor(err)
	p.RequestID = r.Header.Get(oncehttp.HeaderRequestID)
	oncehttp.WriteProblem(w, p)
}

// classify sorts an upstream failure by what it means for the key. A request
// that never left (no connection: refused, DNS, TLS verification) did not
// take effect: the key is released. Any later failure leaves the outcome
// unknown: the key is left to become abandoned.
func classify(err error) error {
	var op *net.OpError
	var dns *net.DNSError
	var cert *tls.CertificateVerificationError
	switch {
	case errors.As(err, &dns), errors.As(err, &op) && op.Op == "dial", errors.As(err, &cert),
		strings.Contains(err.Error(), "server closed idle connection"):
		// net/http's errServerClosedIdle: the upstream had closed the
		// kept-alive connection before the request was written to it.
		return fmt.Errorf("%w: %v", oncehttp.ErrUpstreamUnreachable, err)
	case isTimeout(err):
		return once.Abandon(fmt.Errorf("%w: %v", oncehttp.ErrUpstreamTimeout, err))
	}
	return once.Abandon(fmt.Errorf("%w: %v", oncehttp.ErrUpstreamFailed, err))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// watchBody makes a failure to read the upstream's response body reach the
// middleware: the request was sent, so its outcome is unknown. (The proxy
// would only abort the response, or truncate it silently outside a server.)
func watchBody(res *http.Response) error {
	res.Body = &watchedBody{ReadCloser: res.Body, req: res.Request}
	return nil
}

type watchedBody struct {
	io.ReadCloser
	req *http.Request
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		oncehttp.Fail(b.req, classifyRead(err))
	}
	return n, err
}

// classifyRead classifies a failure to read a response: the request was
// certainly sent.
func classifyRead(err error) error {
	if isTimeout(err) {
		return once.Abandon(fmt.Errorf("%w: reading the response: %v", oncehttp.ErrUpstreamTimeout, err))
	}
	return once.Abandon(fmt.Errorf("%w: reading the response: %v", oncehttp.ErrUpstreamFailed, err))
}

// inMemoryBody gives the upstream request a body that net/http knows to be
// in memory when the middleware has buffered it (GetBody is set then: a
// server's own requests have none). The proxy wraps every body in a reader
// of its own, on which the Transport writes the request head and flushes it
// before the body; on a bytes.Reader it writes both at once: one system
// call, and one wake-up of the upstream, less per request.
func inMemoryBody(pr *httputil.ProxyRequest) {
	if pr.Out.Body == nil || pr.In.GetBody == nil {
		return
	}
	if b, err := pr.In.GetBody(); err == nil {
		pr.Out.Body = b
	}
}

// noResend stops net/http's Transport from sending a request a second time
// on its own. It resends a request that failed on a kept-alive connection
// before any response came, when the request is "idempotent", which for it
// includes any method whose Header map holds an Idempotency-Key or
// X-Idempotency-Key entry: the upstream may have read the request and acted
// on it before the connection broke, and a second send would be a second
// execution of a keyed request. The keys are moved to lowercase entries,
// which the Transport does not look for and writes as they are (header
// names are case-insensitive: RFC 9110, section 5.1). A request the
// Transport could not write at all is still resent (that needs no
// idempotency, only GetBody); one it wrote is not, and fails: its outcome
// is unknown.
func noResend(r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return // resending these is the upstream's contract
	}
	for _, k := range [...]string{"Idempotency-Key", "X-Idempotency-Key"} {
		if v, ok := r.Header[k]; ok {
			delete(r.Header, k)
			r.Header[strings.ToLower(k)] = v
		}
	}
}
