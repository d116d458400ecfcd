package race

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"
)

// maxParallelDials bounds how many connections are being dialled at once
// while a round is prepared, so that 10,000 requests do not flood the
// server's accept queue before the round has even started.
const maxParallelDials = 64

// pool holds the connections dialled before the barrier, one per request,
// so that after it every request is only a write away from the server. When
// it runs dry (a dial failed) a request dials for itself.
type pool struct {
	addr  string
	tls   *tls.Config // nil for http
	conns chan net.Conn
	// timeout bounds each dial (and TLS handshake).
	timeout time.Duration
}

// hostPort returns the address to dial for u, with the scheme's default port.
func hostPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return net.JoinHostPort(u.Hostname(), p)
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// newPool dials n connections to u's host, each within timeout. It returns
// an error only when the first connection cannot be made: that is a
// connection problem, not a finding, and dialling thousands more would only
// wait longer. Later failures are left to the requests, which dial again.
func newPool(ctx context.Context, u *url.URL, n int, timeout time.Duration, tlsConf *tls.Config) (*pool, error) {
	p := &pool{addr: hostPort(u), conns: make(chan net.Conn, n), timeout: timeout}
	if u.Scheme == "https" {
		p.tls = tlsConfig(tlsConf, u.Hostname())
	}
	first, err := p.dialNow(ctx)
	if err != nil {
		return nil, &ConnError{Addr: p.addr, Err: err}
	}
	p.conns <- first
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelDials)
	for range n - 1 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if c, err := p.dialNow(ctx); err == nil {
				p.conns <- c
			}
		}()
	}
	wg.Wait()
	return p, nil
}

// tlsConfig clones base for one host and pins HTTP/1.1, the protocol Fire
// speaks: each request has a connection of its own.
func tlsConfig(base *tls.Config, host string) *tls.Config {
	c := &tls.Config{}
	if base != nil {
		c = base.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	c.NextProtos = []string{"http/1.1"}
	return c
}

func (p *pool) dialNow(ctx context.Context) (net.Conn, error) {
	if p.tls != nil {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: p.timeout}, Config: p.tls}
		return d.DialContext(ctx, "tcp", p.addr)
	}
	d := net.Dialer{Timeout: p.timeout}
	return d.DialContext(ctx, "tcp", p.addr)
}

// take returns a connection dialled before the barrier, or dials one now
// when none is left.
func (p *pool) take(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	default:
		return p.dialNow(ctx)
	}
}

// close closes the connections nobody used.
func (p *pool) close() {
	for {
		select {
		case c := <-p.conns:
			c.Close()
		default:
			return
		}
	}
}

// ConnError reports that no connection to the target could be made, or that
// no request of a round got an answer: the round says nothing about the
// invariant.
type ConnError struct {
	Round int    // 0 when not known
	Addr  string // host:port dialled
	Err   error
}

// Error names the round, the address and why it could not be reached.
func (e *ConnError) Error() string {
	if e.Round > 0 {
		return fmt.Sprintf("round %d: cannot reach %s: %v", e.Round, e.Addr, e.Err)
	}
	return fmt.Sprintf("cannot reach %s: %v", e.Addr, e.Err)
}

// Unwrap returns the dial or request error.
func (e *ConnError) Unwrap() error { return e.Err }
