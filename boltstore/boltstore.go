// Package boltstore is a durable once.Store kept in one bbolt file and a
// write-ahead log beside it, for a single process: the embedded store behind
// the CLI's file:PATH.
//
// # Durability
//
// Every write is on disk before the call returns, so an acknowledged
// operation survives SIGKILL and power loss. Writes go through one writer
// goroutine that applies everything queued while the previous commit was
// syncing and appends the new values of the keys it changed to the log as
// one frame, in one synchronous write (O_DSYNC: the data is on disk when
// the write returns), the group commit. A lone caller commits at once
// (there is no timer), and under load one sync serves many callers. The
// log's files are PATH.wal.N, reused in turn so that an append overwrites
// blocks already allocated and the sync has no metadata to flush; they are
// written with O_DIRECT where the file system allows it. A write to the log
// that fails for another reason than a full disk may have left the disk and
// the page cache in disagreement: the store then fails every later write
// with ErrUnavailable until it is opened again.
//
// Values that are in the log but not yet in the bbolt file are kept in
// memory (the overlay). A checkpoint, in the background, copies them into
// the bbolt file in one transaction every DefaultCheckpointInterval or
// DefaultCheckpointRecords changed keys, whichever comes first, and retires
// the log segments it covers; Close checkpoints everything and removes the
// log. Open replays the log that the last checkpoint does not cover (after
// a crash), so nothing acknowledged is lost; a frame cut short by the crash
// was never acknowledged and is dropped. Should checkpoints fall behind, the
// overlay is bounded: at four times a checkpoint's worth the writer waits
// for one, and if checkpoints are failing, writes fail (ErrUnavailable)
// until one succeeds.
//
// Reads (Get, and Claims that cannot acquire the key: replays of completed
// keys, keys in progress) are answered from the overlay or from a read-only
// bbolt transaction, never through the writer, and see only durable state.
//
// A call whose context ends while its operation waits for the writer returns
// the context's error at once; the operation may still be committed.
//
// Expired records are reclaimed a batch at a time, by a background sweeper
// and by Sweep, through an index ordered by purge time, so that no sweep
// scans the whole file.
package boltstore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/fsm"
)

// ErrLocked is wrapped by the error Open returns when another process (or
// another Store in this process) holds the file.
var ErrLocked = errors.New("boltstore: file is locked")

// Defaults of Config.
const (
	DefaultLockTimeout   = time.Second
	DefaultSweepInterval = 5 * time.Second
	DefaultSweepLimit    = 256
)

// Config configures a Store. The zero value is ready to use and durable.
type Config struct {
	// Clock is the store's clock. If nil, once.SystemClock() is used.
	Clock once.Clock
	// LockTimeout is how long Open waits for the file lock held by another
	// process before failing with ErrLocked. Zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// SweepInterval is how often the background sweeper reclaims expired
	// records. Zero means DefaultSweepInterval; a negative value turns the
	// sweeper off (Sweep still works).
	SweepInterval time.Duration
	// SweepLimit is the most records one sweep transaction deletes. Zero
	// means DefaultSweepLimit.
	SweepLimit int
	// CheckpointRecords is how many changed keys the overlay may hold before
	// a checkpoint copies them into the bbolt file. Zero means
	// DefaultCheckpointRecords.
	CheckpointRecords int
	// CheckpointInterval is the longest a change stays only in the log
	// (while the store is open). Zero means DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// NoSync skips fsync on commit. The store is then NOT durable: a crash
	// of the machine may lose or corrupt the file. For tests only.
	NoSync bool
}

// fileFormat is the layout of the buckets, stored under meta/format.
// Format 2 added the write-ahead log (meta/walseq); a format 1 file is
// upgraded in place when opened (it has no log to replay).
const fileFormat = 2

// Bucket names, and the key of the format in bucketMeta.
var (
	bucketMeta     = []byte("meta")
	keyFormat      = []byte("format")
	bucketRecords  = []byte("records")
	bucketPurge    = []byte("purge")
	bucketVersions = []byte("versions")
)

