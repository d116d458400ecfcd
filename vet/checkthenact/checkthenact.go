// Package checkthenact defines an analyzer that reports check-then-act races
// inside one function:
//
//   - a SQL SELECT on a table (a string constant passed to a Query, QueryRow,
//     Exec, Get, Select… method of database/sql, pgx, sqlx or a wrapper)
//     followed by an INSERT or UPDATE of the same table, with no ON CONFLICT,
//     no FOR UPDATE, no SERIALIZABLE transaction or advisory lock, and (for
//     UPDATE) no version condition — seed 000's and seed 002's bug;
//   - a map or cache read and a write of the same key in two critical
//     sections, with an unlock in between, and a sync.Map Load followed by a
//     Store of the same key instead of LoadOrStore.
//
// Two concurrent calls can both pass the check before either acts.
package checkthenact

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/token"
	"go/types"

	"golang.org/x/tools/go/analysis"
)

// Analyzer is the checkthenact analyzer.
var Analyzer = &analysis.Analyzer{
	Name: "checkthenact",
	Doc:  "report a SELECT then INSERT/UPDATE of the same table, or a map/cache get-then-set across an unlock, that two concurrent calls can both pass",
	URL:  "https://github.com/oncehq/once/blob/main/docs/vet.md#checkthenact",
	Run:  run,
}

// queryMethods are the methods of database/sql, pgx and sqlx (and of the
// wrappers people write around them) that take a SQL string.
var queryMethods = map[string]bool{
	"Query": true, "QueryContext": true, "QueryRow": true, "QueryRowContext": true,
	"Exec": true, "ExecContext": true, "Prepare": true, "PrepareContext": true,
	"Get": true, "GetContext": true, "Select": true, "SelectContext": true,
	"Queryx": true, "QueryxContext": true, "QueryRowx": true, "QueryRowxContext": true,
	"MustExec": true, "MustExecContext": true, "NamedExec": true, "NamedExecContext": true,
	"NamedQuery": true, "NamedQueryContext": true, "Preparex": true, "PreparexContext": true,
	"Queue": true, "QueryFunc": true,
}

func run(pass *analysis.Pass) (any, error) {
	for _, f := range pass.Files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				checkSQL(pass, fd)
				checkMaps(pass, fd)
			}
		}
	}
	return nil, nil
}

// sqlCall is one query method call with a constant SQL string.
type sqlCall struct {
	call *ast.CallExpr
	st   stmt
}

func checkSQL(pass *analysis.Pass, fd *ast.FuncDecl) {
	calls, guarded := sqlCalls(pass, fd.Body)
	if guarded {
		return
	}
	for i, w := range calls {
		if w.st.kind != "insert" && w.st.kind != "update" || w.st.writes == "" {
			continue
		}
		if w.st.onConflict || w.st.versioned {
			continue
		}
		if r := lastCheck(calls[:i], w.st.writes); r != nil {
			report(pass, fd, r, w)
		}
	}
}

// lastCheck returns the latest unguarded SELECT reading table, or nil.
func lastCheck(before []sqlCall, table string) *sqlCall {
	for j := len(before) - 1; j >= 0; j-- {
		c := &before[j]
		if c.st.kind != "select" {
			continue
		}
		for _, t := range c.st.reads {
			if t == table {
				if c.st.forUpdate {
					return nil
				}
				return c
			}
		}
	}
	return nil
}

func report(pass *analysis.Pass, fd *ast.FuncDecl, r *sqlCall, w sqlCall) {
	line := pass.Fset.Position(r.call.Pos()).Line
	var msg string
	if w.st.kind == "insert" {
		msg = fmt.Sprintf("check-then-act on table %q in %s: the SELECT at line %d and this INSERT are separate statements, "+
			"so two concurrent calls can both find nothing and both insert (time-of-check/time-of-use); "+
			"fix: a UNIQUE constraint and INSERT … ON CONFLICT DO NOTHING (then read the winner), or an idempotency key with once, "+
			"or SELECT … FOR UPDATE / a SERIALIZABLE transaction", w.st.writes, fd.Name.Name, line)
	} else {
		msg = fmt.Sprintf("check-then-act on table %q in %s: the SELECT at line %d and this UPDATE are separate statements, "+
			"so two concurrent calls can both read the old row and the later UPDATE overwrites the earlier (lost update); "+
			"fix: a conditional UPDATE … WHERE version = $n (retry when no row changed), an atomic UPDATE … SET x = x + $1, "+
			"or SELECT … FOR UPDATE in the transaction", w.st.writes, fd.Name.Name, line)
	}
	pass.Report(analysis.Diagnostic{Pos: w.call.Pos(), End: w.call.End(), Message: msg})
}

// sqlCalls lists the function's query calls in source order, and reports
// whether the function makes its statements atomic as a whole: a
// SERIALIZABLE transaction (sql.LevelSerializable, pgx.Serializable or SQL
// text), an advisory lock or LOCK TABLE.
func sqlCalls(pass *analysis.Pass, body *ast.BlockStmt) ([]sqlCall, bool) {
	var calls []sqlCall
	guarded := false
	ast.Inspect(body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.Ident:
			if c, ok := pass.TypesInfo.Uses[x].(*types.Const); ok && (c.Name() == "LevelSerializable" || c.Name() == "Serializable") {
				guarded = true
			}
		case *ast.CallExpr:
			sel, ok := x.Fun.(*ast.SelectorExpr)
			if !ok || !queryMethods[sel.Sel.Name] {
				return true
			}
			for _, a := range x.Args {
				if q, ok := constString(pass, a); ok {
					st := parseSQL(q)
					guarded = guarded || st.txGuard
					if st.kind != "" {
						calls = append(calls, sqlCall{x, st})
					}
					break
				}
			}
		}
		return true
	})
	return calls, guarded
}

func constString(pass *analysis.Pass, e ast.Expr) (string, bool) {
	tv, ok := pass.TypesInfo.Types[e]
	if !ok || tv.Value == nil || tv.Value.Kind() != constant.String {
		return "", false
	}
	return constant.StringVal(tv.Value), true
}

// posIn reports whether p lies within n.
func posIn(p token.Pos, n ast.Node) bool { return n.Pos() <= p && p < n.End() }
