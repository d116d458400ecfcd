package pgstore

// SetInFlight makes s run at most n claim and n complete statements at a
// time, and calls onExec with the size of each batch, before its statement
// runs.
func SetInFlight(s *Store, n int, onExec func(op string, n int)) {
	for _, b := range []*batcher{s.claims, s.completes} {
		b.mu.Lock()
		b.max = n
		b.mu.Unlock()
		b.onExec = func(n int) {
			if onExec != nil {
				onExec(b.op, n)
			}
		}
	}
}

// Queued returns how many claims and completions wait in s's queues.
func Queued(s *Store) int {
	n := 0
	for _, b := range []*batcher{s.claims, s.completes} {
		b.mu.Lock()
		n += len(b.queue)
		b.mu.Unlock()
	}
	return n
}

// SetBatchLockTimeout sets the lock timeout of the batches of the stores
// made after it (a PostgreSQL interval such as "200ms") and returns a
// function that restores the default.
func SetBatchLockTimeout(d string) (restore func()) {
	old := batchLockTimeout
	batchLockTimeout = d
	return func() { batchLockTimeout = old }
}