// Store is a once.Store in a bbolt file. It is safe for concurrent use.
type Store struct {
	db    *bbolt.DB
	path  string
	now   once.Clock
	limit int

	// mu orders enqueueing against Close: callers hold it shared while they
	// hand an operation to the writer, Close holds it exclusively to set
	// closed, so that nothing is queued after the writer's last drain.
	mu     sync.RWMutex
	closed atomic.Bool
	queue  chan *op
	stop   chan struct{}
	wg     sync.WaitGroup

	noSync bool

	// ov is the durable state not yet checkpointed into bbolt.
	ov overlay
	// log is the segment the writer appends to, seq the last frame it
	// wrote; both belong to the writer (and to Close after it stopped).
	// salt seeds the CRCs of this run's frames.
	log  *segment
	seq  uint64
	salt []byte
	// carry is an operation the writer took from the queue but left for
	// the next batch (the batch was full). Writer only.
	carry *op
	// cp is the checkpointer's state; ctl carries its messages to the
	// writer, kick the writer's requests for a checkpoint, cpNow requests
	// for one that the caller waits for.
	cp        *checkpointer
	cpRecords int
	ctl       chan ctlMsg
	kick      chan struct{}
	cpNow     chan chan error
	// cpTried wakes a writer that waits for a checkpoint (its overlay is
	// full) after every attempt, successful or not.
	cpTried chan struct{}
	// closing is closed when Close begins, to free callers blocked on a
	// full queue.
	closing chan struct{}
	// cpErr is the error of the last checkpoint, nil if it succeeded;
	// broken is set when the log can no longer be trusted (a failed
	// synchronous write): every later write fails with it.
	cpErr  atomic.Pointer[error]
	broken atomic.Pointer[error]

	// commits and committed count the writer's batches (from when they
	// begin) and the operations they carried, commitTime the time spent in
	// them, for tests and benchmarks.
	commits, committed atomic.Uint64
	commitTime         atomic.Int64
	// testHook, set by a test before its first operation, runs before each
	// operation of a batch; an error it returns fails the batch. cpTestHook,
	// read by the checkpointer, runs before a checkpoint asks the writer
	// for its snapshot ("snapshot") and before its transaction ("commit");
	// an error it returns fails the checkpoint there.
	testHook   func(*op) error
	cpTestHook func(stage string) error
}

var (
	_ once.Store   = (*Store)(nil)
	_ once.Sweeper = (*Store)(nil)
	_ once.Pinger  = (*Store)(nil)
)

// Open opens (creating if needed) the store in the file at path. It fails
// with an error wrapping ErrLocked, after cfg.LockTimeout, if another
// process holds the file.
func Open(path string, cfg Config) (*Store, error) {
	if path == "" {
		return nil, errors.New("boltstore: empty file path")
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      cfg.LockTimeout,
		NoSync:       cfg.NoSync,
		FreelistType: bbolt.FreelistMapType,
		// The freelist is rebuilt at Open rather than written at every
		// checkpoint: checkpoints of a large file write fewer pages.
		NoFreelistSync: true,
	})
	if errors.Is(err, bberrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s: another process holds it (waited %v); a file store serves one "+
			"process at a time: stop the other one, or share a store (redis://, postgres://, once+http://)",
			ErrLocked, path, cfg.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	s, err := newStore(db, path, cfg)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	s.start(cfg.SweepInterval, cfg.CheckpointInterval)
	return s, nil
}

// createBuckets creates the buckets of a new file and checks the format of
// an existing one, so that a later layout is never misread as this one.
func createBuckets(tx *bbolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	switch v := meta.Get(keyFormat); {
	case v == nil:
		if err := meta.Put(keyFormat, []byte{fileFormat}); err != nil {
			return err
		}
	case bytes.Equal(v, []byte{1}):
		if err := meta.Put(keyFormat, []byte{fileFormat}); err != nil {
			return err
		}
	case !bytes.Equal(v, []byte{fileFormat}):
		return fmt.Errorf("file format %x, this version reads %x", v, fileFormat)
	}
	for _, name := range [][]byte{bucketRecords, bucketPurge, bucketVersions} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// newStore creates the buckets of a new file, replays the log of the last
// run and opens the log's first segment.
func newStore(db *bbolt.DB, path string, cfg Config) (*Store, error) {
	s := &Store{
		db:        db,
		path:      path,
		now:       cfg.Clock,
		limit:     cmp.Or(max(cfg.SweepLimit, 0), DefaultSweepLimit),
		noSync:    cfg.NoSync,
		ov:        overlay{m: map[string]ovEntry{}},
		cpRecords: cmp.Or(max(cfg.CheckpointRecords, 0), DefaultCheckpointRecords),
		queue:     make(chan *op, maxBatch),
		stop:      make(chan struct{}),
		ctl:       make(chan ctlMsg),
		kick:      make(chan struct{}, 1),
		cpNow:     make(chan chan error),
		cpTried:   make(chan struct{}, 1),
		closing:   make(chan struct{}),
	}
	if s.now == nil {
		s.now = once.SystemClock()
	}
	if err := db.Update(createBuckets); err != nil {
		return nil, err
	}
	last, nums, err := recoverLog(db, path)
	if err != nil {
		return nil, err
	}
	s.seq = last
	// The frames of this run verify only under a fresh salt, so that no
	// frame left from an earlier run can pass for one of them.
	s.salt = make([]byte, saltLen)
	if _, err := rand.Read(s.salt); err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyWALSalt, s.salt) }); err != nil {
		return nil, err
	}
	// Every segment found is covered now: reuse the last one's file for the
	// first segment of this run and remove the others.
	var spare string
	for i, num := range nums {
		if i == len(nums)-1 {
			spare = segmentPath(path, num)
		} else if err := os.Remove(segmentPath(path, num)); err != nil {
			return nil, err
		}
	}
	first := uint64(1)
	if len(nums) > 0 {
		first = nums[len(nums)-1] + 1
	}
	if s.log, err = openSegment(path, first, spare, s.noSync); err != nil {
		return nil, fmt.Errorf("log segment: %w", err)
	}
	s.cp = &checkpointer{s: s, nextNum: first + 1}
	return s, nil
}

