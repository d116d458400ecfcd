package gateway

import (
	"container/list"
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
	outcomes map[oncehttp.Outcome]prometheus.Counter // requests, by label
	upstream prometheus.Histogram
	store    *prometheus.HistogramVec

	mu sync.Mutex
	// inflight holds the start times of the upstream calls under way, in the
	// order they started: the oldest is the front.
	inflight list.List
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), outcomes: make(map[oncehttp.Outcome]prometheus.Counter)}
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
	// The children are made once: a label lookup per request hashes and
	// locks.
	for _, o := range oncehttp.Outcomes {
		m.outcomes[o] = m.requests.WithLabelValues(string(o))
	}
	return m
}

// observe counts a keyed request's outcome.
func (m *metrics) observe(ev *oncehttp.Event) {
	c, ok := m.outcomes[ev.Outcome]
	if !ok {
		c = m.requests.WithLabelValues(string(ev.Outcome))
	}
	c.Inc()
}

func (m *metrics) inflightStats() (int, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	oldest := m.inflight.Front()
	if oldest == nil {
		return 0, 0
	}
	return m.inflight.Len(), time.Since(oldest.Value.(time.Time))
}

// instrumentUpstream measures the upstream calls of keyed requests and
// tracks them in flight.
func (m *metrics) instrumentUpstream(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, keyed := oncehttp.FromContext(r.Context()); !keyed {
			next.ServeHTTP(w, r)
			return
		}
		m.mu.Lock()
		start := time.Now()
		call := m.inflight.PushBack(start)
		m.mu.Unlock()
		defer func() {
			m.mu.Lock()
			m.inflight.Remove(call)
			m.mu.Unlock()
			m.upstream.Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(w, r)
	})
}

// instrumentStore wraps s so that each operation's latency is observed. The
// optional Watcher interface is kept, so that waiters are still notified.
func (m *metrics) instrumentStore(s once.Store) once.Store {
	is := &timedStore{Store: s}
	for i, op := range storeOps {
		is.ops[i] = m.store.WithLabelValues(op)
	}
	if w, ok := s.(once.Watcher); ok {
		return &timedWatcherStore{timedStore: is, w: w}
	}
	return is
}

// storeOps are the values of the op label, indexed by the op constants.
var storeOps = [...]string{opClaim: "claim", opComplete: "complete", opRelease: "release", opExtend: "extend", opGet: "get"}

const (
	opClaim = iota
	opComplete
	opRelease
	opExtend
	opGet
)

type timedStore struct {
	once.Store
	ops [len(storeOps)]prometheus.Observer
}

func (s *timedStore) time(op int, start time.Time) {
	s.ops[op].Observe(time.Since(start).Seconds())
}

func (s *timedStore) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	defer s.time(opClaim, time.Now())
	return s.Store.Claim(ctx, req)
}

func (s *timedStore) Complete(ctx context.Context, key once.Key, token uint64, res once.Result) error {
	defer s.time(opComplete, time.Now())
	return s.Store.Complete(ctx, key, token, res)
}

func (s *timedStore) Release(ctx context.Context, key once.Key, token uint64) error {
	defer s.time(opRelease, time.Now())
	return s.Store.Release(ctx, key, token)
}

func (s *timedStore) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	defer s.time(opExtend, time.Now())
	return s.Store.Extend(ctx, key, token, lease)
}

func (s *timedStore) Get(ctx context.Context, key once.Key) (once.Record, error) {
	defer s.time(opGet, time.Now())
	return s.Store.Get(ctx, key)
}

type timedWatcherStore struct {
	*timedStore
	w once.Watcher
}

func (s *timedWatcherStore) Watch(ctx context.Context, key once.Key) (<-chan struct{}, func(), error) {
	return s.w.Watch(ctx, key)
}
