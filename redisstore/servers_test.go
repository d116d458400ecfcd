package redisstore

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once/internal/testenv"
)

// These helpers run redis-server processes owned by a test, in its temporary
// directory, on free loopback ports. The tests that use them are gated on
// ONCE_TEST_REDIS_URL too, so that a plain `go test ./...` skips them fast.

// needBinaries skips the test (fails under ONCE_TEST_REQUIRE=1) unless the
// Redis URL is set and the named programs are on PATH.
func needBinaries(t *testing.T, names ...string) {
	t.Helper()
	testenv.RedisURL(t)
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			testenv.Skip(t, n+" is not on PATH")
		}
	}
}

// freePort returns a loopback port that is free, and whose cluster bus port
// (port + 10000) is free as well.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		bus.Close()
		return port
	}
	t.Fatal("no free port pair found")
	return 0
}

// redisServer is a redis-server process.
type redisServer struct {
	t    *testing.T
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

// startRedis starts redis-server on port with its files in dir, plus args,
// and waits until it answers PING. The test's cleanup kills it.
func startRedis(t *testing.T, dir string, port int, args ...string) *redisServer {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := &redisServer{t: t, port: port, dir: dir, args: args}
	srv.start()
	t.Cleanup(srv.kill)
	return srv
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

func (s *redisServer) start() {
	s.t.Helper()
	args := append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--daemonize", "no", "--protected-mode", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}, s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		reply, err := s.command("PING")
		if err == nil && reply == "+PONG" {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on port %d does not answer PING (last: %q, %v); log:\n%s", s.port, reply, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and reaps the process. Safe to call twice.
func (s *redisServer) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// restart starts the process again with the same port, directory and args.
func (s *redisServer) restart() {
	s.t.Helper()
	s.kill()
	s.start()
}

// command sends one inline command and returns the first line of the reply
// (for a bulk reply, its whole body).
func (s *redisServer) command(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", s.addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return line, nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return line, err
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", err
	}
	return string(body[:n]), nil
}

// waitUntil polls cond until it holds or the timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
