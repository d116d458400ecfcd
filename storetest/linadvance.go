package storetest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// advanceOut is what one Advance returned.
type advanceOut struct {
	applied bool
	current uint64
}

// advanceModel is the sequential model of one entity's version: Advance(v)
// applies iff v is greater than the current version, and reports the
// version current after the call.
var advanceModel = porcupine.Model{
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		cur, v, out := state.(uint64), input.(uint64), output.(advanceOut)
		next := max(cur, v)
		return out == advanceOut{applied: v > cur, current: next}, next
	},
	DescribeOperation: func(input, output any) string {
		o := output.(advanceOut)
		return fmt.Sprintf("Advance(%d) = %v, %d", input.(uint64), o.applied, o.current)
	},
}

// testAdvanceLinearizable: concurrent Advance calls on one entity, with
// versions drawn from a small range so that many collide, form a
// linearizable history of a monotonic register.
func testAdvanceLinearizable(f *fixture) {
	const clients, opsEach = 8, 60
	entity := f.key("lin-advance").ID
	start := time.Now()
	var mu sync.Mutex
	var ops []porcupine.Operation
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for range opsEach {
				v := rng.Uint64N(40)
				call := int64(time.Since(start))
				applied, cur, err := f.s.Advance(f.ctx, f.scope, entity, v)
				ret := int64(time.Since(start))
				if err != nil {
					f.Errorf("Advance(%d): %v", v, err)
					return
				}
				mu.Lock()
				ops = append(ops, porcupine.Operation{ClientId: c, Input: v, Call: call, Output: advanceOut{applied, cur}, Return: ret})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res, info := porcupine.CheckOperationsVerbose(advanceModel, ops, time.Minute)
	if res == porcupine.Ok {
		return
	}
	out, err := os.CreateTemp("", "storetest-advance-*.html")
	if err == nil {
		porcupine.Visualize(advanceModel, info, out)
		out.Close()
		f.Fatalf("Advance history of %d operations is not linearizable (%v); visualization: %s", len(ops), res, out.Name())
	}
	f.Fatalf("Advance history of %d operations is not linearizable (%v)", len(ops), res)
}
