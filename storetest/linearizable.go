package storetest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/oncehq/once"
)

// The linearizability check: clients call random operations on a few keys
// and porcupine checks the history against linModel, a sequential model of
// the state machine written here, independently of the stores' shared code.
// Leases are long enough that nothing expires during the run, so the model
// needs no clock.
const (
	linClients = 8
	linOps     = 250
	linKeys    = 4
)

type linOp uint8

const (
	opClaim linOp = iota
	opComplete
	opRelease
	opExtend
	opGet
	opDelete
)

var linOpNames = [...]string{"Claim", "Complete", "Release", "Extend", "Get", "Delete"}

// linInput is one call. Only the fields of its op are set.
type linInput struct {
	key    int
	op     linOp
	fp     string
	policy once.AbandonPolicy
	token  uint64
	result string
}

// linRec is what the model knows of a record.
type linRec struct {
	state    once.State
	token    uint64
	attempts uint32
	fp       string
	result   string
}

// linOutput is what a call returned.
type linOutput struct {
	err     string // "", "fenced" or "not found"
	outcome once.Outcome
	token   uint64
	rec     linRec
}

// linState is the model's state of one key. rec.token survives Delete: the
// tombstone keeps the counter.
type linState struct {
	live bool
	rec  linRec
}

func testLinearizable(f *fixture) {
	h := &linHistory{start: time.Now()}
	runClients(f, h)
	f.checkLinearizable(h.ops)
}

// runClients runs the clients and records their operations in h.
func runClients(f *fixture, h *linHistory) {
	keys := make([]once.Key, linKeys)
	maxToken := make([]atomic.Uint64, linKeys)
	for i := range keys {
		keys[i] = f.key(fmt.Sprintf("lin-%d", i))
	}
	var wg sync.WaitGroup
	for c := range linClients {
		wg.Go(func() {
			cl := &linClient{f: f, id: c, keys: keys, maxToken: maxToken, h: h,
				rng: rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano()))), held: map[int]uint64{}}
			cl.run(linOps)
		})
	}
	wg.Wait()
}

func (f *fixture) checkLinearizable(ops []porcupine.Operation) {
	f.Helper()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, time.Minute)
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		f.Fatalf("porcupine could not decide within a minute whether %d operations are linearizable", len(ops))
	}
	out, err := os.CreateTemp("", "storetest-linearizability-*.html")
	if err != nil {
		f.Fatalf("history is not linearizable (and no visualization: %v)", err)
	}
	defer out.Close()
	if err := porcupine.Visualize(linModel, info, out); err != nil {
		f.Fatalf("history is not linearizable (visualization failed: %v)", err)
	}
	f.Fatalf("history of %d operations is not linearizable; visualization: %s\n%s", len(ops), out.Name(), explain(ops, info))
}

// linHistory collects operations from every client.
type linHistory struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

func (h *linHistory) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

type linClient struct {
	f        *fixture
	id       int
	keys     []once.Key
	maxToken []atomic.Uint64
	h        *linHistory
	rng      *rand.Rand
	held     map[int]uint64 // the last token this client acquired, by key
}

func (c *linClient) run(n int) {
	for range n {
		in := c.next()
		call := c.h.now()
		out, err := c.do(in)
		ret := c.h.now()
		if err != nil {
			c.f.Errorf("%s: %v", linDescribe(in, out), err)
			return
		}
		c.observe(in, out)
		c.h.add(porcupine.Operation{ClientId: c.id, Input: in, Call: call, Output: out, Return: ret})
	}
}

// next draws an operation: claims and completions most often, deletions
// rarely, so that keys go through every state.
func (c *linClient) next() linInput {
	in := linInput{key: c.rng.IntN(linKeys)}
	switch p := c.rng.IntN(100); {
	case p < 35:
		in.op = opClaim
		in.fp = [...]string{"", "a", "a", "b"}[c.rng.IntN(4)]
		in.policy = once.AbandonPolicy(c.rng.IntN(2))
	case p < 55:
		in.op, in.token = opComplete, c.token(in.key)
		in.result = [...]string{"", "r1", "r2"}[c.rng.IntN(3)]
	case p < 67:
		in.op, in.token = opRelease, c.token(in.key)
	case p < 75:
		in.op, in.token = opExtend, c.token(in.key)
	case p < 94:
		in.op = opGet
	default:
		in.op = opDelete
	}
	return in
}

// token picks the token this client holds, or one near the latest seen.
func (c *linClient) token(key int) uint64 {
	if t, ok := c.held[key]; ok && c.rng.IntN(4) > 0 {
		return t
	}
	return max(1, c.maxToken[key].Load()+uint64(c.rng.IntN(3))) - 1 + uint64(c.rng.IntN(2))
}

func (c *linClient) observe(in linInput, out linOutput) {
	if out.rec.token > 0 {
		for {
			cur := c.maxToken[in.key].Load()
			if out.rec.token <= cur || c.maxToken[in.key].CompareAndSwap(cur, out.rec.token) {
				break
			}
		}
	}
	if out.outcome == once.Acquired {
		c.held[in.key] = out.token
	}
}

// do calls the store. Errors the model knows are part of the output; any
// other error is returned.
func (c *linClient) do(in linInput) (linOutput, error) {
	f, k := c.f, c.keys[in.key]
	var err error
	switch in.op {
	case opClaim:
		req := f.reqKey(k, in.fp)
		req.Policy = in.policy
		var cr once.ClaimResult
		if cr, err = f.s.Claim(f.ctx, req); err == nil {
			return linOutput{outcome: cr.Outcome, token: cr.Token, rec: toLinRec(cr.Record)}, nil
		}
	case opComplete:
		err = f.s.Complete(f.ctx, k, in.token, linResult(in.result))
	case opRelease:
		err = f.s.Release(f.ctx, k, in.token)
	case opExtend:
		err = f.s.Extend(f.ctx, k, in.token, f.h.long)
	case opGet:
		var r once.Record
		if r, err = f.s.Get(f.ctx, k); err == nil {
			return linOutput{rec: toLinRec(r)}, nil
		}
	case opDelete:
		err = f.s.Delete(f.ctx, k)
	}
	return linErr(err)
}

func linErr(err error) (linOutput, error) {
	switch {
	case err == nil:
		return linOutput{}, nil
	case isFenced(err):
		return linOutput{err: "fenced"}, nil
	case isNotFound(err):
		return linOutput{err: "not found"}, nil
	}
	return linOutput{}, err
}

// linResult encodes a model result as a store result; "" is the empty one.
func linResult(s string) once.Result {
	if s == "" {
		return once.Result{}
	}
	return once.Result{Data: []byte(s), Meta: map[string]string{"m": s}}
}

func toLinRec(r once.Record) linRec {
	res := string(r.Result.Data)
	if len(r.Result.Meta) > 1 || r.Result.Meta["m"] != res {
		// Not a result linResult makes: no model state will match it.
		res = fmt.Sprintf("corrupt{%q %v}", r.Result.Data, r.Result.Meta)
	}
	return linRec{state: r.State, token: r.Token, attempts: r.Attempts, fp: string(r.Fingerprint), result: res}
}
