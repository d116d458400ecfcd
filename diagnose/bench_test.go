package diagnose

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"
)

// synthLog writes n requests of three lines each (slog shape), one request
// every millisecond over many users; every 1000th request is doubled by a
// racing twin, so the detectors have work to do.
func synthLog(n int) []byte {
	var b bytes.Buffer
	t0 := time.Date(2025, 4, 29, 10, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		writeReq(&b, t0.Add(time.Duration(i)*time.Millisecond), i, fmt.Sprintf("r-%d", i), i)
		if i%1000 == 0 {
			writeReq(&b, t0.Add(time.Duration(i)*time.Millisecond+300*time.Microsecond), i, fmt.Sprintf("r-%d-twin", i), i+1<<30)
		}
	}
	return b.Bytes()
}

func writeReq(b *bytes.Buffer, t time.Time, i int, corr string, charge int) {
	ts := func(d time.Duration) string { return t.Add(d).Format(time.RFC3339Nano) }
	user := i % 5000
	fmt.Fprintf(b, `{"time":%q,"level":"INFO","msg":"charge requested","request_id":%q,"user":"user_%d","product":"prod_%d","amount":4999,"method":"POST","path":"/api/charge"}`+"\n", ts(0), corr, user, i%97)
	fmt.Fprintf(b, `{"time":%q,"level":"INFO","msg":"stripe charge created","request_id":%q,"stripe_id":"pi_%d","user":"user_%d"}`+"\n", ts(2*time.Millisecond), corr, charge, user)
	fmt.Fprintf(b, `{"time":%q,"level":"INFO","msg":"charge inserted","request_id":%q,"db_id":%d,"stripe_id":"pi_%d","duration_ms":12}`+"\n", ts(3*time.Millisecond), corr, charge, charge)
}

var benchLog = sync1(func() []byte { return synthLog(40000) })

func sync1(f func() []byte) func() []byte {
	var b []byte
	return func() []byte {
		if b == nil {
			b = f()
		}
		return b
	}
}

// BenchmarkDiagnose is the whole pipeline: read, parse, merge, detect.
func BenchmarkDiagnose(b *testing.B) {
	data := benchLog()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rep, err := Run(Config{}, []Input{{Name: "bench", R: bytes.NewReader(data)}})
		if err != nil || len(rep.Findings) != 40 {
			b.Fatalf("err=%v findings=%d, want 40", err, len(rep.Findings))
		}
	}
}

// BenchmarkBaselineLines only splits the input into lines: the I/O floor.
func BenchmarkBaselineLines(b *testing.B) {
	data := benchLog()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sc := bufio.NewScanner(bytes.NewReader(data))
		n := 0
		for sc.Scan() {
			n++
		}
	}
}

// BenchmarkBaselineJSONMap decodes each line with encoding/json into a map,
// the obvious way to read JSON lines, and does nothing else.
func BenchmarkBaselineJSONMap(b *testing.B) {
	data := benchLog()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// genReader streams a synthetic log of n requests without holding it.
type genReader struct {
	i, n int
	buf  bytes.Buffer
	t0   time.Time
}

func (g *genReader) Read(p []byte) (int, error) {
	for g.buf.Len() < len(p) && g.i < g.n {
		writeReq(&g.buf, g.t0.Add(time.Duration(g.i)*time.Millisecond), g.i, fmt.Sprintf("r-%d", g.i), g.i)
		g.i++
	}
	if g.buf.Len() == 0 {
		return 0, io.EOF
	}
	return g.buf.Read(p)
}

// TestBoundedMemory streams about 45 MB of logs (300 000 requests over five
// minutes of log time) and checks that the heap stays flat: state is kept
// per open window only.
func TestBoundedMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("streams ~45 MB; skipped under -short and -race")
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	measure := func(n int) uint64 {
		g := &genReader{n: n, t0: time.Date(2025, 4, 29, 10, 0, 0, 0, time.UTC)}
		var peak uint64
		cfg := Config{}
		rep, err := runProbe(cfg, g, func() {
			if h := heap(); h > peak {
				peak = h
			}
		})
		if err != nil || len(rep.Findings) != 0 {
			t.Fatalf("err=%v findings=%d", err, len(rep.Findings))
		}
		return peak
	}
	small, large := measure(30000), measure(300000)
	t.Logf("peak heap: %d KiB for 30k requests, %d KiB for 300k", small>>10, large>>10)
	if large > 2*small+(16<<20) {
		t.Errorf("peak heap grew from %d KiB to %d KiB with 10x the input: state is not bounded", small>>10, large>>10)
	}
}

// runProbe is Run with a hook called every 50 000 events.
func runProbe(cfg Config, r io.Reader, probe func()) (*Report, error) {
	n := 0
	testHook = func() {
		if n++; n%50000 == 0 {
			probe()
		}
	}
	defer func() { testHook = nil }()
	return Run(cfg, []Input{{Name: "gen", R: r}})
}
