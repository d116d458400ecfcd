package boltstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/oncehq/once"
)

// A checkpoint copies the overlay's values into the bbolt file in one
// transaction, which also records the sequence number of the last frame it
// covers (meta/walseq). Only then does the writer drop those values from
// the overlay, and only then are the log segments they came from retired:
// at every instant, the log from walseq on holds every change that bbolt
// does not, so a crash at any point loses nothing that was acknowledged.
// Checkpoints run in their own goroutine, beside the writer; bbolt's two
// fsyncs and its page writes are paid once per thousands of changes.

// Defaults of Config.
const (
	DefaultCheckpointRecords  = 8192
	DefaultCheckpointInterval = time.Second
)

const (
	// checkpointBytes starts a checkpoint when the overlay's values reach
	// this size, whatever their number.
	checkpointBytes = 64 << 20
	// overFullFactor: the writer takes no new operations while the overlay
	// holds this many times a checkpoint's worth, until one commits.
	overFullFactor = 4
	// segmentSize is the size a new segment is preallocated to (filled with
	// zeros and synced), so that appending to it needs no metadata sync.
	// Every commit takes at least frameAlign bytes.
	segmentSize = 32 << 20
)

// Keys in bucketMeta: the last frame a checkpoint covers, and the salt of
// the frames written since the last Open.
var (
	keyWALSeq  = []byte("walseq")
	keyWALSalt = []byte("walsalt")
)

// ctlMsg is a message from the checkpointer to the writer: either a
// snapshot request (next is the segment to switch to) or the news that the
// checkpoint of done committed. The writer answers on reply.
type ctlMsg struct {
	next  *segment
	done  *cpSnapshot
	reply chan cpSnapshot
}

// cpSnapshot is what one checkpoint writes: the overlay as of frame upTo.
type cpSnapshot struct {
	entries []cpEntry
	upTo    uint64
	// retired is the segment the writer switched away from, unused the
	// offered segment when the writer had no reason to switch.
	retired, unused *segment
}

type cpEntry struct {
	key string
	val []byte
	seq uint64
}

// control serves a message of the checkpointer, in the writer goroutine,
// between batches.
func (s *Store) control(m ctlMsg) {
	if m.done != nil {
		s.dropCheckpointed(m.done)
		m.reply <- cpSnapshot{}
		return
	}
	m.reply <- s.takeSnapshot(m.next)
}

// takeSnapshot switches the log to next if the current segment holds
// frames, and copies out the overlay. Called by the writer, or by Close once
// the writer has stopped.
func (s *Store) takeSnapshot(next *segment) cpSnapshot {
	snap := cpSnapshot{upTo: s.seq, unused: next}
	if next != nil && s.log.off > 0 {
		snap.retired, s.log, snap.unused = s.log, next, nil
	}
	snap.entries = make([]cpEntry, 0, len(s.ov.m))
	for k, e := range s.ov.m {
		snap.entries = append(snap.entries, cpEntry{key: k, val: e.val, seq: e.seq})
	}
	return snap
}

// dropCheckpointed removes from the overlay the values that bbolt now
// holds; a key written again since the snapshot keeps its newer value.
func (s *Store) dropCheckpointed(snap *cpSnapshot) {
	ov := &s.ov
	ov.mu.Lock()
	for _, e := range snap.entries {
		if cur, ok := ov.m[e.key]; ok && cur.seq == e.seq {
			delete(ov.m, e.key)
			ov.bytes -= len(cur.val)
		}
	}
	ov.mu.Unlock()
}

// checkpointDue reports whether the overlay has grown enough for a
// checkpoint. Writer only.
func (s *Store) checkpointDue() bool {
	return len(s.ov.m) >= s.cpRecords || s.ov.bytes >= checkpointBytes
}

// overFull reports whether the writer must wait for a checkpoint before it
// takes more operations. Writer only.
func (s *Store) overFull() bool {
	return len(s.ov.m) >= overFullFactor*s.cpRecords || s.ov.bytes >= overFullFactor*checkpointBytes
}

