package storetest

import (
	"fmt"
	"strings"

	"github.com/anishathalye/porcupine"
)

// explain describes, for each key whose history is not linearizable, where
// the longest partial linearization stops: the model state there and the
// operations that could come next, none of which the model accepts.
func explain(ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	var b strings.Builder
	parts := linModel.Partition(ops)
	for k, lins := range info.PartialLinearizationsOperations() {
		if k >= len(parts) || porcupine.CheckOperations(linModel, parts[k]) {
			continue
		}
		var longest []porcupine.Operation
		for _, l := range lins {
			if len(l) > len(longest) {
				longest = l
			}
		}
		state := linModel.Init()
		done := map[[3]int64]bool{}
		for _, op := range longest {
			_, state = linModel.Step(state, op.Input, op.Output)
			done[opID(op)] = true
		}
		fmt.Fprintf(&b, "key %d: after %d of %d operations the model is %s; none of these can come next:\n",
			k, len(longest), len(parts[k]), linModel.DescribeState(state))
		for _, op := range nextCandidates(parts[k], done) {
			fmt.Fprintf(&b, "  client %d [%d µs, %d µs] %s\n", op.ClientId, op.Call/1e3, op.Return/1e3,
				linDescribe(op.Input.(linInput), op.Output.(linOutput)))
		}
	}
	return b.String()
}

func opID(op porcupine.Operation) [3]int64 { return [3]int64{int64(op.ClientId), op.Call, op.Return} }

// nextCandidates returns the operations not done that were called before
// every other operation not done had returned.
func nextCandidates(ops []porcupine.Operation, done map[[3]int64]bool) []porcupine.Operation {
	minReturn := int64(1<<63 - 1)
	for _, op := range ops {
		if !done[opID(op)] {
			minReturn = min(minReturn, op.Return)
		}
	}
	var next []porcupine.Operation
	for _, op := range ops {
		if !done[opID(op)] && op.Call <= minReturn {
			next = append(next, op)
		}
	}
	return next
}