func (s *Store) start(sweepEvery, checkpointEvery time.Duration) {
	s.wg.Add(2)
	go s.writer()
	go s.cp.loop(cmp.Or(max(checkpointEvery, 0), DefaultCheckpointInterval))
	if sweepEvery == 0 {
		sweepEvery = DefaultSweepInterval
	}
	if sweepEvery > 0 {
		s.wg.Add(1)
		go s.sweeper(sweepEvery)
	}
}

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Claim implements once.Store. A claim that would not acquire the key is
// answered from a read-only transaction; only one that would is sent to the
// writer, which decides again inside its transaction.
func (s *Store) Claim(ctx context.Context, req once.ClaimRequest) (once.ClaimResult, error) {
	if err := req.Validate(); err != nil {
		return once.ClaimResult{}, err
	}
	res, acquire, err := s.peekClaim(req)
	if err != nil || !acquire {
		return res, err
	}
	req.Fingerprint = cloneBytes(req.Fingerprint)
	o := newOp(opClaim, req.Key)
	o.req = req
	if err := s.do(ctx, o); err != nil {
		return once.ClaimResult{}, err
	}
	res, err = o.claim, o.err
	o.free()
	return res, err
}

// peekClaim runs the claim against the last durable state without writing.
// The snapshot was the state at some instant between two clock readings; an
// outcome is answered from it only if it is the same at both (outcomes move
// one way with time: live, then abandoned, then expired), so it held at that
// instant. Anything else, and every claim that may acquire, goes to the
// writer, which decides inside its transaction.
func (s *Store) peekClaim(req once.ClaimRequest) (res once.ClaimResult, acquire bool, err error) {
	r, before, after, err := s.snapshot(req.Key)
	if err != nil || r == nil {
		return res, err == nil, err
	}
	next1, cr1 := fsm.Claim(r, req, before)
	next2, cr2 := fsm.Claim(r, req, after)
	if next1 != nil || next2 != nil || cr1.Outcome != cr2.Outcome {
		return res, true, nil
	}
	return cr2, false, nil
}

// Complete implements once.Store.
func (s *Store) Complete(ctx context.Context, key once.Key, token uint64, result once.Result) error {
	o := newOp(opComplete, key)
	o.token = token
	// A caller whose ctx ends stops waiting while the writer may still be
	// encoding: it must be free to reuse its buffers.
	o.result = result.Clone()
	return s.write(ctx, o)
}

// Release implements once.Store.
func (s *Store) Release(ctx context.Context, key once.Key, token uint64) error {
	o := newOp(opRelease, key)
	o.token = token
	return s.write(ctx, o)
}

// Extend implements once.Store. Returns ErrInvalidArgument if lease is not
// positive.
func (s *Store) Extend(ctx context.Context, key once.Key, token uint64, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be positive, got %v", once.ErrInvalidArgument, lease)
	}
	o := newOp(opExtend, key)
	o.token = token
	o.lease = lease
	return s.write(ctx, o)
}

// Delete implements once.Store.
func (s *Store) Delete(ctx context.Context, key once.Key) error {
	return s.write(ctx, newOp(opDelete, key))
}

// write validates o's key, runs o through the writer and frees it.
func (s *Store) write(ctx context.Context, o *op) error {
	if err := o.key.Validate(); err != nil {
		o.free()
		return err
	}
	if err := s.do(ctx, o); err != nil {
		return err
	}
	err := o.err
	o.free()
	return err
}

