package redisstore

import (
	"bufio"
	"bytes"
	"hash/fnv"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
	"github.com/redis/rueidis"
)

func batchMode(s *Store) Batching { return Batching(s.batch.mode.Load()) }

// TestProbeDirect: on a Redis of its own, Open's probe turns batching on,
// and a Store made by New probes before its first batch.
func TestProbeDirect(t *testing.T) {
	url := testenv.RedisURL(t)
	if m := batchMode(openTest(t, url, Config{})); m != BatchOn {
		t.Fatalf("batching mode %d after Open, want BatchOn", m)
	}
	s := openTest(t, url, Config{Batching: BatchOff}) // only for its client
	lazy, err := New(s.client, Config{Prefix: s.prefix})
	if err != nil {
		t.Fatal(err)
	}
	if m := batchMode(lazy); m != BatchAuto {
		t.Fatalf("batching mode %d after New, want BatchAuto", m)
	}
	inParallel(t, 64, 5, func(id string) error { return claimComplete(lazy, once.Key{ID: id}) })
	if m := batchMode(lazy); m != BatchOn {
		t.Fatalf("batching mode %d after a load, want BatchOn", m)
	}
}

// TestProbeRefused: a server that refuses INFO in scripts gets no batches.
func TestProbeRefused(t *testing.T) {
	needBinaries(t, "redis-server")
	srv := startRedis(t, t.TempDir(), freePort(t), "--rename-command", "INFO", "")
	s := openTest(t, "redis://"+srv.addr()+"/0", Config{})
	if m := batchMode(s); m != BatchOff {
		t.Fatalf("batching mode %d, want BatchOff", m)
	}
	inParallel(t, 16, 5, func(id string) error { return claimComplete(s, once.Key{ID: id}) })
}

// TestProbeShardingProxy: behind a proxy that routes a script by its first
// key to one of two servers, as twemproxy and Envoy do, the probe turns
// batching off, and under load every record lands on the server its key
// routes to. With batch=on, some do not: the proxy does misroute batches.
func TestProbeShardingProxy(t *testing.T) {
	needBinaries(t, "redis-server")
	dir := t.TempDir()
	var servers []*redisServer
	for _, name := range []string{"a", "b"} {
		servers = append(servers, startRedis(t, filepath.Join(dir, name), freePort(t)))
	}
	p := startShardProxy(t, servers[0].addr(), servers[1].addr())
	url := "redis://" + p.addr() + "/0"
	t.Run("Open", func(t *testing.T) {
		if m := batchMode(openProxied(t, url, Config{})); m != BatchOff {
			t.Fatalf("batching mode %d, want BatchOff", m)
		}
	})
	t.Run("Load", func(t *testing.T) {
		s, err := New(mustDial(t, url), Config{Prefix: testPrefix(t)}) // probes before its first batch
		if err != nil {
			t.Fatal(err)
		}
		const goroutines, each = 64, 10
		inParallel(t, goroutines, each, func(id string) error { return claimComplete(s, once.Key{ID: id}) })
		if n, wrong := p.placed(t, servers, s.prefix); n != goroutines*each || wrong != 0 {
			t.Fatalf("%d records, %d of them on a server their key does not route to; want %d, 0", n, wrong, goroutines*each)
		}
		if m := batchMode(s); m != BatchOff {
			t.Fatalf("batching mode %d after the load, want BatchOff", m)
		}
	})
	t.Run("BatchOn", func(t *testing.T) {
		s := openProxied(t, url+"?batch=on", Config{})
		inParallel(t, 64, 10, func(id string) error {
			s.Claim(ctx, claimReq(once.Key{ID: id}, time.Minute, time.Minute))
			return nil
		})
		n, wrong := p.placed(t, servers, s.prefix)
		if wrong == 0 {
			t.Fatalf("batch=on: all %d records where their keys route: no batch misrouted, the proxy proves nothing", n)
		}
		t.Logf("batch=on: %d of %d records on a server their key does not route to", wrong, n)
	})
}

