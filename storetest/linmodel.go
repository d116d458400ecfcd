package storetest

import (
	"fmt"

	"github.com/anishathalye/porcupine"
	"github.com/oncehq/once"
)

// linModel is the state machine of one key, as the package documentation of
// once states it, for a run in which no lease or retention passes.
var linModel = porcupine.Model{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byKey := make([][]porcupine.Operation, linKeys)
		for _, op := range ops {
			k := op.Input.(linInput).key
			byKey[k] = append(byKey[k], op)
		}
		return byKey
	},
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		want, next := linStep(state.(linState), input.(linInput))
		return want == output.(linOutput), next
	},
	DescribeOperation: func(input, output any) string {
		return linDescribe(input.(linInput), output.(linOutput))
	},
	DescribeState: func(state any) string {
		s := state.(linState)
		if !s.live {
			return fmt.Sprintf("absent (counter %d)", s.rec.token)
		}
		return fmt.Sprintf("%v token %d attempts %d fp %q result %q", s.rec.state, s.rec.token, s.rec.attempts, s.rec.fp, s.rec.result)
	},
}

// linStep returns what in must return in state s, and the state after it.
func linStep(s linState, in linInput) (linOutput, linState) {
	fenced := linOutput{err: "fenced"}
	holds := s.live && s.rec.token == in.token
	switch in.op {
	case opClaim:
		return linClaim(s, in)
	case opComplete:
		switch {
		case holds && s.rec.state == once.StateInProgress:
			s.rec.state, s.rec.result = once.StateCompleted, in.result
			return linOutput{}, s
		case holds && s.rec.state == once.StateCompleted && s.rec.result == in.result:
			return linOutput{}, s
		}
		return fenced, s
	case opRelease:
		if holds && s.rec.state != once.StateCompleted {
			s.rec.state = once.StateReleased
			return linOutput{}, s
		}
		return fenced, s
	case opExtend:
		if holds && s.rec.state == once.StateInProgress {
			return linOutput{}, s
		}
		return fenced, s
	case opGet:
		if !s.live {
			return linOutput{err: "not found"}, s
		}
		return linOutput{rec: s.rec}, s
	}
	if !s.live {
		return linOutput{err: "not found"}, s
	}
	s.live = false
	return linOutput{}, s
}

func linClaim(s linState, in linInput) (linOutput, linState) {
	if s.live && s.rec.state != once.StateReleased {
		switch {
		case in.fp != "" && s.rec.fp != "" && in.fp != s.rec.fp:
			return linOutput{outcome: once.Mismatch, rec: s.rec}, s
		case s.rec.state == once.StateCompleted:
			return linOutput{outcome: once.Completed, rec: s.rec}, s
		}
		return linOutput{outcome: once.InProgress, rec: s.rec}, s
	}
	attempts := uint32(1)
	if s.live {
		attempts = s.rec.attempts + 1
	}
	s.rec = linRec{state: once.StateInProgress, token: s.rec.token + 1, attempts: attempts, fp: in.fp}
	s.live = true
	return linOutput{outcome: once.Acquired, token: s.rec.token, rec: s.rec}, s
}

func linDescribe(in linInput, out linOutput) string {
	var call string
	switch in.op {
	case opClaim:
		call = fmt.Sprintf("Claim(fp %q, %v)", in.fp, in.policy)
	case opComplete:
		call = fmt.Sprintf("Complete(%d, %q)", in.token, in.result)
	case opRelease, opExtend:
		call = fmt.Sprintf("%s(%d)", linOpNames[in.op], in.token)
	default:
		call = linOpNames[in.op] + "()"
	}
	switch {
	case out.err != "":
		return fmt.Sprintf("k%d %s → %s", in.key, call, out.err)
	case in.op == opClaim:
		return fmt.Sprintf("k%d %s → %v %d %+v", in.key, call, out.outcome, out.token, out.rec)
	case in.op == opGet:
		return fmt.Sprintf("k%d %s → %+v", in.key, call, out.rec)
	}
	return fmt.Sprintf("k%d %s → ok", in.key, call)
}
