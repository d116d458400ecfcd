// Command crashchild is the process boltstore's crash test kills. In loop
// mode it claims and completes keys from several goroutines forever and
// prints each acknowledgement, one line per write, only after the store
// returned; in open mode it only opens the store, to test the file lock.
//
//	crashchild -mode loop -path FILE -run N [-checkpoint-records N] [-checkpoint-interval D]
//	crashchild -mode open -path FILE

// The checkpoint flags make checkpoints (and so log segment switches and
// reuse) frequent, so that kills land in them too.
//
// Lines printed in loop mode:
//
//	claimed KEY TOKEN   Claim returned Acquired with TOKEN
//	done KEY TOKEN      Complete(TOKEN, Result(KEY)) returned nil
//	hot KEY TOKEN       a takeover Claim of a shared key returned TOKEN
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/boltstore"
)

// workers is the number of goroutines claiming in loop mode.
const workers = 8

// result is the result every key KEY is completed with; the test checks it.
func result(key string) []byte { return []byte("result-of-" + key) }

func main() {
	mode := flag.String("mode", "loop", "loop or open")
	path := flag.String("path", "", "store file")
	run := flag.Int("run", 0, "run number, part of every fresh key")
	cfg := boltstore.Config{LockTimeout: 300 * time.Millisecond}
	flag.IntVar(&cfg.CheckpointRecords, "checkpoint-records", 0, "Config.CheckpointRecords")
	flag.DurationVar(&cfg.CheckpointInterval, "checkpoint-interval", 0, "Config.CheckpointInterval")
	flag.Parse()
	if err := start(*mode, *path, *run, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "crashchild:", err)
		os.Exit(1)
	}
}

func start(mode, path string, run int, cfg boltstore.Config) error {
	s, err := boltstore.Open(path, cfg)
	if err != nil {
		return err
	}
	if mode == "open" {
		fmt.Println("opened")
		return s.Close()
	}
	out := &printer{}
	out.line("ready")
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { loop(s, out, run, w) })
	}
	wg.Wait() // never: the test kills the process
	return nil
}

// loop claims and completes fresh keys; every fourth round it takes over a
// shared hot key instead, whose token then climbs.
func loop(s once.Store, out *printer, run, w int) {
	ctx := context.Background()
	for i := 0; ; i++ {
		if i%4 == 3 {
			hot(ctx, s, out, w)
			continue
		}
		key := once.Key{Scope: "crash", ID: fmt.Sprintf("r%d-w%d-%d", run, w, i)}
		res, err := s.Claim(ctx, once.ClaimRequest{Key: key, Lease: time.Hour, Retention: time.Hour})
		if err != nil || res.Outcome != once.Acquired {
			fatal(fmt.Errorf("claim %s: %v %v", key.ID, res.Outcome, err))
		}
		out.line(fmt.Sprintf("claimed %s %d", key.ID, res.Token))
		if err := s.Complete(ctx, key, res.Token, once.Result{Data: result(key.ID)}); err != nil {
			fatal(fmt.Errorf("complete %s: %v", key.ID, err))
		}
		out.line(fmt.Sprintf("done %s %d", key.ID, res.Token))
	}
}

// hot takes over a shared key whose lease passes at once.
func hot(ctx context.Context, s once.Store, out *printer, w int) {
	key := once.Key{Scope: "crash", ID: fmt.Sprintf("hot-%d", w%2)}
	res, err := s.Claim(ctx, once.ClaimRequest{Key: key, Lease: time.Nanosecond, Retention: time.Hour, Policy: once.AbandonRetry})
	if err != nil {
		fatal(fmt.Errorf("claim %s: %v", key.ID, err))
	}
	if res.Outcome == once.Acquired {
		out.line(fmt.Sprintf("hot %s %d", key.ID, res.Token))
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "crashchild:", err)
	os.Exit(2)
}

// printer writes whole lines with one write each, so that a kill leaves at
// most the last line cut short.
type printer struct{ mu sync.Mutex }

func (p *printer) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	os.Stdout.WriteString(s + "\n")
}
