package pgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oncehq/once"
)

// notifyID is the payload of a key's notifications: a hash, so that keys do
// not show in pg_stat_activity or in other listeners. IDs hold no NUL, so the
// separator makes the encoding unambiguous. The statements that notify
// compute the same hash in SQL (notify in queries.go).
func notifyID(key once.Key) string {
	h := sha256.New()
	h.Write([]byte(key.Scope))
	h.Write([]byte{0})
	h.Write([]byte(key.ID))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Timings of the listening connection.
const (
	// listenCheck is how long the listener waits for a notification before
	// pinging its connection, so that a silently dead one is replaced.
	listenCheck = 30 * time.Second
	minBackoff  = 50 * time.Millisecond
	maxBackoff  = 5 * time.Second
)

// listener is the one connection that LISTENs for the store's channel. It
// hands each notification to the watchers of its key and reconnects on
// failure, waking every watcher then (notifications may have been lost).
type listener struct {
	s *Store

	mu        sync.Mutex
	subs      map[string]map[*watch]struct{}
	listening bool
	ready     chan struct{} // closed when listening turns true
	lastErr   error         // the latest failure to connect, while not listening
}

// watch is one Watch call.
type watch struct {
	id   string
	ch   chan struct{}
	once sync.Once
}

func (w *watch) fire() { w.once.Do(func() { close(w.ch) }) }

// Watch implements once.Watcher. The first call starts the listening
// connection; later calls share it. Watch returns an error wrapping
// once.ErrUnavailable if the listener cannot connect.
func (s *Store) Watch(ctx context.Context, key once.Key) (<-chan struct{}, func(), error) {
	if err := s.check(key); err != nil {
		return nil, nil, err
	}
	l := s.listener()
	if err := l.waitReady(ctx); err != nil {
		return nil, nil, s.unavailable("watch", err)
	}
	w := &watch{id: notifyID(key), ch: make(chan struct{})}
	l.add(w)
	stop := func() { l.remove(w) }
	var waiting bool
	err := s.pool.QueryRow(ctx, s.q.watch, scopeBytes(key.Scope), key.ID).Scan(&waiting)
	if err == nil && !waiting {
		// A concurrent watcher may have marked the record while this
		// statement waited for its lock: look again from a fresh snapshot.
		err = s.pool.QueryRow(ctx, s.q.watched, scopeBytes(key.Scope), key.ID).Scan(&waiting)
	}
	if err != nil {
		stop()
		return nil, nil, s.unavailable("watch", err)
	}
	if !waiting {
		// Nothing in progress to wait for: the caller looks again at once.
		l.remove(w)
		w.fire()
	}
	return w.ch, stop, nil
}

// listener returns the store's listener, starting it on first use.
func (s *Store) listener() *listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		s.lis = &listener{s: s, subs: make(map[string]map[*watch]struct{}), ready: make(chan struct{})}
		if !s.closed.Load() {
			s.wg.Add(1)
			go s.lis.run()
		}
	}
	return s.lis
}

// waitReady waits until the listener listens, or returns the error of its
// latest attempt to connect if that failed.
func (l *listener) waitReady(ctx context.Context) error {
	for {
		l.mu.Lock()
		listening, ready, lastErr := l.listening, l.ready, l.lastErr
		l.mu.Unlock()
		switch {
		case listening:
			return nil
		case lastErr != nil:
			return lastErr
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.s.bg.Done():
			return once.ErrClosed
		}
	}
}

// add registers w. A watcher added while the connection is down would miss
// notifications: it is woken at once.
func (l *listener) add(w *watch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.listening || l.s.closed.Load() {
		w.fire()
		return
	}
	m := l.subs[w.id]
	if m == nil {
		m = make(map[*watch]struct{})
		l.subs[w.id] = m
	}
	m[w] = struct{}{}
}

func (l *listener) remove(w *watch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.subs[w.id]; m != nil {
		delete(m, w)
		if len(m) == 0 {
			delete(l.subs, w.id)
		}
	}
}

// dispatch wakes the watchers of id.
func (l *listener) dispatch(id string) {
	l.mu.Lock()
	m := l.subs[id]
	delete(l.subs, id)
	l.mu.Unlock()
	for w := range m {
		w.fire()
	}
}

// wakeAll wakes every watcher, when notifications may have been lost.
func (l *listener) wakeAll() {
	l.mu.Lock()
	subs := l.subs
	l.subs = make(map[string]map[*watch]struct{})
	l.mu.Unlock()
	for _, m := range subs {
		for w := range m {
			w.fire()
		}
	}
}

// setState records whether the listener listens and why not.
func (l *listener) setState(listening bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastErr = err
	if listening == l.listening {
		return
	}
	l.listening = listening
	if listening {
		close(l.ready)
	} else {
		l.ready = make(chan struct{})
	}
}

// run keeps a listening connection until the store closes.
func (l *listener) run() {
	defer l.s.wg.Done()
	ctx := l.s.bg
	backoff := minBackoff
	for ctx.Err() == nil {
		conn, err := l.connect(ctx)
		if err != nil {
			l.setState(false, err)
			if sleep(ctx, backoff) != nil {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		l.setState(true, nil)
		err = l.receive(ctx, conn)
		conn.Close(context.Background())
		l.setState(false, nil)
		l.wakeAll()
		if ctx.Err() == nil && err != nil {
			// Not counted as a failure to connect: Watch waits for the
			// reconnection rather than failing.
			_ = sleep(ctx, minBackoff)
		}
	}
}

// connect opens the listening connection, outside the pool so that it never
// returns to it with a LISTEN active.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, l.s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{l.s.n.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// receive dispatches notifications until the connection fails or ctx ends.
func (l *listener) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			l.dispatch(n.Payload)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return err
			}
		default:
			return err
		}
	}
}
