package redisstore

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// startCluster starts a Redis Cluster of three masters on free loopback ports
// and returns its redis+cluster:// URL.
func startCluster(t *testing.T) (string, []*redisServer) {
	t.Helper()
	needBinaries(t, "redis-server", "redis-cli")
	dir := t.TempDir()
	var nodes []*redisServer
	var addrs []string
	for range 3 {
		nodes = append(nodes, startClusterNode(t, dir))
		addrs = append(addrs, nodes[len(nodes)-1].addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range nodes {
		waitClusterOK(t, n)
	}
	return "redis+cluster://" + strings.Join(addrs, ","), nodes
}

// startClusterNode starts a redis-server in cluster mode, its files in a
// directory of its own under dir.
func startClusterNode(t *testing.T, dir string) *redisServer {
	t.Helper()
	port := freePort(t)
	ndir := filepath.Join(dir, strconv.Itoa(port))
	return startRedis(t, ndir, port,
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(ndir, "nodes.conf"),
		"--cluster-node-timeout", "5000", "--appendonly", "no")
}

func waitClusterOK(t *testing.T, n *redisServer) {
	t.Helper()
	waitUntil(t, 30*time.Second, "cluster_state:ok on "+n.addr(), func() bool {
		info, err := n.command("CLUSTER INFO")
		return err == nil && strings.Contains(info, "cluster_state:ok")
	})
}

// TestCluster runs the conformance suite, and Watch, against a real
// three-master Redis Cluster that the test starts and kills.
func TestCluster(t *testing.T) {
	url, nodes := startCluster(t)
	base := openTest(t, url, Config{})
	if base.client.Mode() != "cluster" {
		t.Fatalf("client mode %v, want cluster", base.client.Mode())
	}
	t.Run("Conformance", func(t *testing.T) { runConformance(t, base) })
	t.Run("WatchOnEveryShard", func(t *testing.T) { testWatchShards(t, base) })
	t.Run("KeysOnEveryShard", func(t *testing.T) {
		for _, n := range nodes {
			size, err := n.command("DBSIZE")
			if err != nil || size == ":0" {
				t.Errorf("node %s holds %q keys (%v): records are not spread over the shards", n.addr(), size, err)
			}
		}
	})
	t.Run("WaitReplicasOnCluster", func(t *testing.T) {
		// No replicas: the wait fails, but the script and WAIT reach the
		// key's own shard on one connection.
		w, err := New(base.client, Config{Prefix: base.prefix, WaitReplicas: 1, WaitTimeout: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			k := once.Key{ID: fmt.Sprintf("wait-%d", i)}
			_, err := w.Claim(ctx, claimReq(k, time.Minute, time.Minute))
			wantErr(t, err, once.ErrUnavailable)
			if strings.Contains(err.Error(), "MOVED") || !strings.Contains(err.Error(), "0 of 1") {
				t.Fatalf("claim on a cluster with WAIT: %v", err)
			}
		}
	})
}

// testWatchShards: watchers of keys in slots on different shards all wake.
func testWatchShards(t *testing.T, s *Store) {
	const n = 12
	chans := make([]<-chan struct{}, n)
	tokens := make([]uint64, n)
	for i := range n {
		k := once.Key{Scope: "watch", ID: fmt.Sprintf("k%d", i)}
		tokens[i] = mustClaim(t, s, claimReq(k, time.Minute, time.Minute)).Token
		ch, stop := mustWatch(t, s, k)
		t.Cleanup(stop)
		chans[i] = ch
	}
	for i := range n {
		k := once.Key{Scope: "watch", ID: fmt.Sprintf("k%d", i)}
		if err := s.Complete(ctx, k, tokens[i], once.Result{Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, chans[i], 5*time.Second, k.ID)
	}
}
