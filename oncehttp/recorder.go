package oncehttp

import (
	"bytes"
	"net/http"
	"strconv"
	"time"
)

// recorder is the ResponseWriter the wrapped handler writes to while it
// executes a keyed request. It buffers the response, so that the record is
// stored before the client is answered, up to limit bytes of body; past that
// it streams the response to the client and stores only that it was not
// stored. It is used by one goroutine at a time.
type recorder struct {
	w         http.ResponseWriter // the client's
	header    http.Header
	limit     int64
	requestID string

	status    int
	body      bytes.Buffer
	size      int64 // body bytes written, streamed ones included
	streaming bool  // the response went to the client directly
	writeErr  error // the client's connection failed while streaming
}

func (r *recorder) init(w http.ResponseWriter, limit int64, requestID string) {
	*r = recorder{w: w, header: make(http.Header), limit: limit, requestID: requestID}
}

// Header implements http.ResponseWriter.
func (r *recorder) Header() http.Header { return r.header }

// WriteHeader implements http.ResponseWriter. Informational (1xx) responses
// are dropped: only the final response is recorded.
func (r *recorder) WriteHeader(code int) {
	if r.status != 0 || (code >= 100 && code < 200 && code != http.StatusSwitchingProtocols) {
		return
	}
	r.status = code
	// A declared length over the limit is streamed from the first byte.
	if n, err := strconv.ParseInt(r.header.Get("Content-Length"), 10, 64); err == nil && n > r.limit {
		r.startStreaming()
	}
}

// Write implements http.ResponseWriter.
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	r.size += int64(len(p))
	if !r.streaming && int64(r.body.Len()+len(p)) > r.limit {
		r.startStreaming()
	}
	if !r.streaming {
		return r.body.Write(p)
	}
	if r.writeErr != nil {
		return 0, r.writeErr
	}
	n, err := r.w.Write(p)
	r.writeErr = err
	return n, err
}

// FlushError forwards flushes while streaming; a buffered response is flushed
// when it is complete.
func (r *recorder) FlushError() error {
	if !r.streaming || r.writeErr != nil {
		return r.writeErr
	}
	return http.NewResponseController(r.w).Flush()
}

// Flush makes the recorder an http.Flusher, as handlers that stream check
// for: see FlushError.
func (r *recorder) Flush() { _ = r.FlushError() }

// SetWriteDeadline lets a handler bound its writes (http.ResponseController)
// as it would without the middleware: while the response is buffered
// nothing waits on the client, so there is nothing to bound; once it
// streams, the client's connection gets the deadline.
func (r *recorder) SetWriteDeadline(t time.Time) error {
	if !r.streaming {
		return nil
	}
	return http.NewResponseController(r.w).SetWriteDeadline(t)
}

// SetReadDeadline: the middleware has read the whole body already.
func (r *recorder) SetReadDeadline(time.Time) error { return nil }

// startStreaming sends the status, headers and buffered body to the client.
func (r *recorder) startStreaming() {
	r.streaming = true
	h := r.w.Header()
	for k, v := range r.header {
		h[k] = v
	}
	h.Set(HeaderRequestID, r.requestID)
	r.w.WriteHeader(r.status)
	if r.body.Len() > 0 {
		_, r.writeErr = r.w.Write(r.body.Bytes())
	}
	r.body = bytes.Buffer{}
}

// statusOrOK is the recorded status, 200 if the handler wrote nothing.
func (r *recorder) statusOrOK() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}
