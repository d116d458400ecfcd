package checkthenact

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"sort"

	"golang.org/x/tools/go/analysis"
)

// access is a read or write of one key of a map or cache, or an unlock.
type access struct {
	pos     token.Pos
	node    ast.Node
	kind    int    // accRead, accWrite, accUnlock, accLock
	key     string // "m[k]" or "c.Get(k)" normalised to the receiver and key
	syncMap bool   // a sync.Map Load or Store
}

const (
	accRead = iota
	accWrite
	accUnlock
	accLock
)

var (
	getNames = map[string]bool{"Get": true, "Load": true, "Lookup": true, "Peek": true, "Has": true, "Contains": true, "Exists": true}
	setNames = map[string]bool{"Set": true, "Store": true, "Put": true, "Add": true, "Insert": true, "SetDefault": true}
)

// checkMaps reports a write of a key whose last read was in an earlier
// critical section (an unlock lies between them), and a sync.Map Store
// after a Load of the same key outside any lock.
func checkMaps(pass *analysis.Pass, fd *ast.FuncDecl) {
	accs := accesses(pass, fd.Body)
	for i, w := range accs {
		if w.kind != accWrite {
			continue
		}
		r, unlocked, locked := lastRead(accs[:i], w.key)
		switch {
		case r == nil:
		case unlocked:
			line := pass.Fset.Position(r.pos).Line
			pass.Report(analysis.Diagnostic{Pos: w.pos, End: w.node.End(), Message: fmt.Sprintf(
				"get-then-set of %s in %s across an unlock: the read at line %d and this write are in separate critical sections, "+
					"so two goroutines can both miss, both compute and both write (check-then-act); "+
					"fix: hold the lock from the read to the write, re-check after re-locking, or use singleflight or sync.Map.LoadOrStore",
				w.key, fd.Name.Name, line)})
		case w.syncMap && r.syncMap && !locked:
			line := pass.Fset.Position(r.pos).Line
			pass.Report(analysis.Diagnostic{Pos: w.pos, End: w.node.End(), Message: fmt.Sprintf(
				"get-then-set of %s in %s: the Load at line %d and this Store are two operations, so two goroutines can both "+
					"miss and both store (check-then-act); fix: sync.Map.LoadOrStore (or LoadOrStore after a Load fast path)",
				w.key, fd.Name.Name, line)})
		}
	}
}

// lastRead finds the latest read of key before the end of accs, whether an
// unlock lies between it and the end, and whether a lock was taken before
// the read (so the pair may be inside one critical section).
func lastRead(accs []access, key string) (r *access, unlocked, locked bool) {
	for j := len(accs) - 1; j >= 0; j-- {
		a := &accs[j]
		switch {
		case a.kind == accUnlock:
			unlocked = true
		case a.kind == accRead && a.key == key:
			for _, b := range accs[:j] {
				locked = locked || b.kind == accLock
			}
			return a, unlocked, locked
		case a.kind == accWrite && a.key == key:
			return nil, false, false
		}
	}
	return nil, false, false
}

// accesses lists, in source order, the map and cache accesses and the
// (non-deferred) lock and unlock calls of a function body.
func accesses(pass *analysis.Pass, body *ast.BlockStmt) []access {
	var out []access
	lhs := map[ast.Expr]bool{}
	deferred := map[*ast.CallExpr]bool{}
	ast.Inspect(body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.DeferStmt:
			deferred[x.Call] = true
		case *ast.AssignStmt:
			for _, l := range x.Lhs {
				lhs[ast.Unparen(l)] = true
			}
		case *ast.IncDecStmt:
			lhs[ast.Unparen(x.X)] = true // m[k]++ reads and writes in one statement
		case *ast.IndexExpr:
			if a, ok := mapAccess(pass, x, lhs[x]); ok {
				out = append(out, a)
			}
		case *ast.CallExpr:
			if a, ok := callAccess(pass, x, deferred[x]); ok {
				out = append(out, a)
			}
		}
		return true
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].pos < out[j].pos })
	return out
}

func mapAccess(pass *analysis.Pass, x *ast.IndexExpr, isLHS bool) (access, bool) {
	t := pass.TypesInfo.TypeOf(x.X)
	if t == nil {
		return access{}, false
	}
	if _, ok := t.Underlying().(*types.Map); !ok {
		return access{}, false
	}
	a := access{pos: x.Pos(), node: x, kind: accRead, key: types.ExprString(x.X) + "[" + types.ExprString(x.Index) + "]"}
	if isLHS {
		a.kind = accWrite
		a.pos = x.End() // a write happens after its right-hand side is read
	}
	return a, true
}

func callAccess(pass *analysis.Pass, call *ast.CallExpr, deferred bool) (access, bool) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return access{}, false
	}
	name := sel.Sel.Name
	if (name == "Unlock" || name == "RUnlock" || name == "Lock" || name == "RLock") && isLocker(pass.TypesInfo.TypeOf(sel.X)) {
		if deferred {
			return access{}, false
		}
		kind := accLock
		if name == "Unlock" || name == "RUnlock" {
			kind = accUnlock
		}
		return access{pos: call.Pos(), node: call, kind: kind}, true
	}
	if !getNames[name] && !setNames[name] || len(call.Args) == 0 {
		return access{}, false
	}
	if _, isMethod := pass.TypesInfo.Selections[sel]; !isMethod {
		return access{}, false
	}
	k := keyArg(pass, call)
	if k == nil {
		return access{}, false
	}
	a := access{pos: call.Pos(), node: call, kind: accRead, key: types.ExprString(sel.X) + "[" + types.ExprString(k) + "]",
		syncMap: isSyncMap(pass.TypesInfo.TypeOf(sel.X))}
	if setNames[name] {
		a.kind = accWrite
	}
	return a, true
}

// keyArg is the key argument: the first one that is not a context.
func keyArg(pass *analysis.Pass, call *ast.CallExpr) ast.Expr {
	for _, a := range call.Args {
		t := pass.TypesInfo.TypeOf(a)
		if t != nil && t.String() == "context.Context" {
			continue
		}
		return a
	}
	return nil
}

func deref(t types.Type) types.Type {
	if p, ok := t.(*types.Pointer); ok {
		return p.Elem()
	}
	return t
}

func isSyncMap(t types.Type) bool {
	return t != nil && deref(t).String() == "sync.Map"
}

// isLocker reports whether t has Lock and Unlock methods (sync.Mutex,
// sync.RWMutex, any sync.Locker).
func isLocker(t types.Type) bool {
	if t == nil {
		return false
	}
	ms := types.NewMethodSet(types.NewPointer(deref(t)))
	return ms.Lookup(nil, "Lock") != nil && ms.Lookup(nil, "Unlock") != nil ||
		hasMethod(t, "Lock") && hasMethod(t, "Unlock")
}

func hasMethod(t types.Type, name string) bool {
	obj, _, _ := types.LookupFieldOrMethod(t, true, nil, name)
	_, ok := obj.(*types.Func)
	return ok
}
