package diagnose

import (
	"strings"
	"unicode"
)

// role is what a log field means to diagnose.
type role uint8

const (
	roleOther role = iota
	roleTime
	roleMsg
	roleLevel
	roleCorr
	roleAttempt
	roleVersion
	roleKey // an idempotency or dedup key: evidence, never an entity
	roleMethod
	rolePath
	roleHost
	roleError
	roleStatus // status/result/outcome: its value may say "skipped", "duplicate"…
	roleFlag   // applied/ok/success: false means the step did not take effect
	roleEntity
	roleSecret // never read, never printed
)

// fieldInfo is the classification of one field name, cached per name.
type fieldInfo struct {
	role     role
	rank     int    // priority among fields of the same role (lower wins)
	effectID bool   // an id that names a produced effect (charge_id, db_id…)
	name     string // the name as logged, interned
}

// msgFields, timeFields, corrFields, … list the recognised names after
// normalize, in priority order.
var (
	timeFields    = []string{"time", "ts", "timestamp", "at_timestamp", "datetime", "date_time", "logged_at"}
	msgFields     = []string{"msg", "message", "event"}
	levelFields   = []string{"level", "lvl", "severity", "log_level", "level_name"}
	corrFields    = []string{"request_id", "req_id", "x_request_id", "requestid", "correlation_id", "corr_id", "correlationid", "trace_id", "traceid", "job_id", "task_id", "message_id", "msg_id", "delivery_id", "event_id", "run_id", "workflow_id", "operation_id"}
	attemptFields = []string{"attempt", "attempts", "attempt_number", "attempt_count", "retry", "retries", "retry_count", "retry_attempt", "delivery_attempt", "try"}
	versionFields = []string{"version", "seq", "sequence", "revision", "rev", "event_version", "entity_version", "aggregate_version", "sequence_number", "seq_no"}
	keyFields     = []string{"idempotency_key", "idempotencykey", "idem_key", "idempotent_key", "dedup_key", "dedupe_key", "deduplication_key", "request_key"}
	methodFields  = []string{"method", "http_method", "request_method", "http_request_method"}
	pathFields    = []string{"path", "url", "uri", "route", "http_path", "http_url", "request_path", "request_uri", "http_target", "url_path", "http_route"}
	hostFields    = []string{"host", "http_host", "server_address"}
	errorFields   = []string{"error", "err", "exception", "error_message", "err_msg", "error_msg"}
	statusFields  = []string{"status", "result", "outcome", "state_change", "decision", "action_result"}
	flagFields    = []string{"applied", "ok", "success", "succeeded", "updated", "inserted", "created"}
)

// entityNames are field names that identify what was touched, besides *_id.
var entityNames = set("user", "username", "user_name", "customer", "account", "product", "order",
	"email", "user_email", "sku", "item", "cart", "subscription", "invoice", "tenant", "org",
	"organization", "team", "project", "profile", "document", "doc", "resource", "entity",
	"cache_key", "key", "row", "record", "phone", "slug", "handle", "booking", "reservation",
	"ticket", "seat", "coupon", "wallet", "listing", "post", "comment", "workspace", "aggregate")

// infraIDs are *_id fields that identify infrastructure or tracing, not the
// thing a request touched.
var infraIDs = set("span_id", "parent_span_id", "parent_id", "session_id", "pod_id", "node_id",
	"instance_id", "worker_id", "thread_id", "goroutine_id", "process_id", "host_id",
	"machine_id", "container_id", "conn_id", "connection_id", "client_id", "device_id",
	"build_id", "deploy_id", "release_id", "region_id", "shard_id", "partition_id", "log_id",
	"line_id", "caller_id", "consumer_id", "producer_id", "trace_flags", "otel_span_id", "otel_trace_id",
	"dd_span_id", "dd_trace_id", "app_id", "service_id", "cluster_id", "zone_id", "batch_id")

// effectIDs are id fields that name a produced effect (a charge, a row).
var effectIDs = set("charge_id", "stripe_id", "payment_id", "payment_intent", "payment_intent_id",
	"transaction_id", "txn_id", "refund_id", "receipt_id", "db_id", "row_id", "insert_id",
	"inserted_id", "created_id", "charge")

