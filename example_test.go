package once_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/oncehq/once"
	"github.com/oncehq/once/memstore"
)

// Like sync.Once, but per key and across retries: the charge runs once, and
// every later call with the key gets the stored result.
func ExampleExecutor_Do() {
	ex := once.New(memstore.New(memstore.Config{}), once.Config{})
	defer ex.Close()

	charge := func(ctx context.Context) (once.Result, error) {
		fmt.Println("charging the card")
		return once.Result{Data: []byte("ch_1")}, nil
	}
	key := once.Key{Scope: "customer-7", ID: "order-42"}
	for range 3 {
		x, err := ex.Do(context.Background(), key, nil, charge)
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Printf("%s replayed=%v\n", x.Data, x.Replayed)
	}
	// Output:
	// charging the card
	// ch_1 replayed=false
	// ch_1 replayed=true
	// ch_1 replayed=true
}

// A failure that a retry cannot fix is recorded with Permanent and replayed;
// any other error releases the key so that a retry runs again.
func ExamplePermanent() {
	ex := once.New(memstore.New(memstore.Config{}), once.Config{})
	defer ex.Close()

	key := once.Key{ID: "order-43"}
	decline := func(ctx context.Context) (once.Result, error) {
		fmt.Println("charging the card")
		return once.Result{}, once.Permanent(errors.New("card declined"))
	}
	for range 2 {
		x, err := ex.Do(context.Background(), key, nil, decline)
		fmt.Printf("%v permanent=%v replayed=%v\n", err, errors.Is(err, once.ErrPermanent), x.Replayed)
	}
	// Output:
	// charging the card
	// card declined permanent=true replayed=false
	// card declined permanent=true replayed=true
}