// openProxied opens a store through the proxy under a fresh prefix. Its keys
// die with the servers.
func openProxied(t *testing.T, url string, cfg Config) *Store {
	cfg.Prefix = testPrefix(t)
	s, err := Open(ctx, url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// shardProxy stands in for twemproxy or Envoy's Redis proxy: one endpoint
// over several servers, that sends a script call to the server its first key
// hashes to and checks no other key. A command without a key goes to every
// server, and the client gets the first one's reply. It serves each
// connection's commands one at a time.
type shardProxy struct {
	l        net.Listener
	backends []string
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startShardProxy(t *testing.T, backends ...string) *shardProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &shardProxy{l: l, backends: backends}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *shardProxy) addr() string { return p.l.Addr().String() }

// route returns the index of the server that key routes to.
func (p *shardProxy) route(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(len(p.backends)))
}

func (p *shardProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve relays the commands of client c until either side closes.
func (p *shardProxy) serve(c net.Conn) {
	defer p.wg.Done()
	conns := []net.Conn{c}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var readers []*bufio.Reader
	for _, addr := range p.backends {
		b, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		conns = append(conns, b)
		readers = append(readers, bufio.NewReader(b))
	}
	p.mu.Lock()
	p.conns = append(p.conns, conns...)
	p.mu.Unlock()
	cr := bufio.NewReader(c)
	for {
		var cmd []byte
		_, args, err := readValue(cr, &cmd)
		if err != nil || len(args) == 0 {
			return
		}
		var to []int
		if key, ok := scriptKey(args); ok {
			to = []int{p.route(key)}
		} else {
			for b := range p.backends {
				to = append(to, b)
			}
		}
		var reply []byte
		for i, b := range to {
			var r []byte
			if _, err := conns[1+b].Write(cmd); err != nil {
				return
			}
			if _, _, err := readValue(readers[b], &r); err != nil {
				return
			}
			if i == 0 {
				reply = r
			}
		}
		if _, err := c.Write(reply); err != nil {
			return
		}
	}
}

// scriptKey returns the first key of a script call.
func scriptKey(args []string) (string, bool) {
	switch strings.ToUpper(args[0]) {
	case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO":
		if len(args) > 3 && args[2] != "0" {
			return args[3], true
		}
	}
	return "", false
}

// readValue reads one RESP2 or RESP3 value from r, appends its bytes to raw,
// and returns it if it is a string, or its elements if it is an array or a
// map (a command is an array of strings).
func readValue(r *bufio.Reader, raw *[]byte) (string, []string, error) {
	line, err := r.ReadBytes('\n')
	if err != nil || len(line) < 3 {
		return "", nil, io.ErrUnexpectedEOF
	}
	*raw = append(*raw, line...)
	head, body := line[0], string(bytes.TrimSuffix(line[1:], []byte("\r\n")))
	if !strings.ContainsRune("$=!*~>%", rune(head)) {
		return body, nil, nil // a simple value
	}
	n, err := strconv.Atoi(body)
	if err != nil || n < 0 {
		return "", nil, err // a null
	}
	switch head {
	case '$', '=', '!':
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", nil, err
		}
		*raw = append(*raw, b...)
		return string(b[:n]), nil, nil
	case '%':
		n *= 2
	}
	elems := make([]string, n)
	for i := range elems {
		if elems[i], _, err = readValue(r, raw); err != nil {
			return "", nil, err
		}
	}
	return "", elems, nil
}

// placed counts the records under prefix on servers, and those among them
// on a server their key does not route to.
func (p *shardProxy) placed(t *testing.T, servers []*redisServer, prefix string) (n, wrong int) {
	for i, srv := range servers {
		for _, key := range keysOn(t, srv, prefix+"r{*") {
			n++
			if p.route(key) != i {
				wrong++
			}
		}
	}
	return n, wrong
}

// keysOn returns the keys of srv that match pattern.
func keysOn(t *testing.T, srv *redisServer, pattern string) []string {
	c := mustDial(t, "redis://"+srv.addr()+"/0")
	keys, err := c.Do(ctx, c.B().Keys().Pattern(pattern).Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// mustDial returns a client for url, closed when the test ends.
func mustDial(t *testing.T, url string) rueidis.Client {
	t.Helper()
	o, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
