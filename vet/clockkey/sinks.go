package clockkey

import (
	"go/ast"
	"go/constant"
	"go/types"
	"strconv"
	"strings"
)

// keyWords are the name fragments (lower case, letters and digits only) that
// say "idempotency key, dedup key or request id".
var keyWords = []string{"idemp", "idemkey", "dedup", "requestid", "reqid", "requestkey", "natsmsgid", "correlationkey"}

// isKeyName reports whether a variable, field, parameter or header name
// says it holds an idempotency key, a dedup key or a request id.
func isKeyName(name string) bool {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	n := b.String()
	for _, w := range keyWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// sinks finds every place in the body where a fresh value is sent onward
// under a key-ish name.
func (f *fn) sinks() []sink {
	var out []sink
	f.assignments(func(lhs, rhs ast.Expr) {
		if rhs == nil {
			return
		}
		if what := f.lhsSink(lhs); what != "" {
			if srcs := f.sources(rhs); len(srcs) > 0 {
				out = append(out, sink{lhs, what, srcs})
			}
		}
	})
	ast.Inspect(f.decl.Body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.KeyValueExpr:
			if what := f.keySink(x.Key); what != "" {
				if srcs := f.sources(x.Value); len(srcs) > 0 {
					out = append(out, sink{x, what, srcs})
				}
			}
		case *ast.CallExpr:
			out = append(out, f.callSinks(x)...)
		}
		return true
	})
	return out
}

// lhsSink describes an assignment target that is a key sink, or "".
func (f *fn) lhsSink(lhs ast.Expr) string {
	switch x := ast.Unparen(lhs).(type) {
	case *ast.Ident:
		obj := f.obj(x)
		if obj != nil && isKeyName(x.Name) && !f.callerV[obj] && f.usedOnward(obj) {
			return "variable " + strconv.Quote(x.Name)
		}
	case *ast.SelectorExpr:
		if isKeyName(x.Sel.Name) {
			return "field " + strconv.Quote(x.Sel.Name)
		}
	case *ast.IndexExpr:
		if s, ok := f.constString(x.Index); ok && isKeyName(s) {
			return "entry " + strconv.Quote(s)
		}
	}
	return ""
}

// keySink describes a composite-literal key (a struct field or a constant
// map key such as http.Header{"Idempotency-Key": …}) that is a sink, or "".
func (f *fn) keySink(k ast.Expr) string {
	if id, ok := k.(*ast.Ident); ok && isKeyName(id.Name) {
		if _, isVar := f.pass.TypesInfo.Uses[id].(*types.Var); isVar || f.pass.TypesInfo.Uses[id] == nil {
			return "field " + strconv.Quote(id.Name)
		}
	}
	if s, ok := f.constString(k); ok && isKeyName(s) {
		return "entry " + strconv.Quote(s)
	}
	return ""
}

// setters are methods that store a value under a name: Header.Set,
// url.Values.Add, metadata setters.
var setters = map[string]bool{"Set": true, "Add": true, "Put": true, "Store": true, "SetHeader": true, "AddHeader": true, "Append": true}

// callSinks finds header-style setters called with a key-ish constant name,
// and arguments passed to parameters with key-ish names.
func (f *fn) callSinks(call *ast.CallExpr) []sink {
	var out []sink
	if sel, ok := call.Fun.(*ast.SelectorExpr); ok && setters[sel.Sel.Name] && len(call.Args) >= 2 {
		if s, ok := f.constString(call.Args[0]); ok && isKeyName(s) {
			if srcs := f.sources(call.Args[1]); len(srcs) > 0 {
				out = append(out, sink{call, "header " + strconv.Quote(s), srcs})
			}
		}
	}
	if name := calleeName(call); isKeyName(name) {
		// SetIdempotencyKey(k), WithIdempotencyKey(k), IdempotencyKey(k):
		// the function's own name says what its arguments are.
		for _, arg := range call.Args {
			if srcs := f.sources(arg); len(srcs) > 0 {
				out = append(out, sink{arg, "argument of " + name, srcs})
			}
		}
		return out
	}
	sig, _ := f.pass.TypesInfo.TypeOf(call.Fun).(*types.Signature)
	if sig == nil || sig.Params().Len() == 0 {
		return out
	}
	for i, arg := range call.Args {
		p := sig.Params().At(min(i, sig.Params().Len()-1))
		if !isKeyName(p.Name()) {
			continue
		}
		if srcs := f.sources(arg); len(srcs) > 0 {
			out = append(out, sink{arg, "parameter " + strconv.Quote(p.Name()), srcs})
		}
	}
	return out
}

func (f *fn) constString(e ast.Expr) (string, bool) {
	tv, ok := f.pass.TypesInfo.Types[e]
	if !ok || tv.Value == nil || tv.Value.Kind() != constant.String {
		return "", false
	}
	return constant.StringVal(tv.Value), true
}

// usedOnward reports whether the variable is read anywhere other than in a
// return statement: a key only returned is minted for the caller, which is
// the right layer.
func (f *fn) usedOnward(obj types.Object) bool {
	used := false
	var walk func(n ast.Node) bool
	walk = func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.ReturnStmt:
			for _, r := range x.Results {
				if _, isID := ast.Unparen(r).(*ast.Ident); !isID {
					ast.Inspect(r, walk)
				}
			}
			return false
		case *ast.AssignStmt:
			for _, r := range x.Rhs {
				ast.Inspect(r, walk)
			}
			for _, l := range x.Lhs {
				if _, isID := ast.Unparen(l).(*ast.Ident); !isID {
					ast.Inspect(l, walk)
				}
			}
			return false
		case *ast.Ident:
			if f.pass.TypesInfo.Uses[x] == obj {
				used = true
			}
		}
		return !used
	}
	ast.Inspect(f.decl.Body, walk)
	return used
}

func calleeName(call *ast.CallExpr) string {
	switch fn := ast.Unparen(call.Fun).(type) {
	case *ast.Ident:
		return fn.Name
	case *ast.SelectorExpr:
		return fn.Sel.Name
	}
	return ""
}
