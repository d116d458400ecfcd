// Package clockkey defines an analyzer that reports idempotency keys, dedup
// keys and request ids derived from the clock (time.Now), randomness
// (math/rand, crypto/rand) or a fresh UUID inside the function that sends
// them onward.
//
// Such a key differs on every call, so a retry or a concurrent duplicate of
// the call carries a different key and the receiver cannot deduplicate it:
// seed 002's `${userId}-${productId}-${Date.now()}`. The key must come from
// the caller, which keeps it across its retries.
//
// A sink is a variable, struct field, map or header entry, or parameter
// whose name says idempotency key, dedup key or request id. Not reported: a
// key minted outside a loop and reused by every attempt inside it, a key
// that falls back to a fresh value only when the caller sent none, and a
// function that only returns a fresh key to its caller.
package clockkey

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"sort"
	"strings"

	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/passes/inspect"
	"golang.org/x/tools/go/types/typeutil"
)

// Analyzer is the clockkey analyzer.
var Analyzer = &analysis.Analyzer{
	Name:      "clockkey",
	Doc:       "report idempotency/dedup keys and request ids derived from time.Now, math/rand, crypto/rand or a fresh UUID in the function that sends them",
	URL:       "https://github.com/oncehq/once/blob/main/docs/vet.md#clockkey",
	Requires:  []*analysis.Analyzer{inspect.Analyzer},
	Run:       run,
	FactTypes: []analysis.Fact{new(FreshFact)},
}

// FreshFact marks a function whose result is derived from a fresh source, so
// that keys built from its result are caught across packages.
type FreshFact struct{ Source string }

// AFact marks FreshFact as an analysis fact.
func (*FreshFact) AFact() {}

func (f *FreshFact) String() string { return "fresh(" + f.Source + ")" }

// source is a call producing a fresh value.
type source struct {
	pos  token.Pos
	name string // e.g. "time.Now"
}

func run(pass *analysis.Pass) (any, error) {
	var funcs []*ast.FuncDecl
	for _, f := range pass.Files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				funcs = append(funcs, fd)
			}
		}
	}
	exportFresh(pass, funcs)
	for _, fd := range funcs {
		newFunc(pass, fd).check()
	}
	return nil, nil
}

// exportFresh finds, to a fixed point, the package's functions whose result
// comes from a fresh source, and exports a FreshFact for each.
func exportFresh(pass *analysis.Pass, funcs []*ast.FuncDecl) {
	for changed, round := true, 0; changed && round < 8; round++ {
		changed = false
		for _, fd := range funcs {
			obj, _ := pass.TypesInfo.Defs[fd.Name].(*types.Func)
			if obj == nil || pass.ImportObjectFact(obj, new(FreshFact)) {
				continue
			}
			if src := newFunc(pass, fd).returnsFresh(); src != "" {
				pass.ExportObjectFact(obj, &FreshFact{Source: src})
				changed = true
			}
		}
	}
}

// fn is the analysis of one function body.
type fn struct {
	pass    *analysis.Pass
	decl    *ast.FuncDecl
	tainted map[types.Object][]source
	params  map[types.Object]bool
	callerV map[types.Object]bool // variables also assigned from the caller's values
	loops   []ast.Node
}

func newFunc(pass *analysis.Pass, fd *ast.FuncDecl) *fn {
	f := &fn{pass: pass, decl: fd, tainted: map[types.Object][]source{}, params: map[types.Object]bool{}, callerV: map[types.Object]bool{}}
	for _, fl := range []*ast.FieldList{fd.Recv, fd.Type.Params} {
		if fl == nil {
			continue
		}
		for _, fld := range fl.List {
			for _, n := range fld.Names {
				if o := pass.TypesInfo.Defs[n]; o != nil {
					f.params[o] = true
				}
			}
		}
	}
	f.propagate()
	return f
}

