package checkthenact

import (
	"regexp"
	"strings"
)

// stmt is what the analyzer needs to know of one SQL statement.
type stmt struct {
	kind   string   // "select", "insert", "update", or "" for anything else
	reads  []string // tables read (FROM, JOIN)
	writes string   // table inserted into or updated
	// Guards that make a check and its act atomic.
	forUpdate  bool // SELECT … FOR UPDATE / FOR NO KEY UPDATE / FOR SHARE
	onConflict bool // INSERT … ON CONFLICT / ON DUPLICATE KEY / INSERT IGNORE / MERGE
	versioned  bool // UPDATE … WHERE version = … (optimistic concurrency)
	txGuard    bool // SERIALIZABLE, an advisory lock or LOCK TABLE
}

var (
	reComment   = regexp.MustCompile(`(?s)--[^\n]*|/\*.*?\*/`)
	reString    = regexp.MustCompile(`'(?:[^']|'')*'`)
	reSpace     = regexp.MustCompile(`\s+`)
	reFrom      = regexp.MustCompile(`\b(?:from|join)\s+([a-z0-9_."` + "`" + `\[\]]+)`)
	reInto      = regexp.MustCompile(`^(?:insert|replace)\s+(?:ignore\s+|or\s+\w+\s+)?into\s+([a-z0-9_."` + "`" + `\[\]]+)`)
	reUpdate    = regexp.MustCompile(`^update\s+(?:only\s+)?([a-z0-9_."` + "`" + `\[\]]+)`)
	reForUpdate = regexp.MustCompile(`\bfor\s+(?:no\s+key\s+)?(?:update|share)\b`)
	reConflict  = regexp.MustCompile(`\bon\s+conflict\b|\bon\s+duplicate\s+key\b|^insert\s+ignore\b|^insert\s+or\s+(?:ignore|replace)\b|^merge\b`)
	reVersioned = regexp.MustCompile(`\bwhere\b.*\b(?:version|lock_version|revision|rev|updated_at|xmin|etag|seq)\b\s*(?:=|<|is)`)
	reTxGuard   = regexp.MustCompile(`\bserializable\b|\bpg_advisory(?:_xact)?_lock\b|\bget_lock\s*\(|\block\s+table\b`)
	reCTE       = regexp.MustCompile(`^with\s+(?:recursive\s+)?`)
)

// parseSQL reads the statement kind, its tables and its guards. It is a
// lexical reading, not a parser: enough for the statements people pass to
// Query and Exec as constants.
func parseSQL(q string) stmt {
	s := strings.ToLower(q)
	s = reComment.ReplaceAllString(s, " ")
	s = reString.ReplaceAllString(s, "''")
	s = strings.TrimSpace(reSpace.ReplaceAllString(s, " "))
	st := stmt{txGuard: reTxGuard.MatchString(s), forUpdate: reForUpdate.MatchString(s)}
	main := s
	if reCTE.MatchString(s) {
		main = afterCTE(s)
	}
	switch {
	case strings.HasPrefix(main, "select"):
		st.kind = "select"
	case strings.HasPrefix(main, "insert"), strings.HasPrefix(main, "replace"):
		st.kind = "insert"
		if m := reInto.FindStringSubmatch(main); m != nil {
			st.writes = table(m[1])
		}
		st.onConflict = reConflict.MatchString(main)
	case strings.HasPrefix(main, "merge"):
		st.kind, st.onConflict = "insert", true
	case strings.HasPrefix(main, "update"):
		st.kind = "update"
		if m := reUpdate.FindStringSubmatch(main); m != nil {
			st.writes = table(m[1])
		}
		st.versioned = reVersioned.MatchString(main)
	}
	for _, m := range reFrom.FindAllStringSubmatch(s, -1) {
		if t := table(m[1]); t != "" && t != st.writes {
			st.reads = append(st.reads, t)
		}
	}
	if st.kind == "select" && st.writes == "" {
		st.reads = dedup(st.reads)
	}
	return st
}

// afterCTE returns the statement that follows a WITH clause's definitions.
func afterCTE(s string) string {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		default:
			if depth == 0 {
				for _, kw := range []string{"select", "insert", "update", "delete", "merge"} {
					if strings.HasPrefix(s[i:], kw) && (i == 0 || s[i-1] == ' ' || s[i-1] == ')') {
						return s[i:]
					}
				}
			}
		}
	}
	return s
}

// table normalises a table name: no quotes, no schema.
func table(t string) string {
	t = strings.Trim(t, "\"`[]")
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		t = strings.Trim(t[i+1:], "\"`[]")
	}
	switch t {
	case "", "select", "lateral", "unnest", "only":
		return ""
	}
	return t
}

func dedup(xs []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
