package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oncehq/once/internal/testenv"
)

// readyTimeout bounds a gateway's start: the machine running the tests may be
// loaded, and the binary may carry the race detector.
const readyTimeout = 60 * time.Second

// gateway is one running "once serve" process.
type gateway struct {
	name   string
	proxy  string // base URL of --listen
	api    string // base URL of --api-listen
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{} // closed once the process has been reaped
}

// startGateways starts n "once serve" processes on the store URL store, in
// front of upstream, with extra flags, and waits until every one answers 200
// on /readyz. The test's cleanup kills them, logs their stderr if the test
// failed, and fails the test if one of them reported a data race.
func startGateways(t *testing.T, n int, store, upstream string, flags ...string) []*gateway {
	t.Helper()
	bin := onceBinary(t)
	gws := make([]*gateway, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		name := string(rune('A' + i))
		wg.Go(func() { gws[i], errs[i] = launch(bin, name, store, upstream, flags) })
	}
	wg.Wait()
	for _, g := range gws {
		if g != nil {
			t.Cleanup(func() { g.cleanup(t) })
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return gws
}

// launch starts one gateway on free loopback ports, retrying when another
// process took a port between our probe and the child's listen.
func launch(bin, name, store, upstream string, flags []string) (*gateway, error) {
	var err error
	for range 5 {
		var g *gateway
		if g, err = spawn(bin, name, store, upstream, flags); err != nil {
			return nil, err
		}
		if err = g.waitReady(); err == nil {
			return g, nil
		}
		g.kill()
		if !strings.Contains(g.stderr.String(), "address already in use") {
			return nil, fmt.Errorf("gateway %s: %v\nstderr:\n%s", name, err, g.stderr.tail(8<<10))
		}
	}
	return nil, fmt.Errorf("gateway %s: no free ports: %v", name, err)
}

func spawn(bin, name, store, upstream string, flags []string) (*gateway, error) {
	proxy, api := freeAddr(), freeAddr()
	if proxy == "" || api == "" {
		return nil, fmt.Errorf("gateway %s: cannot probe for a free port", name)
	}
	args := append([]string{"serve", "--listen", proxy, "--api-listen", api, "--store", store, "--upstream", upstream}, flags...)
	g := &gateway{name: name, proxy: "http://" + proxy, api: "http://" + api, stderr: &syncBuffer{}, exited: make(chan struct{})}
	g.cmd = exec.Command(bin, args...)
	g.cmd.Env = childEnv()
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("gateway %s: %w", name, err)
	}
	go func() {
		g.cmd.Wait()
		close(g.exited)
	}()
	return g, nil
}

// childEnv is the test's environment without ONCE_* variables, which the CLI
// would read as flags.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ONCE_") {
			env = append(env, kv)
		}
	}
	return env
}

// handedOut holds the ports freeAddr returned, so that two gateways started
// at once by this process never get the same one.
var handedOut struct {
	sync.Mutex
	ports map[string]bool
}

// freeAddr returns a loopback address that was free a moment ago. The child
// cannot listen on :0 and tell us, so we probe and let launch retry on a
// collision with another process.
func freeAddr() string {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[string]bool{}
	}
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ""
		}
		addr := ln.Addr().String()
		ln.Close()
		if !handedOut.ports[addr] {
			handedOut.ports[addr] = true
			return addr
		}
	}
	return ""
}

