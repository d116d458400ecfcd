package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/oncehq/once"
	"github.com/oncehq/once/oncehttp"
)

// readyTimeout bounds the store check of /readyz.
const readyTimeout = 2 * time.Second

// probeKey is read by /readyz on stores that cannot be pinged.
var probeKey = once.Key{ID: "once-readyz-probe"}

func (g *Gateway) newAPI() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeStatus(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if g.draining.Load() {
			oncehttp.WriteProblem(w, oncehttp.ProblemFor(once.ErrClosed))
			return
		}
		if err := g.Ready(r.Context()); err != nil {
			g.log.Warn("once: not ready", "error", err)
			oncehttp.WriteProblem(w, oncehttp.ProblemFor(err))
			return
		}
		writeStatus(w, http.StatusOK, "ready")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		oncehttp.WriteProblem(w, oncehttp.Problem{
			Type: oncehttp.ProblemTypeBase + "not-found", Title: "Not found", Status: http.StatusNotFound,
			Detail: "no such endpoint: " + r.Method + " " + r.URL.Path + " (the operator API serves GET /metrics, /healthz, /readyz and /v1/)",
		})
	})
	return mux
}

// Ready checks that the store is reachable: it pings a store that can be
// pinged and reads a probe key from the others. It returns an error wrapping
// once.ErrUnavailable if not.
func (g *Gateway) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var err error
	if p, ok := g.cfg.Store.(once.Pinger); ok {
		err = p.Ping(ctx)
	} else if _, err = g.cfg.Store.Get(ctx, probeKey); errors.Is(err, once.ErrNotFound) {
		err = nil
	}
	if err != nil && !errors.Is(err, once.ErrUnavailable) {
		err = errors.Join(once.ErrUnavailable, err)
	}
	return err
}

func writeStatus(w http.ResponseWriter, code int, status string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(`{"status":"` + status + `"}` + "\n"))
}
