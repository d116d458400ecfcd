package gateway

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/oncehq/once"
	"github.com/oncehq/once/oncehttp"
)

// metrics are the gateway's Prometheus collectors, on a registry of its own
// so that several gateways can live in one process (tests).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	upstream prometheus.Histogram
	store    *prometheus.HistogramVec

	mu       sync.Mutex
	inflight map[uint64]time.Time // executions running upstream, by start
	next     uint64
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), inflight: make(map[uint64]time.Time)}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "once_requests_total",
		Help: "Keyed requests by outcome (executed, replayed, waited, conflict, mismatch, missing_key, released, abandoned, store_error, ...).",
	}, []string{"outcome"})
	m.upstream = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "once_upstream_duration_seconds",
		Help:    "Time the upstream took to answer an executed keyed request, body included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	m.store = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "once_store_duration_seconds",
		Help:    "Latency of store operations, by operation.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	}, []string{"op"})
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "once_in_flight_requests",
		Help: "Keyed requests this process is executing upstream now.",
	}, func() float64 { n, _ := m.inflightStats(); return float64(n) })
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "once_oldest_in_progress_seconds",
		Help: "Age of the oldest key this process holds in progress (0 when none).",
	}, func() float64 { _, age := m.inflightStats(); return age.Seconds() })
	m.reg.MustRegister(m.requests, m.upstream, m.store, inflight, oldest,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range oncehttp.Outcomes {
		m.requests.WithLabelValues(string(o))
	}
	return m
}

// observe counts a keyed request's outcome.
func (m *metrics) observe(ev *oncehttp.Event) {
	m.requests.WithLabelValues(string(ev.Outcome)).Inc()
}

func (m *metrics) inflightStats() (int, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var oldest time.Time
	for _, t := range m.inflight {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	if oldest.IsZero() {
		return 0, 0
	}
	return len(m.inflight), time.Since(oldest)
}

// instrumentUpstream measures the upstream calls of keyed requests and
// tracks them in flight.
func (m *metrics) instrumentUpstream(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, keyed := oncehttp.FromContext(r.Context()); !keyed {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		m.mu.Lock()
		m.next++
		id := m.next
		m.inflight[id] = start
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			delete(m.inflight, id)
			m.mu.Unlock()
			m.upstream.Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(w, r)
	})
}

// instrumentStore wraps s so that each operation's latency is observed. The
// optional Watcher interface is kept, so that waiters are still notified.
func (m *metrics) instrumentStore(s once.Store) once.Store {
	is := &timedStore{Store: s, hist: m.store}
	if w, ok := s.(once.Watcher); ok {
		return &timedWatcherStore{timedStore: is, w: w}
	}
	return is
}

type timedStore struct {
	once.Store
	hist *prometheus.HistogramVec
}

func (s *timedStore) time(op string, start time.Time) {
	s.hist.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (s *timedStore) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	defer s.time("claim", time.Now())
	return s.Store.Claim(ctx, req)
}

func (s *timedStore) Complete(ctx context.Context, key once.Key, token uint64, res once.Result) error {
	defer s.time("complete", time.Now())
	return s.Store.Complete(ctx, key, token, res)
}

func (s *timedStore) Release(ctx context.Context, key once.Key, token uint64) error {
	defer s.time("release", time.Now())
	return s.Store.Release(ctx, key, token)
}

func (s *timedStore) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	defer s.time("extend", time.Now())
	return s.Store.Extend(ctx, key, token, lease)
}

func (s *timedStore) Get(ctx context.Context, key once.Key) (once.Record, error) {
	defer s.time("get", time.Now())
	return s.Store.Get(ctx, key)
}

type timedWatcherStore struct {
	*timedStore
	w once.Watcher
}

func (s *timedWatcherStore) Watch(ctx context.Context, key once.Key) (<-chan struct{}, func(), error) {
	return s.w.Watch(ctx, key)
}