// waitReady waits until the gateway logged that it listens on its own
// addresses and /readyz answers 200, until the process exits, or until
// readyTimeout passes. The log line matters: after a port collision,
// /readyz may be answered by whichever process holds the port.
func (g *gateway) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		if g.listening() {
			if status, _ := g.readyz(); status == http.StatusOK {
				return nil
			}
		}
		select {
		case <-g.exited:
			return fmt.Errorf("exited before it was ready (%v)", g.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", readyTimeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// listening reports whether the gateway logged that it listens on its proxy
// and API addresses (both listeners are open by then).
func (g *gateway) listening() bool {
	sc := bufio.NewScanner(strings.NewReader(g.stderr.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct{ Msg, Proxy, API string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "once serve: listening" {
			return "http://"+line.Proxy == g.proxy && "http://"+line.API == g.api
		}
	}
	return false
}

// probeClient asks /readyz; its timeout exceeds the gateway's own store
// check (2s).
var probeClient = &http.Client{Timeout: 5 * time.Second}

// readyz returns the status of GET /readyz on the operator listener.
func (g *gateway) readyz() (int, error) {
	res, err := probeClient.Get(g.api + "/readyz")
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}

// kill sends SIGKILL and waits until the process is reaped. Safe to repeat.
func (g *gateway) kill() {
	select {
	case <-g.exited:
		return
	default:
	}
	g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
}

func (g *gateway) cleanup(t *testing.T) {
	g.kill()
	out := g.stderr.String()
	if i := strings.Index(out, "WARNING: DATA RACE"); i >= 0 {
		t.Errorf("gateway %s reported a data race:\n%s", g.name, out[i:min(len(out), i+16<<10)])
	}
	if t.Failed() {
		t.Logf("gateway %s (%s) stderr, last 8KiB:\n%s", g.name, g.proxy, g.stderr.tail(8<<10))
	}
}

// allReady reports whether every gateway's /readyz answers status.
func allReady(gws []*gateway, status int) func() bool {
	return func() bool {
		for _, g := range gws {
			if s, _ := g.readyz(); s != status {
				return false
			}
		}
		return true
	}
}

// syncBuffer collects a child's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail returns the last n bytes, from a line start.
func (s *syncBuffer) tail(n int) string {
	out := s.String()
	if len(out) <= n {
		return out
	}
	out = out[len(out)-n:]
	if i := strings.IndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return "…\n" + out
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// redisServer is a redis-server process owned by one test, on a free
// loopback port with its files in the test's temporary directory. The shared
// server on 6379 is never touched: other packages' tests use it.
type redisServer struct {
	t    *testing.T
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
	// exited is closed once cmd has been reaped.
	exited chan struct{}
}

// startRedis starts a redis-server of the test's own, with extra args, and
// waits until it answers PING. The test's cleanup kills it. It skips the test
// (fails under ONCE_TEST_REQUIRE=1) without ONCE_TEST_REDIS_URL, which gates
// every Redis test, or without redis-server on PATH.
func startRedis(t *testing.T, args ...string) *redisServer {
	t.Helper()
	testenv.RedisURL(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		testenv.Skip(t, "redis-server is not on PATH")
	}
	s := &redisServer{t: t, dir: t.TempDir(), args: args}
	for range 5 {
		if s.port = freePort(); s.port != 0 && s.tryStart() {
			t.Cleanup(s.kill)
			return s
		}
		s.kill()
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	t.Fatalf("redis-server does not start:\n%s", log)
	return nil
}

func freePort() int {
	addr := freeAddr()
	if addr == "" {
		return 0
	}
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return n
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// url is the store URL of this server.
func (s *redisServer) url() string { return "redis://" + s.addr() + "/0" }

// start starts the server again on its port and directory (after kill).
func (s *redisServer) start() {
	s.t.Helper()
	if !s.tryStart() {
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		s.t.Fatalf("redis-server does not restart on port %d:\n%s", s.port, log)
	}
}

// tryStart runs redis-server and reports whether it answered PING within
// 20 seconds.
func (s *redisServer) tryStart() bool {
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--daemonize", "no", "--protected-mode", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}, s.args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if s.ping() {
			return true
		}
		select {
		case <-exited: // the port was taken, or a bad flag
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// ping reports whether the server answers PING.
func (s *redisServer) ping() bool {
	c, err := net.DialTimeout("tcp", s.addr(), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "+PONG"
}

// kill sends SIGKILL and reaps the process. Safe to repeat.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}
