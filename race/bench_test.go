package race_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once/race"
)

// arrivals records when each request reached the handler.
type arrivals struct {
	mu sync.Mutex
	at []time.Time
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	a.mu.Lock()
	a.at = append(a.at, now)
	a.mu.Unlock()
}

// spread returns the time between the first and the last arrival, and
// forgets them.
func (a *arrivals) spread() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	first, last := slices.MinFunc(a.at, time.Time.Compare), slices.MaxFunc(a.at, time.Time.Compare)
	a.at = a.at[:0]
	return last.Sub(first)
}

// BenchmarkArrivalSpread measures how close together n requests reach the
// server: Fire (connections dialled first, then a barrier) against the
// throwaway script of seed 000 (start n goroutines, each dials and sends
// as soon as it runs). Smaller is better: the window a race needs is small.
func BenchmarkArrivalSpread(b *testing.B) {
	const n = 50
	a := &arrivals{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	b.Run("fire", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			reqs := make([]*http.Request, n)
			for i := range reqs {
				reqs[i], _ = http.NewRequest("POST", srv.URL, nil)
			}
			if _, err := race.Fire(context.Background(), reqs, race.FireOptions{}); err != nil {
				b.Fatal(err)
			}
			total += a.spread()
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-spread/round")
	})
	b.Run("goroutines", func(b *testing.B) {
		var total time.Duration
		for b.Loop() {
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					resp, err := client.Post(srv.URL, "", nil)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			}
			wg.Wait()
			total += a.spread()
		}
		b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-spread/round")
	})
}
