package redisstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		url     string
		addrs   []string
		cluster bool
		tls     bool
		db      int
		user    string
		pass    string
		cfg     Config
	}{
		{url: "redis://127.0.0.1:6379/0", addrs: []string{"127.0.0.1:6379"}},
		{url: "redis://h", addrs: []string{"h:6379"}},
		{url: "redis://h:7000/3", addrs: []string{"h:7000"}, db: 3},
		{url: "redis://[::1]:6380/1", addrs: []string{"[::1]:6380"}, db: 1},
		{url: "redis://u:p%40ss@h:1/", addrs: []string{"h:1"}, user: "u", pass: "p@ss"},
		{url: "redis://:secret@h", addrs: []string{"h:6379"}, pass: "secret"},
		{url: "rediss://h:6380", addrs: []string{"h:6380"}, tls: true},
		{url: "REDIS://h", addrs: []string{"h:6379"}},
		{url: "redis+cluster://a:7101,b:7102,c", addrs: []string{"a:7101", "b:7102", "c:6379"}, cluster: true},
		{url: "rediss+cluster://a:1,b:2/0", addrs: []string{"a:1", "b:2"}, cluster: true, tls: true},
		{
			url:   "redis://h?prefix=app:&wait_replicas=2&wait_timeout=250ms",
			addrs: []string{"h:6379"}, cfg: Config{Prefix: "app:", WaitReplicas: 2, WaitTimeout: 250 * time.Millisecond},
		},
		{url: "redis://h?batch=off", addrs: []string{"h:6379"}, cfg: Config{Batching: BatchOff}},
		{url: "redis://h?batch=on", addrs: []string{"h:6379"}, cfg: Config{Batching: BatchOn}},
		{url: "redis://h?batch=auto", addrs: []string{"h:6379"}},
	}
	for _, c := range cases {
		o, err := ParseURL(c.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", c.url, err)
			continue
		}
		if !slices.Equal(o.Client.InitAddress, c.addrs) || o.Cluster != c.cluster || (o.Client.TLSConfig != nil) != c.tls ||
			o.Client.SelectDB != c.db || o.Client.Username != c.user || o.Client.Password != c.pass || o.Config != c.cfg {
			t.Errorf("ParseURL(%q) = %v %v tls=%v db=%d user=%q cfg=%+v", c.url, o.Client.InitAddress, o.Cluster,
				o.Client.TLSConfig != nil, o.Client.SelectDB, o.Client.Username, o.Config)
		}
	}
	o, err := ParseURL("redis://h?dial_timeout=2s&write_timeout=3s&client_name=svc")
	if err != nil || o.Client.Dialer.Timeout != 2*time.Second || o.Client.ConnWriteTimeout != 3*time.Second || o.Client.ClientName != "svc" {
		t.Errorf("connection options: %+v, %v", o.Client, err)
	}
	o, err = ParseURL("rediss://h?skip_verify=true")
	if err != nil || !o.Client.TLSConfig.InsecureSkipVerify || o.Client.TLSConfig.ServerName != "h" {
		t.Errorf("skip_verify: %v", err)
	}
}

func TestParseURLErrors(t *testing.T) {
	cases := map[string]string{
		"":                                 "scheme",
		"127.0.0.1:6379":                   "scheme",
		"http://h":                         "scheme",
		"postgres://h/db":                  "scheme",
		"redis://":                         "empty host",
		"redis://a:1,b:2":                  "redis+cluster",
		"redis+cluster://a:1,,b:2":         "empty host",
		"redis://h:0":                      "port",
		"redis://h:99999":                  "port",
		"redis://h/x":                      "database",
		"redis://h/-1":                     "database",
		"redis://h/1/2":                    "database",
		"redis+cluster://a:1/2":            "only database 0",
		"redis://h?bogus=1":                "unknown",
		"redis://h?prefix=a{b":             "hash tags",
		"redis://h?prefix=a&prefix=b":      "2 times",
		"redis://h?wait_replicas=-1":       "wait_replicas",
		"redis://h?wait_replicas=x":        "wait_replicas",
		"redis://h?wait_timeout=0s":        "positive duration",
		"redis://h?wait_timeout=soon":      "positive duration",
		"redis://h?dial_timeout=-1s":       "positive duration",
		"redis://h?skip_verify=true":       "TLS",
		"redis://h?batch=false":            "want auto, on or off",
		"rediss://h?skip_verify=maybe":     "skip_verify",
		"redis://h#frag":                   "fragment",
		"redis://h?%zz":                    "query",
		"redis://user:hunter2@h?bogus=1":   "unknown",
		"redis://user:hunter2@h:port":      "port",
		"redis://user:hunter2@h/notadb":    "database",
		"redis://user:hunter2@[::1:6379/0": "store URL",
	}
	for url, want := range cases {
		_, err := ParseURL(url)
		if err == nil {
			t.Errorf("ParseURL(%q) succeeded", url)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURL(%q) = %v, want it to mention %q", url, err, want)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURL(%q) leaks the password: %v", url, err)
		}
	}
}

// TestMergeBatching: batch= in the URL overrides Config.Batching; a URL
// without it keeps the Config's.
func TestMergeBatching(t *testing.T) {
	for _, c := range []struct{ cfg, url, want Batching }{
		{BatchOn, BatchAuto, BatchOn},
		{BatchOff, BatchAuto, BatchOff},
		{BatchOn, BatchOff, BatchOff},
		{BatchOff, BatchOn, BatchOn},
		{BatchAuto, BatchOn, BatchOn},
	} {
		if got := mergeConfig(Config{Batching: c.cfg}, Config{Batching: c.url}).Batching; got != c.want {
			t.Errorf("Config %d, URL %d: %d, want %d", c.cfg, c.url, got, c.want)
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens there.
	_, err := Open(c, "redis://127.0.0.1:1/0?dial_timeout=200ms", Config{})
	if !errors.Is(err, once.ErrUnavailable) {
		t.Fatalf("Open of an unreachable server: %v, want ErrUnavailable", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(nil, Config{Prefix: "x}"}); err == nil {
		t.Error("prefix with '}' accepted")
	}
	if _, err := New(nil, Config{WaitReplicas: -1}); !errors.Is(err, once.ErrInvalidArgument) {
		t.Errorf("negative WaitReplicas: %v", err)
	}
	if _, err := New(nil, Config{Batching: BatchOff + 1}); !errors.Is(err, once.ErrInvalidArgument) {
		t.Errorf("unknown Batching: %v", err)
	}
}

// FuzzParseURL: any input gives a result or an error, never a panic, and an
// error never quotes the password.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379/0", "rediss://u:p@h:6380/2?skip_verify=true",
		"redis+cluster://a:7101,b:7102?prefix=x:&wait_replicas=1&wait_timeout=1s",
		"redis://h?bogus=1", "redis://[::1]:6379", "redis://h/1/2", "redis://a,b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		o, err := ParseURL(raw)
		if err != nil {
			return
		}
		if len(o.Client.InitAddress) == 0 {
			t.Fatalf("ParseURL(%q): no address", raw)
		}
		if strings.ContainsAny(o.Config.Prefix, "{}") {
			t.Fatalf("ParseURL(%q): prefix %q breaks hash tags", raw, o.Config.Prefix)
		}
	})
}