// propagate computes, to a fixed point, the local variables whose value is
// derived from a fresh source.
func (f *fn) propagate() {
	for changed, round := true, 0; changed && round < 10; round++ {
		changed = false
		f.assignments(func(lhs ast.Expr, rhs ast.Expr) {
			id, ok := ast.Unparen(lhs).(*ast.Ident)
			if !ok || rhs == nil {
				return
			}
			obj := f.obj(id)
			if obj == nil {
				return
			}
			srcs := f.sources(rhs)
			if len(srcs) == 0 {
				if f.fromCaller(rhs) && !f.callerV[obj] {
					f.callerV[obj] = true
				}
				return
			}
			if len(f.tainted[obj]) == 0 {
				f.tainted[obj] = srcs
				changed = true
			}
		})
	}
	f.filledBuffers()
	ast.Inspect(f.decl.Body, func(n ast.Node) bool {
		switch l := n.(type) {
		case *ast.ForStmt:
			f.loops = append(f.loops, l.Body)
		case *ast.RangeStmt:
			f.loops = append(f.loops, l.Body)
		}
		return true
	})
}

// filledBuffers taints the buffers that rand.Read fills.
func (f *fn) filledBuffers() {
	ast.Inspect(f.decl.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) != 1 {
			return true
		}
		if name := f.sourceName(call); strings.HasSuffix(name, ".Read") {
			if id, ok := ast.Unparen(call.Args[0]).(*ast.Ident); ok {
				if o := f.obj(id); o != nil && len(f.tainted[o]) == 0 {
					f.tainted[o] = []source{{call.Pos(), name}}
				}
			}
		}
		return true
	})
}

func (f *fn) obj(id *ast.Ident) types.Object {
	if o := f.pass.TypesInfo.Defs[id]; o != nil {
		return o
	}
	return f.pass.TypesInfo.Uses[id]
}

// assignments calls visit for each (lhs, rhs) pair of the body; rhs is the
// single multi-value expression when counts differ.
func (f *fn) assignments(visit func(lhs, rhs ast.Expr)) {
	ast.Inspect(f.decl.Body, func(n ast.Node) bool {
		switch s := n.(type) {
		case *ast.AssignStmt:
			pairs(s.Lhs, s.Rhs, visit)
		case *ast.ValueSpec:
			lhs := make([]ast.Expr, len(s.Names))
			for i, n := range s.Names {
				lhs[i] = n
			}
			pairs(lhs, s.Values, visit)
		}
		return true
	})
}

func pairs(lhs, rhs []ast.Expr, visit func(lhs, rhs ast.Expr)) {
	for i, l := range lhs {
		switch {
		case len(rhs) == len(lhs):
			visit(l, rhs[i])
		case len(rhs) == 1:
			visit(l, rhs[0])
		}
	}
}

// sources lists the fresh sources an expression's value is derived from.
func (f *fn) sources(e ast.Expr) []source {
	var out []source
	ast.Inspect(e, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.CallExpr:
			if name := f.sourceName(x); name != "" {
				out = append(out, source{x.Pos(), name})
				return false
			}
			// A call's result derives from its arguments only when it is a
			// value like them (fmt.Sprintf, hex.EncodeToString), not an
			// error or a struct.
			return valueLike(f.pass.TypesInfo.TypeOf(x))
		case *ast.Ident:
			if o := f.pass.TypesInfo.Uses[x]; o != nil && !f.callerV[o] {
				out = append(out, f.tainted[o]...)
			}
		}
		return true
	})
	return out
}

// valueLike reports whether t can carry a key: a string, a number, or bytes.
func valueLike(t types.Type) bool {
	if t == nil {
		return false
	}
	switch u := t.Underlying().(type) {
	case *types.Basic:
		return u.Info()&(types.IsString|types.IsInteger|types.IsFloat) != 0
	case *types.Slice:
		return valueLike(u.Elem())
	case *types.Array:
		return valueLike(u.Elem())
	case *types.Tuple:
		return u.Len() > 0 && valueLike(u.At(0).Type())
	}
	return false
}