// checkpointer is the state of the checkpointing goroutine.
type checkpointer struct {
	s        *Store
	next     *segment   // prepared, to offer the writer at the next checkpoint
	retiring []*segment // switched away from, not yet covered by a checkpoint
	spare    string     // a retired segment's file, to reuse for the next one
	nextNum  uint64     // number of the next segment to create
}

// loop checkpoints when the writer asks (the overlay is big enough), and
// every interval while the overlay is not empty, until Close. A checkpoint
// that fails is tried again at the next tick; while the overlay is over its
// bound the writer fails operations with the error (see batch.run).
func (c *checkpointer) loop(every time.Duration) {
	s := c.s
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var reply chan error
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-t.C:
		case reply = <-s.cpNow:
		}
		err := c.checkpoint()
		if err != nil {
			err = fmt.Errorf("%w: boltstore %s: checkpoint: %w", errCheckpoint, s.path, err)
			s.cpErr.Store(&err)
		} else {
			s.cpErr.Store(nil)
		}
		select { // a writer waiting for this attempt looks again
		case s.cpTried <- struct{}{}:
		default:
		}
		if reply != nil {
			reply <- err
		}
	}
}

// checkpointNow runs a checkpoint and waits for it to commit, or for ctx to
// end (the checkpoint goes on then).
func (s *Store) checkpointNow(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case s.cpNow <- reply:
	case <-s.stop:
		return once.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errCheckpoint = errors.New("checkpoints are failing")

// checkpoint runs one checkpoint through the writer.
func (c *checkpointer) checkpoint() error {
	s := c.s
	if s.ov.len() == 0 && len(c.retiring) == 0 {
		return nil
	}
	// Offer the writer a new segment only if the last switch was covered:
	// while checkpoints fail, the writer stays on one segment rather than
	// leave a new one behind at every attempt.
	if c.next == nil && len(c.retiring) == 0 {
		if err := c.prepare(); err != nil {
			return err
		}
	}
	if s.cpTestHook != nil {
		if err := s.cpTestHook("snapshot"); err != nil {
			return err
		}
	}
	reply := make(chan cpSnapshot, 1)
	select {
	case s.ctl <- ctlMsg{next: c.next, reply: reply}:
	case <-s.stop:
		return nil
	}
	snap := <-reply
	if snap.retired != nil {
		c.retiring = append(c.retiring, snap.retired)
		c.next = nil
	}
	if err := s.writeCheckpoint(&snap); err != nil {
		return err
	}
	// Once the writer dropped the values, readers find them in bbolt.
	select {
	case s.ctl <- ctlMsg{done: &snap, reply: reply}:
		<-reply
	case <-s.stop:
	}
	c.retire()
	return nil
}

// prepare makes the next segment ready: a retired segment's file renamed,
// or a new file filled with zeros and synced. Whatever fails, the number is
// not used again and a spare file stays a spare, wherever it is now.
func (c *checkpointer) prepare() error {
	s := c.s
	num, spare := c.nextNum, c.spare
	c.nextNum++
	c.spare = ""
	g, err := openSegment(s.path, num, spare, s.noSync)
	if err == nil && spare == "" && !s.noSync {
		if err = preallocate(g, segmentSize); err != nil {
			g.f.Close()
		}
	}
	if err != nil {
		for _, p := range []string{segmentPath(s.path, num), spare} {
			if _, serr := os.Lstat(p); p != "" && serr == nil {
				c.spare = p
				break
			}
		}
		return fmt.Errorf("log segment: %w", err)
	}
	c.next = g
	return nil
}

// preallocate fills g with n zero bytes, synchronously (O_DSYNC).
func preallocate(g *segment, n int64) error {
	zeros := alignedBuffer(1 << 20)
	for off := int64(0); off < n; off += int64(len(zeros)) {
		if _, err := g.f.WriteAt(zeros, off); err != nil {
			return err
		}
	}
	return nil
}

// retire closes the segments that the last checkpoint covered, keeping one
// file to reuse.
func (c *checkpointer) retire() {
	for _, g := range c.retiring {
		g.f.Close()
		if c.spare == "" {
			c.spare = g.path
		} else {
			os.Remove(g.path)
		}
	}
	c.retiring = nil
}

// close releases the checkpointer's files. A prepared segment that was
// never used holds no frame of this run and goes. If the last checkpoint
// covered the log (covered), the retired segments and the spare go too;
// else they stay for the next Open, closed.
func (c *checkpointer) close(covered bool) {
	if c.next != nil {
		c.next.f.Close()
		os.Remove(c.next.path)
	}
	if covered {
		c.retire()
		if c.spare != "" {
			os.Remove(c.spare)
		}
		return
	}
	for _, g := range c.retiring {
		g.f.Close()
	}
}

// writeCheckpoint writes snap into bbolt in one transaction.
func (s *Store) writeCheckpoint(snap *cpSnapshot) error {
	if s.cpTestHook != nil {
		if err := s.cpTestHook("commit"); err != nil {
			return err
		}
	}
	slices.SortFunc(snap.entries, func(a, b cpEntry) int { return cmp.Compare(a.key, b.key) })
	return s.db.Update(func(tx *bbolt.Tx) error {
		a := newApplier(tx)
		var k []byte
		for _, e := range snap.entries {
			k = append(k[:0], e.key...)
			if err := a.put(k, e.val); err != nil {
				return err
			}
		}
		if err := a.flush(); err != nil {
			return err
		}
		return setWALSeq(tx, snap.upTo)
	})
}

// applier writes log entries into bbolt and keeps the purge index in step:
// one entry per record, at its purge time. The index's changes wait for
// flush, which applies them in key order: purge times of fresh records are
// all later than the index's existing entries, and bbolt inserts in order
// by appending where it would otherwise shift a growing node at every put.
type applier struct {
	records, purge, versions *bbolt.Bucket
	moves                    map[string]purgeMove
}

// purgeMove is how a record's index entry moves: from its purge time when
// the transaction first touched it (had: it was stored and decoded), to
// the purge time of its last value.
type purgeMove struct {
	from, to time.Time
	had      bool
}

func newApplier(tx *bbolt.Tx) *applier {
	return &applier{
		records:  tx.Bucket(bucketRecords),
		purge:    tx.Bucket(bucketPurge),
		versions: tx.Bucket(bucketVersions),
		moves:    map[string]purgeMove{},
	}
}

// put stores v under the tagged key k. v must stay valid until the
// transaction ends (bbolt keeps a reference to it).
func (a *applier) put(k, v []byte) error {
	switch k[0] {
	case tagVersion:
		return a.versions.Put(k[1:], v)
	case tagRecord:
		return a.putRecord(k[1:], v)
	}
	return fmt.Errorf("%w: log entry with tag %q", errCorrupt, k[0])
}

func (a *applier) putRecord(k, v []byte) error {
	at, err := purgeTimeOf(v)
	if err != nil {
		return fmt.Errorf("record %q: %w", k, err)
	}
	m, seen := a.moves[string(k)]
	if !seen {
		// A stored record that does not decode has no index entry to move.
		if old := a.records.Get(k); old != nil {
			if from, err := purgeTimeOf(old); err == nil {
				m.from, m.had = from, true
			}
		}
	}
	m.to = at
	a.moves[string(k)] = m
	return a.records.Put(k, v)
}

// flush applies the index's changes.
func (a *applier) flush() error {
	var dels, puts [][]byte
	for k, m := range a.moves {
		if m.had {
			if m.from.Equal(m.to) {
				continue
			}
			dels = append(dels, appendPurgeKey(nil, m.from, k))
		}
		puts = append(puts, appendPurgeKey(nil, m.to, k))
	}
	clear(a.moves)
	slices.SortFunc(dels, bytes.Compare)
	slices.SortFunc(puts, bytes.Compare)
	for _, k := range dels {
		if err := a.purge.Delete(k); err != nil {
			return err
		}
	}
	for _, k := range puts {
		if err := a.purge.Put(k, []byte{}); err != nil {
			return err
		}
	}
	return nil
}

func walSeq(tx *bbolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyWALSeq)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func setWALSeq(tx *bbolt.Tx, seq uint64) error {
	return tx.Bucket(bucketMeta).Put(keyWALSeq, binary.BigEndian.AppendUint64(nil, seq))
}
