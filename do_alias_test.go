package once_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
)

// Run with -race. The leader's Execution.Result aliases the flight's result,
// which coalesced callers Clone after the same close(done).
func TestReviewOwnerResultAliasesWaiters(t *testing.T) {
	e := once.New(memstore.New(memstore.Config{}), once.Config{})
	k := once.Key{ID: "alias"}
	joined := make(chan struct{})
	fn := func(context.Context) (once.Result, error) {
		<-joined
		return once.Result{Data: []byte("original")}, nil
	}
	var wg sync.WaitGroup
	var waiterGot once.Execution
	ownerDone := make(chan struct{})
	go func() {
		x, _ := e.Do(context.Background(), k, nil, fn)
		copy(x.Data, "MUTATED!") // the caller's "own copy"
		close(ownerDone)
	}()
	time.Sleep(20 * time.Millisecond)
	wg.Add(1)
	go func() { defer wg.Done(); waiterGot, _ = e.Do(context.Background(), k, nil, fn) }()
	time.Sleep(20 * time.Millisecond)
	close(joined)
	wg.Wait()
	<-ownerDone
	if string(waiterGot.Data) != "original" {
		t.Errorf("waiter got %q, stored %q", waiterGot.Data, "original")
	}
}
