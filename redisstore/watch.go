package redisstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/oncehq/once"
	"github.com/redis/rueidis"
)

// Watch implements once.Watcher. Once the subscription to the record's
// channel is active on the server, Watch marks the record as watched, so that
// a change made after Watch returns is announced. If the record is not in
// progress at that moment (completed, released, absent), there is nothing to
// wait for: the channel receives a value at once, and the caller looks again.
// Returns ErrClosed after Close, or an error wrapping ErrUnavailable if the
// subscription or the mark failed or ctx ended first.
func (s *Store) Watch(ctx context.Context, key once.Key) (<-chan struct{}, func(), error) {
	if err := s.check(key); err != nil {
		return nil, nil, err
	}
	rec := s.recordKey(key)
	w, sub, err := s.hub.join(rec)
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
	msg, err := s.run(ctx, watchScript, []string{rec}, nil)
	if err != nil {
		stop()
		return nil, nil, err
	}
	if waiting, err := msg.ToInt64(); err != nil || waiting == 0 {
		s.hub.wake(sub, w)
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
		wake(w)
	}
}

// wake wakes one waiter of sub, unless it has left or sub has ended (which
// closed its channel).
func (h *hub) wake(sub *subscription, w chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := sub.waiters[w]; ok {
		wake(w)
	}
}

func wake(w chan struct{}) {
	select {
	case w <- struct{}{}:
	default:
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
