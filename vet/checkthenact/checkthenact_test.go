package checkthenact

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"
)

func TestCheckThenAct(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), Analyzer, "c")
}

func TestParseSQL(t *testing.T) {
	for q, want := range map[string]stmt{
		"SELECT id FROM charges WHERE x = 'from evil'":                           {kind: "select", reads: []string{"charges"}},
		"select * from a join b on a.id = b.id for update":                       {kind: "select", reads: []string{"a", "b"}, forUpdate: true},
		"INSERT INTO `shop`.`orders` (a) VALUES (1) ON DUPLICATE KEY UPDATE a=1": {kind: "insert", writes: "orders", onConflict: true},
		"insert ignore into orders (a) values (1)":                               {kind: "insert", writes: "orders", onConflict: true},
		"WITH x AS (SELECT 1 FROM t) INSERT INTO u SELECT * FROM x":              {kind: "insert", writes: "u", reads: []string{"t", "x"}},
		"UPDATE only accounts SET b = 1 WHERE id = 1 AND version = 3":            {kind: "update", writes: "accounts", versioned: true},
		"/* c */ -- d\n update accounts set b = 1 where id = 2":                  {kind: "update", writes: "accounts"},
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE":                           {txGuard: true},
		"SELECT pg_advisory_xact_lock(hashtext($1))":                             {kind: "select", txGuard: true},
	} {
		got := parseSQL(q)
		if got.kind != want.kind || got.writes != want.writes || got.forUpdate != want.forUpdate ||
			got.onConflict != want.onConflict || got.versioned != want.versioned || got.txGuard != want.txGuard ||
			len(got.reads) != len(want.reads) {
			t.Errorf("parseSQL(%q) = %+v, want %+v", q, got, want)
		}
	}
}
