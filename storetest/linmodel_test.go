package storetest

import (
	"testing"

	"github.com/anishathalye/porcupine"
	"github.com/oncehq/once"
)

// The model must reject histories that break the state machine, or the
// linearizability case checks nothing.

func seq(ops ...porcupine.Operation) []porcupine.Operation {
	for i := range ops {
		ops[i].Call, ops[i].Return = int64(2*i), int64(2*i+1)
	}
	return ops
}

func op(in linInput, out linOutput) porcupine.Operation {
	return porcupine.Operation{Input: in, Output: out}
}

func acquired(token uint64, attempts uint32, fp string) linOutput {
	return linOutput{outcome: once.Acquired, token: token,
		rec: linRec{state: once.StateInProgress, token: token, attempts: attempts, fp: fp}}
}

var (
	claimA  = linInput{op: opClaim, fp: "a"}
	claimB  = linInput{op: opClaim, fp: "b"}
	get     = linInput{op: opGet}
	del     = linInput{op: opDelete}
	ok      = linOutput{}
	fenced  = linOutput{err: "fenced"}
	inProgA = linOutput{outcome: once.InProgress, rec: acquired(1, 1, "a").rec}
)

func complete(token uint64, r string) linInput {
	return linInput{op: opComplete, token: token, result: r}
}

func TestModelAccepts(t *testing.T) {
	doneA := linRec{state: once.StateCompleted, token: 1, attempts: 1, fp: "a", result: "r1"}
	legal := map[string][]porcupine.Operation{
		"claim, complete, replay": seq(
			op(claimA, acquired(1, 1, "a")),
			op(claimA, inProgA),
			op(complete(1, "r1"), ok),
			op(complete(1, "r1"), ok),
			op(complete(1, "r2"), fenced),
			op(claimB, linOutput{outcome: once.Mismatch, rec: doneA}),
			op(claimA, linOutput{outcome: once.Completed, rec: doneA}),
			op(get, linOutput{rec: doneA}),
		),
		"delete keeps the counter": seq(
			op(claimA, acquired(1, 1, "a")),
			op(del, ok),
			op(get, linOutput{err: "not found"}),
			op(claimB, acquired(2, 1, "b")),
		),
		"release then claim": seq(
			op(claimA, acquired(1, 1, "a")),
			op(linInput{op: opRelease, token: 1}, ok),
			op(linInput{op: opRelease, token: 1}, ok),
			op(claimB, acquired(2, 2, "b")),
			op(linInput{op: opExtend, token: 1}, fenced),
		),
	}
	for name, h := range legal {
		if !porcupine.CheckOperations(linModel, h) {
			t.Errorf("%s: model rejects a legal history", name)
		}
	}
}

func TestModelRejects(t *testing.T) {
	illegal := map[string][]porcupine.Operation{
		"two acquire": seq(op(claimA, acquired(1, 1, "a")), op(claimA, acquired(2, 2, "a"))),
		"token reset after delete": seq(
			op(claimA, acquired(1, 1, "a")), op(del, ok), op(claimA, acquired(1, 1, "a"))),
		"completed before mismatch": seq(
			op(claimA, acquired(1, 1, "a")), op(complete(1, ""), ok),
			op(claimB, linOutput{outcome: once.Completed,
				rec: linRec{state: once.StateCompleted, token: 1, attempts: 1, fp: "a"}})),
		"stale token completes": seq(
			op(claimA, acquired(1, 1, "a")), op(linInput{op: opRelease, token: 1}, ok),
			op(claimA, acquired(2, 2, "a")), op(complete(1, "r"), ok)),
		"stale read": seq(
			op(claimA, acquired(1, 1, "a")), op(del, ok), op(get, linOutput{rec: acquired(1, 1, "a").rec})),
	}
	for name, h := range illegal {
		if porcupine.CheckOperations(linModel, h) {
			t.Errorf("%s: model accepts an illegal history", name)
		}
	}
}

// TestModelConcurrent: overlapping claims may linearize either way, but
// exactly one acquires.
func TestModelConcurrent(t *testing.T) {
	h := []porcupine.Operation{
		{Input: claimA, Output: inProgA, Call: 0, Return: 10},
		{Input: claimA, Output: acquired(1, 1, "a"), Call: 1, Return: 9},
	}
	if !porcupine.CheckOperations(linModel, h) {
		t.Error("model rejects overlapping claims where the later-returning one lost")
	}
	h[0].Output = acquired(1, 1, "a")
	if porcupine.CheckOperations(linModel, h) {
		t.Error("model accepts two overlapping claims that both acquired")
	}
}
