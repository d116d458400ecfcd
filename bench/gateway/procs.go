package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// With -procs every part runs in a process of its own, as in a deployment:
// the upstream and the bare proxy are this program again (-role upstream,
// -role bare), each gateway is the real `once serve` binary, built from
// ./cmd/once, writing its request log to /dev/null, and each round's load is
// this program again (-role load), which sends back what it measured. The
// parts still share the machine's cores, but not one Go scheduler: in one
// process, a goroutine woken by the store waits behind the load
// generator's goroutines too.

// runRole runs the part of a -procs run that role names, until killed (the
// load role ends after its round).
func runRole(role, listen, target string, clients int, d time.Duration) error {
	switch role {
	case "upstream":
		return http.ListenAndServe(listen, &upstream{})
	case "bare":
		u, err := url.Parse(target)
		if err != nil {
			return err
		}
		return http.ListenAndServe(listen, bareProxy(u))
	case "load":
		u, err := url.Parse(target)
		if err != nil {
			return err
		}
		return writeRound(os.Stdout, load(u, clients, d))
	}
	return fmt.Errorf("-role %q: want upstream, bare or load", role)
}

// writeRound sends a load round to the parent: requests, errors, elapsed
// nanoseconds, then each latency in nanoseconds, all uint64 big-endian.
func writeRound(w io.Writer, x round) error {
	bw := bufio.NewWriter(w)
	for _, v := range []uint64{uint64(x.n), uint64(x.errs), uint64(x.elapsed)} {
		binary.Write(bw, binary.BigEndian, v)
	}
	for _, l := range x.lat {
		binary.Write(bw, binary.BigEndian, uint64(l))
	}
	return bw.Flush()
}

func readRound(r io.Reader) (round, error) {
	br := bufio.NewReader(r)
	var head [3]uint64
	if err := binary.Read(br, binary.BigEndian, &head); err != nil {
		return round{}, err
	}
	x := round{n: int(head[0]), errs: int(head[1]), elapsed: time.Duration(head[2])}
	x.lat = make([]time.Duration, x.n)
	for i := range x.lat {
		var v uint64
		if err := binary.Read(br, binary.BigEndian, &v); err != nil {
			return round{}, err
		}
		x.lat[i] = time.Duration(v)
	}
	return x, nil
}

// procs is the set of processes of a -procs run.
type procs struct {
	self string
	cmds []*exec.Cmd
}

func (p *procs) stop() {
	for _, c := range p.cmds {
		c.Process.Kill()
		c.Wait()
	}
}

// start starts name with args, its output going to /dev/null (the gateway
// still writes its log lines, as the in-process run formats them), and
// waits until it accepts connections on addr.
func (p *procs) start(addr, name string, args ...string) error {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = null, null
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmds = append(p.cmds, cmd)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s: not listening on %s after 10s", name, strings.Join(args, " "), addr)
		}
	}
}

// round runs one round of load at target in a process of its own and adds
// the CPU time that all the run's processes used meanwhile.
func (p *procs) round(target *url.URL, clients int, d time.Duration) (round, error) {
	before := p.cpu()
	cmd := exec.Command(p.self, "-role", "load", "-target", target.String(), "-clients", strconv.Itoa(clients), "-duration", d.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return round{}, err
	}
	if err := cmd.Start(); err != nil {
		return round{}, err
	}
	x, rerr := readRound(out)
	loadCPU := time.Duration(0)
	if err := cmd.Wait(); err == nil {
		loadCPU = processCPU(cmd.ProcessState)
	}
	if rerr != nil {
		return round{}, fmt.Errorf("load: %w", rerr)
	}
	x.cpu = p.cpu() - before + loadCPU
	return x, nil
}

// cpu returns the CPU time the long-running processes have used, from
// /proc (0 where it cannot be read).
func (p *procs) cpu() time.Duration {
	var total time.Duration
	for _, c := range p.cmds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses: utime
		// and stime are the 12th and 13th of them, in clock ticks (100/s).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			total += time.Duration(u+s) * 10 * time.Millisecond
		}
	}
	return total
}

func processCPU(ps *os.ProcessState) time.Duration { return ps.UserTime() + ps.SystemTime() }

// runProcs is run for -procs.
func runProcs(clients, rounds int, duration time.Duration, storeKind string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "once-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	onceBin := filepath.Join(dir, "once")
	if out, err := exec.Command("go", "build", "-o", onceBin, "github.com/oncehq/once/cmd/once").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/once: %v\n%s", err, out)
	}
	p := &procs{self: self}
	defer p.stop()
	addrs, err := freeAddrs(2 + 2*len(strings.Split(storeKind, ",")))
	if err != nil {
		return err
	}
	up, bareAddr := addrs[0], addrs[1]
	if err := p.start(up, self, "-role", "upstream", "-listen", up); err != nil {
		return err
	}
	if err := p.start(bareAddr, self, "-role", "bare", "-listen", bareAddr, "-target", "http://"+up); err != nil {
		return err
	}
	type contender struct {
		r   *result
		url *url.URL
	}
	bare := &result{name: "bare ReverseProxy (process)"}
	order := []contender{{bare, &url.URL{Scheme: "http", Host: bareAddr}}}
	var onces []*result
	for i, kind := range strings.Split(storeKind, ",") {
		listen, api := addrs[2+2*i], addrs[3+2*i]
		sub := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(sub, 0o700); err != nil {
			return err
		}
		err := p.start(listen, onceBin, "serve", "--listen", listen, "--api-listen", api,
			"--upstream", "http://"+up, "--store", storeURL(kind, sub))
		if err != nil {
			return err
		}
		r := &result{name: "once serve process, " + storeName(kind)}
		onces = append(onces, r)
		order = append(order, contender{r, &url.URL{Scheme: "http", Host: listen}})
	}
	fmt.Printf("gateway benchmark, one process per part: %d clients, %d alternating rounds of %v each, once on %s\n\n",
		clients, rounds, duration, storeKind)
	for i := range rounds {
		for j := range order {
			c := order[(i+j)%len(order)]
			x, err := p.round(c.url, clients, duration)
			if err != nil {
				return err
			}
			c.r.add(x)
		}
	}
	report(bare, onces)
	return nil
}

// freeAddrs returns n loopback addresses that were free a moment ago.
func freeAddrs(n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}
