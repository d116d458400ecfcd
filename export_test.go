package once

// Callers returns how many callers wait for the flight of key in e (their
// contexts not done), or 0 if there is none. For tests.
func (e *Executor) Callers(key Key) int {
	sh := e.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if f := sh.flights[key]; f != nil {
		return f.refs
	}
	return 0
}
