package redisstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// A write is one operation of writeScript on one record.
type write struct {
	ctx  context.Context
	key  string
	args []string      // the operation's name, then its arguments
	done chan struct{} // closed once reply is set, if the write was queued
	reply
}

// size returns how many bytes of keys and arguments w adds to a call.
func (w *write) size() int {
	n := len(w.key)
	for _, a := range w.args {
		n += len(a)
	}
	return n
}

// reply is what a write got back.
type reply struct {
	msg rueidis.RedisMessage // the write's code or outcome, or its error
	rec rueidis.RedisMessage // the record a claim returns
	now int64                // the server's clock in its script call, µs
	ran bool                 // the script ran: msg, rec and now are set
	err error                // if !ran, why not; if ran, a WAIT shortfall
}

// Batching limits. Up to maxInFlight script calls of writes are on their way
// at once; the writes started meanwhile wait, and go together in the next
// call, at most maxBatch to a call so that one call holds Redis only briefly.
//
// maxBatchBytes bounds the keys and arguments of one call (its first write
// goes whatever its size). Redis limits each argument (proto-max-bulk-len),
// and batching never merges arguments, but it holds all of a command's
// arguments at once, counts them as its client's memory (a Redis with
// maxmemory-clients closes a client over that, failing every write on the
// connection) and copies them again into Lua: a call carrying many large
// results could fail where each alone would not.
const (
	maxInFlight   = 2
	maxBatch      = 128
	maxBatchBytes = 16 << 20
)

// batcher runs concurrent writes of a standalone Redis as few script calls
// (group commit). A write that finds a call slot free goes at once, alone,
// from its caller's goroutine; one that does not waits for a call to end and
// goes with the writes queued with it. Each write is atomic and reads the
// clock once, as alone, in one round trip; sharing a call only saves Redis
// the work that every script call costs (EVALSHA, TIME) and the client that
// of a command per write. In a cluster the keys of one call must share a
// slot, so there every write goes alone; on a standalone client they must
// all reach one server, which safe makes sure of.
type batcher struct {
	s        *Store
	mode     atomic.Int32 // a Batching: BatchAuto until the probe answers, BatchOff after CROSSSLOT
	probing  sync.Mutex   // held while the probe runs; guards retryAt
	retryAt  time.Time    // no probe before then: the last one got no answer
	mu       sync.Mutex
	queue    []*write
	inFlight int
}

// do runs w and returns its reply.
func (b *batcher) do(w *write) reply {
	b.mu.Lock()
	if b.inFlight < maxInFlight {
		b.inFlight++
		b.mu.Unlock()
		b.s.send(w.ctx, []*write{w})
		b.next()
		return w.reply
	}
	w.done = make(chan struct{})
	b.queue = append(b.queue, w)
	b.mu.Unlock()
	select {
	case <-w.done:
		return w.reply
	case <-w.ctx.Done():
		select {
		case <-w.done:
			return w.reply
		default:
			// The write may still go out, in a call already on its way.
			return reply{err: b.s.unavailable("script", w.ctx.Err())}
		}
	}
}

// next sends the writes queued while a call was on its way, from a new
// goroutine, or frees the call's slot if there are none.
func (b *batcher) next() {
	b.mu.Lock()
	batch := b.take()
	if batch == nil {
		b.inFlight--
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	go func() {
		ctx, cancel := batchContext(batch)
		if len(batch) > 1 && !b.safe(ctx) {
			b.s.sendEach(batch)
		} else {
			b.s.send(ctx, batch)
		}
		cancel()
		b.next()
	}()
}

// take removes the writes of the next call from the queue, up to maxBatch
// writes and maxBatchBytes, dropping those whose callers are gone (not sent,
// they certainly did not happen). b.mu is held.
func (b *batcher) take() []*write {
	var batch []*write
	size := 0
	for len(b.queue) > 0 && len(batch) < maxBatch {
		w := b.queue[0]
		if w.ctx.Err() == nil {
			n := w.size()
			if len(batch) > 0 && size+n > maxBatchBytes {
				break
			}
			batch = append(batch, w)
			size += n
		}
		b.queue[0] = nil
		b.queue = b.queue[1:]
	}
	if len(b.queue) == 0 {
		b.queue = nil
	}
	return batch
}

// batchContext bounds a call by the latest deadline of its writes, and by
// none if one of them has none. It does not end when a caller leaves: the
// others still wait for the call.
func batchContext(batch []*write) (context.Context, context.CancelFunc) {
	var last time.Time
	for _, w := range batch {
		d, ok := w.ctx.Deadline()
		if !ok {
			return context.Background(), func() {}
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(context.Background(), last)
}

// send runs batch as one call of writeScript and hands each write its reply.
// A server that refuses a call of several writes because their keys are in
// different slots (CROSSSLOT: a proxy that shards by slot) ran none of them:
// the writes go again one by one, and the store stops batching.
func (s *Store) send(ctx context.Context, batch []*write) {
	keys := make([]string, len(batch))
	var args []string
	if len(batch) == 1 {
		keys[0], args = batch[0].key, batch[0].args
	} else {
		n := 0
		for _, w := range batch {
			n += len(w.args)
		}
		args = make([]string, 0, n)
		for i, w := range batch {
			keys[i] = w.key
			args = append(args, w.args...)
		}
	}
	msg, ran, err := s.call(ctx, writeScript, keys, args)
	if !ran && len(batch) > 1 && isRedisErr(err, "CROSSSLOT") {
		s.batch.mode.Store(int32(BatchOff))
		s.sendEach(batch)
		return
	}
	var r []rueidis.RedisMessage
	var now int64
	if ran {
		r, now, err = s.writeReplies(msg, len(batch), err)
		ran = r != nil
	}
	for i, w := range batch {
		w.reply = reply{now: now, ran: ran, err: err}
		if ran {
			w.msg, w.rec = r[2*i+1], r[2*i+2]
		}
		if w.done != nil {
			close(w.done)
		}
	}
}

// sendEach runs the writes of batch one by one, each a call of its own.
func (s *Store) sendEach(batch []*write) {
	for _, w := range batch {
		s.send(w.ctx, []*write{w})
	}
}

// writeReplies checks writeScript's reply {now, then two values per write}.
// werr is the call's WAIT shortfall, returned unless the reply is
// unreadable.
func (s *Store) writeReplies(msg rueidis.RedisMessage, n int, werr error) ([]rueidis.RedisMessage, int64, error) {
	r, err := msg.ToArray()
	if err != nil || len(r) != 2*n+1 {
		return nil, 0, s.corrupt(fmt.Errorf("%w: %d values in the reply to %d writes", errCorrupt, len(r), n))
	}
	now, err := r[0].ToInt64()
	if err != nil {
		return nil, 0, s.corrupt(err)
	}
	return r, now, werr
}