// Get implements once.Store. It never writes. Like peekClaim, it answers
// only when the record is live at both clock readings or at neither; a
// record whose retention passed in between is read again.
func (s *Store) Get(_ context.Context, key once.Key) (once.Record, error) {
	if err := key.Validate(); err != nil {
		return once.Record{}, err
	}
	for {
		r, before, after, err := s.snapshot(key)
		if err != nil {
			return once.Record{}, err
		}
		live, err := fsm.Get(r, after)
		if _, errBefore := fsm.Get(r, before); (err == nil) != (errBefore == nil) {
			continue // the retention deadline fell between the readings
		}
		if err != nil {
			return once.Record{}, err
		}
		return *live, nil
	}
}

// Advance implements once.Store. A version that would not apply is answered
// without writing.
func (s *Store) Advance(ctx context.Context, scope, entity string, version uint64) (bool, uint64, error) {
	key := once.Key{Scope: scope, ID: entity}
	if err := key.Validate(); err != nil {
		return false, 0, err
	}
	cur, err := s.version(key)
	if err != nil {
		return false, 0, err
	}
	if applied, _ := fsm.Advance(cur, version); !applied {
		return false, cur, nil
	}
	o := newOp(opAdvance, key)
	o.version = version
	if err := s.do(ctx, o); err != nil {
		return false, 0, err
	}
	applied, cur, err := o.applied, o.current, o.err
	o.free()
	return applied, cur, err
}

// Ping implements once.Pinger: it opens and closes a read transaction.
func (s *Store) Ping(context.Context) error {
	if s.closed.Load() {
		return once.ErrClosed
	}
	return s.storageErr(s.db.View(func(*bbolt.Tx) error { return nil }))
}

// Close stops the writer and the sweeper and closes the file. Operations
// queued before Close complete; later calls return ErrClosed. Closing twice
// returns nil.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.closing) // callers waiting for room in the queue give up
	// Wait for every caller that is handing an operation to the writer:
	// after this, nothing more can be queued.
	s.mu.Lock()
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	err := s.closeLog()
	if cerr := s.db.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("boltstore: close %s: %w", s.path, cerr)
	}
	return err
}

// closeLog checkpoints the whole overlay, once the writer and the
// checkpointer have stopped, and removes the log, which the bbolt file then
// covers. If the checkpoint fails, the log stays for the next Open.
func (s *Store) closeLog() error {
	snap := s.takeSnapshot(nil)
	err := s.writeCheckpoint(&snap)
	s.log.f.Close()
	s.cp.close(err == nil)
	if err != nil {
		return fmt.Errorf("boltstore: close %s: checkpoint (the log is kept for the next Open): %w", s.path, err)
	}
	os.Remove(s.log.path)
	if !s.noSync {
		syncDir(filepath.Dir(s.path))
	}
	return nil
}

// version reads the current version of key (0 when never set).
func (s *Store) version(key once.Key) (uint64, error) {
	if s.closed.Load() {
		return 0, once.ErrClosed
	}
	var kbuf [64]byte
	var cur uint64
	err := s.readDurable(appendTagged(kbuf[:0], tagVersion, key.Scope, key.ID), func(v []byte) error {
		var err error
		cur, err = decodeVersion(v)
		return err
	})
	if err != nil {
		return 0, s.keyErr(key, err)
	}
	return cur, nil
}

// keyErr translates a storage error met on key.
func (s *Store) keyErr(key once.Key, err error) error {
	if errors.Is(err, errCorrupt) {
		return fmt.Errorf("%w: %s: key %q: %w", once.ErrUnavailable, s.path, key, err)
	}
	return s.storageErr(err)
}

// storageErr translates an error of bbolt into ErrClosed or ErrUnavailable.
func (s *Store) storageErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bberrors.ErrDatabaseNotOpen) || s.closed.Load():
		return once.ErrClosed
	}
	return fmt.Errorf("%w: boltstore %s: %w", once.ErrUnavailable, s.path, err)
}

// fail marks the store broken by err, for good, and returns the error every
// later write gets.
func (s *Store) fail(err error) error {
	e := fmt.Errorf("%w: boltstore %s: %w (reopen the store)", once.ErrUnavailable, s.path, err)
	s.broken.CompareAndSwap(nil, &e)
	return *s.broken.Load()
}

// failed returns the error that writes fail with now: the store is broken,
// or its overlay is full and checkpoints are failing. Writer only.
func (s *Store) failed() error {
	if p := s.broken.Load(); p != nil {
		return *p
	}
	if s.overFull() {
		if p := s.cpErr.Load(); p != nil {
			return fmt.Errorf("%w: %w", once.ErrUnavailable, *p)
		}
	}
	return nil
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}