// fromCaller reports whether e mentions a parameter or the receiver: the
// value comes from the caller.
func (f *fn) fromCaller(e ast.Expr) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && f.params[f.pass.TypesInfo.Uses[id]] {
			found = true
		}
		return !found
	})
	return found
}

// uuidPkgs are the last path elements of id-generating packages.
var uuidPkgs = map[string]bool{"uuid": true, "go.uuid": true, "ulid": true, "xid": true, "ksuid": true,
	"shortuuid": true, "nanoid": true, "go-nanoid": true, "shortid": true, "cuid": true, "cuid2": true, "snowflake": true}

// sourceName names the fresh source a call is, or "".
func (f *fn) sourceName(call *ast.CallExpr) string {
	callee, _ := typeutil.Callee(f.pass.TypesInfo, call).(*types.Func)
	if callee == nil || callee.Pkg() == nil {
		return ""
	}
	path, name := callee.Pkg().Path(), callee.Name()
	short := callee.Pkg().Name() + "." + name
	switch {
	case path == "time" && name == "Now":
		return short
	case path == "math/rand" || path == "math/rand/v2":
		return short
	case path == "crypto/rand" && (name == "Read" || name == "Int" || name == "Prime" || name == "Text"):
		return short
	case uuidPkgs[lastElem(path)] && isGenerator(name):
		return short
	}
	var fact FreshFact
	if f.pass.ImportObjectFact(callee, &fact) {
		return short + " (" + fact.Source + ")"
	}
	return ""
}

func isGenerator(name string) bool {
	for _, p := range []string{"New", "Make", "Must", "Generate", "Gen"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// lastElem is the last element of an import path, ignoring a /vN suffix.
func lastElem(path string) string {
	parts := strings.Split(path, "/")
	last := parts[len(parts)-1]
	if len(parts) > 1 && len(last) > 1 && last[0] == 'v' && strings.Trim(last[1:], "0123456789") == "" {
		last = parts[len(parts)-2]
	}
	return last
}

// returnsFresh names the source of the function's result, if it is fresh.
func (f *fn) returnsFresh() string {
	src := ""
	ast.Inspect(f.decl.Body, func(n ast.Node) bool {
		if _, ok := n.(*ast.FuncLit); ok {
			return false
		}
		if r, ok := n.(*ast.ReturnStmt); ok && src == "" {
			for _, e := range r.Results {
				if !valueLike(f.pass.TypesInfo.TypeOf(e)) {
					continue
				}
				if s := f.sources(e); len(s) > 0 {
					src = s[0].name
				}
			}
		}
		return true
	})
	return src
}

// sink is a place where a key is sent onward.
type sink struct {
	node ast.Node
	what string // e.g. `header "Idempotency-Key"`
	srcs []source
}

// check reports each fresh source that reaches a key sink.
func (f *fn) check() {
	sinks := f.sinks()
	sort.SliceStable(sinks, func(i, j int) bool { return sinks[i].node.Pos() < sinks[j].node.Pos() })
	done := map[token.Pos]bool{}
	for _, s := range sinks {
		for _, src := range s.srcs {
			if done[src.pos] || f.reusedInLoop(s.node, src.pos) {
				continue
			}
			done[src.pos] = true
			f.pass.Report(analysis.Diagnostic{
				Pos: src.pos,
				Message: fmt.Sprintf("%s is derived from %s in %s: every call gets a new key, so a retry or a concurrent "+
					"duplicate of this call is not deduplicated and its effect races with the first; "+
					"take the key from the caller (a parameter or the client's Idempotency-Key) and pass it through",
					s.what, src.name, f.decl.Name.Name),
			})
		}
	}
}

// reusedInLoop reports whether the sink is inside a loop that the source is
// outside of: the key is minted once and reused by every attempt.
func (f *fn) reusedInLoop(n ast.Node, src token.Pos) bool {
	for _, l := range f.loops {
		if l.Pos() <= n.Pos() && n.End() <= l.End() && !(l.Pos() <= src && src < l.End()) {
			return true
		}
	}
	return false
}
