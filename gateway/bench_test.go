package gateway_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once/gateway"
	"github.com/oncehq/once/memstore"
)

// BenchmarkProxy measures the gateway's own cost per keyed request, without
// the network: a bare httputil.ReverseProxy and the gateway (memory store,
// once serve's request log to io.Discard, a fresh key per request) in front
// of the same in-process upstream. The difference is what once adds.
//
//	go test -run='^$' -bench=Proxy -benchmem ./gateway/
func BenchmarkProxy(b *testing.B) {
	target, _ := url.Parse("http://upstream.invalid")
	b.Run("bare", func(b *testing.B) {
		benchProxy(b, &httputil.ReverseProxy{
			Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport:  stubUpstream{},
			BufferPool: bufferPool{},
		})
	})
	b.Run("once", func(b *testing.B) {
		gw, err := gateway.New(gateway.Config{
			Upstream: target, Store: memstore.New(memstore.Config{}), Transport: stubUpstream{},
			Logger: slog.New(gateway.NewLogHandler(io.Discard, nil)),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer gw.Close()
		benchProxy(b, gw.Handler())
	})
}

func benchProxy(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		r, _ := http.NewRequest("POST", "http://gateway.test/orders", strings.NewReader(`{"item":"book","qty":1}`))
		r.RemoteAddr = "127.0.0.1:50000"
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Idempotency-Key", "bench-"+strconv.Itoa(i))
		w := &discardWriter{header: make(http.Header)}
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// bufferPool reuses copy buffers, as the gateway's proxy does.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// stubUpstream answers every request at once, like bench/gateway's upstream.
type stubUpstream struct{}

func (stubUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	_ = r.Body.Close()
	const body = `{"ok":true,"id":"ord_123"}`
	return &http.Response{
		StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(body))}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}, nil
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.header }

func (w *discardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(p), nil
}

// SetReadDeadline accepts the middleware's bound on the request body, as a
// server's connection does (without it, http.ResponseController's error
// would count as the gateway's allocations).
func (w *discardWriter) SetReadDeadline(time.Time) error { return nil }
