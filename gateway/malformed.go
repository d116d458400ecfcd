package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/oncehq/once/oncehttp"
)

// net/http's server answers a request that is not valid HTTP/1.1 (a control
// character in a header, two Content-Length headers, a malformed request
// line, headers over the limit) itself, before any handler runs, with a
// plain-text body. problemListener's connections turn those answers into
// problem+json, so that every error the gateway gives is one. The server
// writes them in one Write straight to the connection, with exactly these
// headers: responses that go through a handler always carry a Date header
// (and the gateway's an X-Request-Id), so they never match.
const serverErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

type problemListener struct{ net.Listener }

func (l problemListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &problemConn{Conn: c}, nil
}

// problemConn passes everything through but the server's own error answers.
// It keeps the methods net/http looks for on a *net.TCPConn (CloseWrite for
// a graceful close, ReadFrom for sendfile).
type problemConn struct{ net.Conn }

func (c *problemConn) Write(p []byte) (int, error) {
	if out, ok := rewriteServerError(p); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *problemConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *problemConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// rewriteServerError returns the problem+json answer for p if p is one of
// the server's plain-text error answers: "HTTP/1.1 400 Bad Request: why",
// the headers above, then the text.
func rewriteServerError(p []byte) ([]byte, bool) {
	const proto = "HTTP/1.1 "
	if len(p) < len(proto)+3 || !bytes.HasPrefix(p, []byte(proto)) || (p[len(proto)] != '4' && p[len(proto)] != '5') {
		return nil, false
	}
	i := bytes.Index(p, []byte(serverErrorHeaders))
	if i < 0 || bytes.IndexByte(p[:i], '\n') >= 0 {
		return nil, false
	}
	line := string(p[len(proto):i])
	if len(line) < 3 {
		return nil, false
	}
	code, err := strconv.Atoi(line[:3])
	if err != nil || http.StatusText(code) == "" {
		return nil, false
	}
	detail := "the request is not valid HTTP/1.1"
	if _, why, ok := bytes.Cut([]byte(line), []byte(": ")); ok {
		detail += ": " + string(why)
	}
	name := "bad-request"
	switch code {
	case http.StatusRequestHeaderFieldsTooLarge:
		name = "request-headers-too-large"
	case http.StatusNotImplemented:
		name, detail = "not-implemented", "unsupported transfer encoding"
	}
	body, err := json.Marshal(oncehttp.Problem{Type: oncehttp.ProblemTypeBase + name, Title: http.StatusText(code), Status: code, Detail: detail})
	if err != nil {
		return nil, false
	}
	body = append(body, '\n')
	out := make([]byte, 0, 160+len(body))
	out = append(out, proto...)
	out = strconv.AppendInt(out, int64(code), 10)
	out = append(out, ' ')
	out = append(out, http.StatusText(code)...)
	out = append(out, "\r\nContent-Type: "+oncehttp.ContentTypeProblem+"\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\nConnection: close\r\n\r\n"...)
	return append(out, body...), true
}
