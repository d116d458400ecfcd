package redisstore

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Options is what a store URL says: how to reach Redis and the store's
// Config. ParseURL returns it; Open uses it.
type Options struct {
	// Client configures the rueidis client.
	Client rueidis.ClientOption
	// Cluster reports a redis+cluster:// URL.
	Cluster bool
	// Config holds the store options given in the query.
	Config Config
}

// urlOptions are the query options ParseURL accepts, for error messages.
const urlOptions = "prefix, wait_replicas, wait_timeout, batch, dial_timeout, write_timeout, client_name, skip_verify"

// batchModes are the values of the option batch.
var batchModes = map[string]Batching{"auto": BatchAuto, "on": BatchOn, "off": BatchOff}

// ParseURL parses a store URL:
//
//	redis://[user:pass@]host[:port][/db][?options]
//	rediss://...                          (TLS)
//	redis+cluster://[user:pass@]host:port,host:port[?options]
//	rediss+cluster://...                  (cluster over TLS)
//
// The port defaults to 6379 and the database to 0; a cluster has only
// database 0. Options: prefix (key prefix, see Config.Prefix), wait_replicas
// and wait_timeout (see Config), batch (see Config.Batching: auto, the
// default, batches once a probe finds that keys reach one server; on batches
// without asking, only for a direct connection to one Redis primary; off
// never batches), dial_timeout and write_timeout (Go durations),
// client_name, and skip_verify (TLS only; true skips certificate checks). An
// unknown option is an error. Errors never quote the URL, which may hold a
// password.
func ParseURL(raw string) (Options, error) {
	var o Options
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return o, errors.New("redisstore: store URL needs a scheme, such as redis://host:6379/0")
	}
	// A cluster's host list ("a:1,b:2") is not a host net/url accepts:
	// take it out and parse the rest.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	hostList := rest[at+1 : end]
	u, err := url.Parse(scheme + "://" + rest[:at+1] + "host" + rest[end:])
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return o, fmt.Errorf("redisstore: store URL: %w", err)
	}
	tlsOn, err := parseScheme(u.Scheme, &o)
	if err != nil {
		return o, err
	}
	if err := parseHosts(hostList, tlsOn, &o); err != nil {
		return o, err
	}
	if u.User != nil {
		o.Client.Username = u.User.Username()
		o.Client.Password, _ = u.User.Password()
	}
	if err := parseDB(u.Path, &o); err != nil {
		return o, err
	}
	if u.Fragment != "" {
		return o, errors.New("redisstore: store URL: a fragment (#...) is not allowed")
	}
	return o, parseQuery(u.RawQuery, &o)
}

func parseScheme(scheme string, o *Options) (tlsOn bool, err error) {
	switch strings.ToLower(scheme) {
	case "redis":
	case "rediss":
		tlsOn = true
	case "redis+cluster":
		o.Cluster = true
	case "rediss+cluster":
		o.Cluster, tlsOn = true, true
	default:
		return false, fmt.Errorf("redisstore: store URL scheme %q: want redis, rediss, redis+cluster or rediss+cluster", scheme)
	}
	return tlsOn, nil
}

func parseHosts(hostList string, tlsOn bool, o *Options) error {
	hosts := strings.Split(hostList, ",")
	if len(hosts) > 1 && !o.Cluster {
		return errors.New("redisstore: store URL: several hosts need redis+cluster://")
	}
	for _, h := range hosts {
		if h == "" {
			return errors.New("redisstore: store URL: empty host")
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = h, "6379"
			if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
				host = h[1 : len(h)-1]
			} else if strings.Contains(h, ":") {
				return fmt.Errorf("redisstore: store URL: host %q: want host, host:port or [ipv6]:port", h)
			}
		}
		if host == "" || strings.ContainsAny(host, " []@/?#%\\") {
			return fmt.Errorf("redisstore: store URL: host %q is not a host name or address", host)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("redisstore: store URL: port %q is not a number from 1 to 65535", port)
		}
		o.Client.InitAddress = append(o.Client.InitAddress, net.JoinHostPort(host, port))
	}
	if tlsOn {
		host, _, _ := net.SplitHostPort(o.Client.InitAddress[0])
		o.Client.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	}
	return nil
}

func parseDB(path string, o *Options) error {
	db := strings.TrimPrefix(path, "/")
	if db == "" {
		return nil
	}
	n, err := strconv.Atoi(db)
	if err != nil || n < 0 {
		return fmt.Errorf("redisstore: store URL: database %q is not a non-negative number", db)
	}
	if o.Cluster && n != 0 {
		return fmt.Errorf("redisstore: store URL: a cluster has only database 0, not %d", n)
	}
	o.Client.SelectDB = n
	return nil
}

func parseQuery(rawQuery string, o *Options) error {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return fmt.Errorf("redisstore: store URL query: %w", err)
	}
	for name, vals := range q {
		if len(vals) != 1 {
			return fmt.Errorf("redisstore: store URL option %s given %d times", name, len(vals))
		}
		if err := setOption(name, vals[0], o); err != nil {
			return fmt.Errorf("redisstore: store URL option %s: %w", name, err)
		}
	}
	return nil
}

func setOption(name, v string, o *Options) (err error) {
	switch name {
	case "prefix":
		o.Config.Prefix = v
		return checkPrefix(v)
	case "wait_replicas":
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a non-negative number", v)
		}
		o.Config.WaitReplicas = n
	case "wait_timeout":
		o.Config.WaitTimeout, err = parseDuration(v)
	case "batch":
		m, ok := batchModes[v]
		if !ok {
			return fmt.Errorf("%q: want auto, on or off", v)
		}
		o.Config.Batching = m
	case "dial_timeout":
		o.Client.Dialer.Timeout, err = parseDuration(v)
	case "write_timeout":
		o.Client.ConnWriteTimeout, err = parseDuration(v)
	case "client_name":
		o.Client.ClientName = v
	case "skip_verify":
		if o.Client.TLSConfig == nil {
			return errors.New("only with rediss:// (TLS)")
		}
		o.Client.TLSConfig.InsecureSkipVerify, err = strconv.ParseBool(v)
	default:
		return fmt.Errorf("unknown (known: %s)", urlOptions)
	}
	return err
}

func parseDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as 500ms", v)
	}
	return d, nil
}

func checkPrefix(p string) error {
	if strings.ContainsAny(p, "{}") {
		return fmt.Errorf("prefix %q contains '{' or '}', which would break cluster hash tags", p)
	}
	return nil
}
