package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/oncehq/once"
)

// lazyRetry is how often a store that could not be opened is tried again.
const lazyRetry = time.Second

// lazyOpenTimeout bounds one attempt to open the store; callers wait for it.
const lazyOpenTimeout = 2 * time.Second

// lazyStore stands in for a store that was unreachable when the gateway
// started: every operation tries to open it (at most once per lazyRetry) and
// fails with ErrUnavailable until it can, so the gateway runs and answers
// 503 (fail closed) instead of refusing to start. Once open, it forwards.
type lazyStore struct {
	open func(context.Context) (once.Store, error)

	mu      sync.Mutex
	store   once.Store
	lastTry time.Time
	lastErr error
	closed  bool
}

var (
	_ once.Store   = (*lazyStore)(nil)
	_ once.Pinger  = (*lazyStore)(nil)
	_ once.Watcher = (*lazyStore)(nil)
	_ once.Sweeper = (*lazyStore)(nil)
)

// get returns the opened store, opening it if it is time to try again.
func (l *lazyStore) get(ctx context.Context) (once.Store, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return nil, once.ErrClosed
	case l.store != nil:
		return l.store, nil
	case time.Since(l.lastTry) < lazyRetry:
		return nil, l.lastErr
	}
	l.lastTry = time.Now()
	// Not the caller's deadline: the store outlives the request.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lazyOpenTimeout)
	defer cancel()
	s, err := l.open(octx)
	if err != nil {
		if !errors.Is(err, once.ErrUnavailable) {
			err = fmt.Errorf("%w: %v", once.ErrUnavailable, err)
		}
		l.lastErr = err
		return nil, err
	}
	l.store = s
	return s, nil
}

func (l *lazyStore) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	s, err := l.get(ctx)
	if err != nil {
		return once.ClaimResult{}, err
	}
	return s.Claim(ctx, req)
}

func (l *lazyStore) Complete(ctx context.Context, key once.Key, token uint64, res once.Result) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	return s.Complete(ctx, key, token, res)
}

func (l *lazyStore) Release(ctx context.Context, key once.Key, token uint64) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	return s.Release(ctx, key, token)
}

func (l *lazyStore) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	return s.Extend(ctx, key, token, lease)
}

func (l *lazyStore) Get(ctx context.Context, key once.Key) (once.Record, error) {
	s, err := l.get(ctx)
	if err != nil {
		return once.Record{}, err
	}
	return s.Get(ctx, key)
}

func (l *lazyStore) Delete(ctx context.Context, key once.Key) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	return s.Delete(ctx, key)
}

func (l *lazyStore) Advance(ctx context.Context, scope, entity string, version uint64) (bool, uint64, error) {
	s, err := l.get(ctx)
	if err != nil {
		return false, 0, err
	}
	return s.Advance(ctx, scope, entity, version)
}

// Ping reports whether the store is open and, if it can be pinged, reachable.
func (l *lazyStore) Ping(ctx context.Context) error {
	s, err := l.get(ctx)
	if err != nil {
		return err
	}
	if p, ok := s.(once.Pinger); ok {
		return p.Ping(ctx)
	}
	if _, err := s.Get(ctx, once.Key{ID: "once-readyz-probe"}); err != nil && !errors.Is(err, once.ErrNotFound) {
		return err
	}
	return nil
}

// Watch forwards to a store that can notify; others make the caller poll.
func (l *lazyStore) Watch(ctx context.Context, key once.Key) (<-chan struct{}, func(), error) {
	s, err := l.get(ctx)
	if err != nil {
		return nil, nil, err
	}
	w, ok := s.(once.Watcher)
	if !ok {
		return nil, nil, errors.New("once: store cannot notify")
	}
	return w.Watch(ctx, key)
}

// Sweep forwards to a store that sweeps on request.
func (l *lazyStore) Sweep(ctx context.Context, limit int) (int, error) {
	s, err := l.get(ctx)
	if err != nil {
		return 0, err
	}
	if sw, ok := s.(once.Sweeper); ok {
		return sw.Sweep(ctx, limit)
	}
	return 0, nil
}

func (l *lazyStore) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.store != nil {
		return l.store.Close()
	}
	return nil
}