var secretWords = []string{"password", "passwd", "secret", "token", "authorization", "api_key", "apikey", "cookie", "credential", "private_key", "card_number", "cvv"}

func set(xs ...string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// normalize turns a field name into lower snake case: "userId" → "user_id",
// "http.method" → "http_method", "@timestamp" → "at_timestamp",
// "requestID" → "request_id".
func normalize(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		switch {
		case r == '@':
			if i == 0 {
				b.WriteString("at_")
			}
		case r == '.' || r == '-' || r == ' ' || r == '_' || r == '/':
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
				b.WriteByte('_')
			}
		case unicode.IsUpper(r):
			prevLower := i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]))
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1]) && i > 0 && unicode.IsUpper(rs[i-1])
			if (prevLower || nextLower) && b.Len() > 0 && !strings.HasSuffix(b.String(), "_") {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
		default:
			b.WriteRune(r)
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}

// classifier maps field names to roles, honouring an --entity override.
type classifier struct {
	entities map[string]bool // normalized names; nil means auto-detect
	cache    map[string]fieldInfo
}

func newClassifier(entity []string) *classifier {
	c := &classifier{cache: map[string]fieldInfo{}}
	if len(entity) > 0 {
		c.entities = map[string]bool{}
		for _, e := range entity {
			if e = strings.TrimSpace(e); e != "" {
				c.entities[normalize(e)] = true
			}
		}
	}
	return c
}

// maxCachedNames bounds the name cache, so logs with unbounded field names
// (ids used as keys) cannot grow it without limit.
const maxCachedNames = 1 << 14

func (c *classifier) info(name []byte) fieldInfo {
	if fi, ok := c.cache[string(name)]; ok {
		return fi
	}
	s := string(name)
	fi := c.classify(s)
	if len(c.cache) < maxCachedNames {
		c.cache[s] = fi
	}
	return fi
}

func (c *classifier) classify(name string) fieldInfo {
	fi := c.classifyNorm(name, normalize(name))
	if i := strings.LastIndexByte(name, '.'); i >= 0 && (fi.role == roleOther || fi.role == roleEntity) {
		// A nested member such as http.request_id: its own name may say more.
		if last := c.classifyNorm(name, normalize(name[i+1:])); last.role != roleOther && last.role != roleEntity {
			return last
		}
	}
	return fi
}

func (c *classifier) classifyNorm(name, n string) fieldInfo {
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return fieldInfo{role: roleSecret, name: name}
		}
	}
	if c.entities != nil && c.entities[n] {
		return fieldInfo{role: roleEntity, name: name, effectID: effectIDs[n]}
	}
	lists := []struct {
		r     role
		names []string
	}{
		{roleTime, timeFields}, {roleMsg, msgFields}, {roleLevel, levelFields},
		{roleCorr, corrFields}, {roleAttempt, attemptFields}, {roleVersion, versionFields},
		{roleKey, keyFields}, {roleMethod, methodFields}, {rolePath, pathFields},
		{roleHost, hostFields}, {roleError, errorFields}, {roleStatus, statusFields},
		{roleFlag, flagFields},
	}
	for _, l := range lists {
		for i, x := range l.names {
			if n == x {
				return fieldInfo{role: l.r, rank: i, name: name}
			}
		}
	}
	if c.entities == nil && isEntityName(n) {
		return fieldInfo{role: roleEntity, name: name, effectID: effectIDs[n]}
	}
	if c.entities != nil && effectIDs[n] {
		// Not an entity under --entity, but still evidence of an effect.
		return fieldInfo{role: roleEntity, name: name, effectID: true}
	}
	return fieldInfo{role: roleOther, name: name}
}

// isEntityName reports whether a normalized name identifies what was touched.
func isEntityName(n string) bool {
	if infraIDs[n] {
		return false
	}
	if entityNames[n] || effectIDs[n] || n == "id" || n == "uuid" {
		return true
	}
	for _, suf := range []string{"_id", "_uuid", "_email", "_key", "_sku"} {
		if strings.HasSuffix(n, suf) {
			return true
		}
	}
	return false
}
