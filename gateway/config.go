package gateway

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/oncehq/once/oncehttp"
)

// Rule holds the settings of the paths under a prefix, from the config file.
type Rule struct {
	// Prefix matches a path equal to it or under it.
	Prefix string
	// Methods that need a key; nil means the global --methods.
	Methods []string
	// TTL is the retention of the route's keys; 0 means the global --ttl.
	TTL time.Duration
	// Required, if set, overrides --require-key.
	Required *bool
	// Key is where the key comes from; the zero value is Idempotency-Key.
	Key oncehttp.KeySource
}

// File is a parsed config file.
type File struct {
	// Settings are the top-level scalars, by flag name (dashes, not
	// underscores): defaults for the flags of "once serve". A list is
	// joined with commas.
	Settings map[string]string
	// Rules are the per-route rules, in file order.
	Rules []Rule
}

// LoadConfig reads and parses the YAML config file at path (see ParseConfig).
func LoadConfig(path string) (File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("config: %w", err)
	}
	f, err := ParseConfig(data)
	if err != nil {
		return File{}, fmt.Errorf("config %s: %w", path, err)
	}
	return f, nil
}

// ParseConfig parses a YAML config file:
//
//	upstream: http://127.0.0.1:3000   # any flag of once serve, by name
//	ttl: 24h
//	routes:
//	  - path: /webhooks/github        # a path prefix ("prefix:" works too)
//	    key: header:X-GitHub-Delivery # or json:/id (RFC 6901), default Idempotency-Key
//	    methods: [POST]
//	    ttl: 72h
//	    required: true
//
// routes may also be a mapping from path prefix to rule. Unknown fields are
// errors that name their line.
func ParseConfig(data []byte) (File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return File{}, err
	}
	f := File{Settings: map[string]string{}}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return f, nil
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return File{}, fmt.Errorf("line %d: want a mapping of settings and routes", top.Line)
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		name := strings.ReplaceAll(k.Value, "_", "-")
		var err error
		if name == "routes" {
			f.Rules, err = parseRoutes(v)
		} else {
			f.Settings[name], err = scalarOrList(v)
		}
		if err != nil {
			return File{}, fmt.Errorf("%s: %w", k.Value, err)
		}
	}
	return f, nil
}

// parseRoutes parses a sequence of rules or a mapping from prefix to rule.
func parseRoutes(n *yaml.Node) ([]Rule, error) {
	var rules []Rule
	switch n.Kind {
	case yaml.SequenceNode:
		for _, item := range n.Content {
			r, err := parseRule(item, "")
			if err != nil {
				return nil, err
			}
			rules = append(rules, r)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			r, err := parseRule(n.Content[i+1], n.Content[i].Value)
			if err != nil {
				return nil, err
			}
			rules = append(rules, r)
		}
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		fallthrough
	default:
		return nil, fmt.Errorf("line %d: want a list of routes", n.Line)
	}
	return rules, nil
}

// parseRule parses one rule; prefix is its key when routes is a mapping.
func parseRule(n *yaml.Node, prefix string) (Rule, error) {
	r := Rule{Prefix: prefix}
	if n.Kind != yaml.MappingNode {
		return Rule{}, fmt.Errorf("line %d: a route is a mapping (path, key, methods, ttl, required)", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := r.set(k.Value, v); err != nil {
			return Rule{}, fmt.Errorf("line %d: route field %s: %w", k.Line, k.Value, err)
		}
	}
	if r.Prefix == "" || r.Prefix[0] != '/' {
		return Rule{}, fmt.Errorf("line %d: route needs a path prefix starting with /, got %q", n.Line, r.Prefix)
	}
	return r, nil
}

func (r *Rule) set(field string, v *yaml.Node) error {
	s, err := scalarOrList(v)
	if err != nil {
		return err
	}
	switch strings.ReplaceAll(field, "-", "_") {
	case "path", "prefix":
		r.Prefix = s
	case "methods", "method":
		r.Methods, err = ParseMethods(s)
	case "ttl":
		r.TTL, err = time.ParseDuration(s)
		if err == nil && r.TTL <= 0 {
			err = fmt.Errorf("%q: must be positive", s)
		}
	case "required", "require_key":
		var b bool
		b, err = strconv.ParseBool(s)
		r.Required = &b
	case "key", "key_source", "source":
		r.Key, err = oncehttp.ParseKeySource(s)
	default:
		return errors.New("unknown field (want path, key, methods, ttl, required)")
	}
	return err
}

// scalarOrList returns a scalar's value, or a list of scalars joined by
// commas.
func scalarOrList(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Value, nil
	case yaml.SequenceNode:
		var parts []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("line %d: want a list of values", c.Line)
			}
			parts = append(parts, c.Value)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("line %d: want a value or a list", n.Line)
}

// ParseMethods parses a comma-separated list of HTTP methods ("POST,PATCH"),
// upper-casing them.
func ParseMethods(s string) ([]string, error) {
	var out []string
	for _, m := range strings.Split(s, ",") {
		m = strings.ToUpper(strings.TrimSpace(m))
		if m == "" {
			continue
		}
		if strings.ContainsFunc(m, func(r rune) bool { return r < 'A' || r > 'Z' }) {
			return nil, fmt.Errorf("method %q: want letters only, e.g. POST", m)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("methods %q: want at least one, e.g. POST,PATCH", s)
	}
	return out, nil
}

// ParseSize parses a byte size: a number of bytes ("1048576") or a number
// with a unit: KiB, MiB, GiB (powers of 1024; K, M, G too), KB, MB, GB
// (powers of 1000), B. Units are case-insensitive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("size %q: want bytes or a number with a unit, e.g. 1MiB, 512KiB, 1048576", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f*float64(mult) > math.MaxInt64 {
		return 0, fmt.Errorf("size %q: not a number in range", s)
	}
	return int64(f * float64(mult)), nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1000,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000,
}

// FormatSize formats n bytes the way ParseSize reads it, in the largest binary
// unit that divides it.
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		v    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}
