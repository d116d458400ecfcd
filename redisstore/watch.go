package redisstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/oncehq/once"
	"github.com/redis/rueidis"
)

// Watch implements once.Watcher. It returns once the subscription is active
// on the server, so that a change made after Watch returns is announced.
// Returns ErrClosed after Close, or an error wrapping ErrUnavailable if the
// subscription failed or ctx ended first.
func (s *Store) Watch(ctx context.Context, key once.Key) (<-chan struct{}, func(), error) {
	if err := s.check(key); err != nil {
		return nil, nil, err
	}
	_, channel := s.recordKey(key)
	w, sub, err := s.hub.join(channel)
	if err != nil {
		return nil, nil, err
	}
	stop := sync.OnceFunc(func() { s.hub.leave(sub, w) })
	select {
	case <-sub.ready:
	case <-ctx.Done():
		stop()
		return nil, nil, s.unavailable("subscribe", ctx.Err())
	}
	if sub.err != nil {
		stop()
		return nil, nil, s.unavailable("subscribe", sub.err)
	}
	return w, stop, nil
}

// hub shares one SSUBSCRIBE per channel among the watchers of this process
// and ends it when the last one stops.
type hub struct {
	client rueidis.Client
	mu     sync.Mutex
	subs   map[string]*subscription // active, by channel
	ending map[string]*subscription // unsubscribing, by channel
	closed bool
	wg     sync.WaitGroup
}

type subscription struct {
	channel string
	waiters map[chan struct{}]struct{}
	cancel  context.CancelFunc
	ready   chan struct{} // closed once subscribed, or once Receive ended
	done    chan struct{} // closed once Receive ended
	err     error         // why Receive ended before ready; set before ready is closed
	once    sync.Once
}

func newHub(client rueidis.Client) *hub {
	return &hub{client: client, subs: map[string]*subscription{}, ending: map[string]*subscription{}}
}

// join adds a waiter to the channel's subscription, starting one if needed.
func (h *hub) join(channel string) (chan struct{}, *subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, once.ErrClosed
	}
	sub := h.subs[channel]
	if sub == nil {
		ctx, cancel := context.WithCancel(context.Background())
		sub = &subscription{
			channel: channel, waiters: map[chan struct{}]struct{}{}, cancel: cancel,
			ready: make(chan struct{}), done: make(chan struct{}),
		}
		h.subs[channel] = sub
		h.wg.Add(1)
		go h.run(ctx, sub, h.ending[channel])
	}
	w := make(chan struct{}, 1)
	sub.waiters[w] = struct{}{}
	return w, sub, nil
}

// leave removes a waiter; the last one out ends the subscription.
func (h *hub) leave(sub *subscription, w chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(sub.waiters, w)
	if len(sub.waiters) == 0 && h.subs[sub.channel] == sub {
		delete(h.subs, sub.channel)
		h.ending[sub.channel] = sub
		sub.cancel()
	}
}

// run holds the subscription until it is cancelled or fails. It waits for
// the channel's previous subscription to be gone first, so that that one's
// SUNSUBSCRIBE cannot undo this one's SSUBSCRIBE.
func (h *hub) run(ctx context.Context, sub *subscription, prev *subscription) {
	defer h.wg.Done()
	if prev != nil {
		<-prev.done
	}
	ready := func() { sub.once.Do(func() { close(sub.ready) }) }
	rctx := rueidis.WithOnSubscriptionHook(ctx, func(ps rueidis.PubSubSubscription) {
		if ps.Kind == "ssubscribe" && ps.Channel == sub.channel {
			ready()
		}
	})
	rctx = rueidis.WithOnReceiveReturnHook(rctx, func(err error, c rueidis.CommandClient) error {
		if ctx.Err() != nil {
			// The connection is shared: unsubscribe it, or messages for
			// this channel would keep arriving on it.
			uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c.Do(uctx, c.B().Sunsubscribe().Channel(sub.channel).Build())
		}
		return err
	})
	cmd := h.client.B().Ssubscribe().Channel(sub.channel).Build()
	err := h.client.Receive(rctx, cmd, func(rueidis.PubSubMessage) { h.notify(sub) })
	sub.once.Do(func() {
		sub.err = err
		if err == nil {
			sub.err = fmt.Errorf("subscription to a key's channel ended")
		}
		close(sub.ready)
	})
	h.finish(sub)
}

func (h *hub) notify(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range sub.waiters {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// finish forgets an ended subscription and closes its waiters' channels: an
// ended subscription can no longer tell them anything, so they must look.
func (h *hub) finish(sub *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[sub.channel] == sub {
		delete(h.subs, sub.channel)
	}
	if h.ending[sub.channel] == sub {
		delete(h.ending, sub.channel)
	}
	for w := range sub.waiters {
		close(w)
	}
	clear(sub.waiters)
	close(sub.done)
}

// close ends every subscription and waits for them.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	for _, sub := range h.subs {
		sub.cancel()
	}
	h.mu.Unlock()
	h.wg.Wait()
}
