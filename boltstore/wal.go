package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The write-ahead log is a series of segment files next to the bbolt file,
// named PATH.wal.NNNNNNNNNNNNNNNN (a segment number, in hexadecimal, that
// only grows). Each group commit appends one frame with one write to a file
// opened with O_DSYNC (the write returns once the frame is on disk, as
// write then fdatasync would, in one system call) and, where the file
// system allows it, O_DIRECT (no page cache: on this project's machine a
// sync write then costs half the kernel CPU and a third less time when the
// CPUs are busy), before any caller of the batch returns. Frames start at
// multiples of frameAlign, zero-padded to the next one, as direct I/O
// requires; a write never touches the blocks of an earlier frame:
//
//	frame   = length u32 | crc u32 | seq u64 | payload    (big-endian)
//	payload = entry*
//	entry   = uvarint len(key) | key | uvarint len(value) | value
//
// where crc is the CRC-32C of the run's salt (see saltLen), seq and
// payload, seq numbers frames from 1 up across segments without gaps, and
// key is a tag byte (tagRecord, tagVersion) followed by the bbolt key. A
// frame holds the new value of every key its batch changed: replaying
// frames in order is idempotent.
//
// A retired segment is reused as a later one (renamed, not rewritten), so
// that appending to it overwrites blocks the file system already allocated
// and the sync has no metadata to flush. Its old frames stay behind the new
// ones; they never continue the chain of sequence numbers (and those of an
// earlier run do not even verify under this run's salt), so recovery stops
// at them.
const (
	walSuffix      = ".wal."
	frameHeaderLen = 16
	frameAlign     = 4096
	// maxFrame bounds a frame's payload, so that a corrupt length can never
	// make recovery allocate more than this.
	maxFrame = 1<<31 - 1
)

// Tags of the keys in frames and in the overlay.
const (
	tagRecord  = 'r'
	tagVersion = 'v'
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// segment is one log file.
type segment struct {
	num    uint64
	path   string
	f      *os.File
	sync   bool  // writes are synchronous (the store is not NoSync)
	direct bool  // f was opened with O_DIRECT
	off    int64 // where the next frame goes, a multiple of frameAlign
	// buf is the aligned buffer frames are copied into for writing.
	buf []byte
}

// alignUp rounds n up to a multiple of frameAlign.
func alignUp(n int) int { return (n + frameAlign - 1) &^ (frameAlign - 1) }

// alignedBuffer returns n zero bytes whose address is a multiple of
// frameAlign, as direct I/O requires.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+frameAlign)
	skip := (frameAlign - int(uintptr(unsafe.Pointer(&b[0]))&(frameAlign-1))) & (frameAlign - 1)
	return b[skip : skip+n : skip+n]
}

func segmentPath(db string, num uint64) string {
	return fmt.Sprintf("%s%s%016x", db, walSuffix, num)
}

// listSegments returns the numbers of the log segments of the bbolt file db,
// in order. It reads db's directory rather than globbing, so that any path
// works (./once.db, a directory named tenant[1]).
func listSegments(db string) ([]uint64, error) {
	ents, err := os.ReadDir(filepath.Dir(db))
	if err != nil {
		return nil, err
	}
	prefix := filepath.Base(db) + walSuffix
	var nums []uint64
	for _, e := range ents {
		hex, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || len(hex) != 16 {
			continue
		}
		if n, err := strconv.ParseUint(hex, 16, 64); err == nil {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	return nums, nil
}

// saltLen is the length of the salt that every frame's CRC starts from: a
// random value that the store draws at each Open (kept in the bbolt file's
// meta/walsalt before the first frame that uses it). Frames left in a reused
// segment by an earlier run do not verify under the new salt, and bytes of a
// result cannot be made to look like a frame without knowing it.
const saltLen = 8

// frameCRC is the CRC-32C of salt, seq (frame[8:16]) and the payload.
func frameCRC(salt, seqAndPayload []byte) uint32 {
	return crc32.Update(crc32.Update(0, crcTable, salt), crcTable, seqAndPayload)
}

// sealFrame fills in the header of frame, whose payload follows the
// frameHeaderLen bytes reserved at its start, as frame seq.
func sealFrame(frame []byte, seq uint64, salt []byte) {
	binary.BigEndian.PutUint64(frame[8:16], seq)
	binary.BigEndian.PutUint32(frame[0:4], uint32(len(frame)-frameHeaderLen))
	binary.BigEndian.PutUint32(frame[4:8], frameCRC(salt, frame[8:]))
}

// nextFrame reads the frame at the start of b. It returns ok false when b
// holds no whole frame with a matching CRC there: the end of the log, a
// torn write, or old bytes of a reused segment.
func nextFrame(b, salt []byte) (seq uint64, payload []byte, size int, ok bool) {
	if len(b) < frameHeaderLen {
		return 0, nil, 0, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n == 0 || uint64(n) > uint64(len(b)-frameHeaderLen) {
		return 0, nil, 0, false
	}
	size = frameHeaderLen + int(n)
	if frameCRC(salt, b[8:size]) != binary.BigEndian.Uint32(b[4:8]) {
		return 0, nil, 0, false
	}
	return binary.BigEndian.Uint64(b[8:16]), b[frameHeaderLen:size], size, true
}

// appendEntry appends one entry of a frame's payload.
func appendEntry(dst, key, value []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendUvarint(dst, uint64(len(value)))
	return append(dst, value...)
}

// entries calls fn with each entry of payload, whose slices alias it.
func entries(payload []byte, fn func(key, value []byte) error) error {
	d := decoder{b: payload}
	for len(d.b) > 0 {
		k, v := d.bytes(), d.bytes()
		if d.err != nil {
			return d.err
		}
		if len(k) < 2 {
			return fmt.Errorf("%w: log entry with a key of %d bytes", errCorrupt, len(k))
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// openSegment creates segment num, reusing the file of the retired segment
// spare when there is one, and makes its name durable. Unless noSync, its
// writes are synchronous (O_DSYNC), and direct (O_DIRECT) where the file
// system allows it. A segment of that number must not exist yet. If it
// fails after renaming spare, the file stays at the segment's path.
func openSegment(db string, num uint64, spare string, noSync bool) (*segment, error) {
	path := segmentPath(db, num)
	flags := os.O_RDWR
	if spare == "" {
		flags |= os.O_CREATE | os.O_EXCL
	} else {
		// A rename would replace a file of that name: refuse instead.
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("%s exists already", path)
		}
		if err := os.Rename(spare, path); err != nil {
			return nil, err
		}
	}
	g := &segment{num: num, path: path, sync: !noSync}
	if err := g.open(flags); err != nil {
		return nil, err
	}
	if g.sync {
		if err := syncDir(filepath.Dir(path)); err != nil {
			g.f.Close()
			return nil, err
		}
	}
	return g, nil
}

// open opens g's file, with O_DIRECT first where g syncs.
func (g *segment) open(flags int) error {
	if g.sync {
		flags |= unix.O_DSYNC
		f, err := os.OpenFile(g.path, flags|unix.O_DIRECT, 0o600)
		if err == nil {
			g.f, g.direct = f, true
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		// The file system does not do direct I/O (tmpfs): go through the
		// page cache, still synchronously.
	}
	f, err := os.OpenFile(g.path, flags, 0o600)
	g.f, g.direct = f, false
	return err
}

// write puts frame at the segment's end, padded to a multiple of
// frameAlign, durably unless the store is NoSync. A failed write leaves the
// offset where it was, so the next frame overwrites what it may have
// written.
func (g *segment) write(frame []byte) error {
	n := alignUp(len(frame))
	if cap(g.buf) < n {
		g.buf = alignedBuffer(max(n, 64<<10))
	}
	buf := g.buf[:n]
	clear(buf[copy(buf, frame):])
	_, err := g.f.WriteAt(buf, g.off)
	if err != nil && g.direct && errors.Is(err, unix.EINVAL) {
		// A file system that accepts O_DIRECT at open but not for this
		// write (EINVAL comes before any byte is written): go on through
		// the page cache.
		old := g.f
		if err = g.open(os.O_RDWR); err == nil {
			old.Close()
			_, err = g.f.WriteAt(buf, g.off)
		} else {
			g.f = old
		}
	}
	if err != nil {
		return err
	}
	g.off += int64(n)
	if cap(g.buf) > maxArena {
		g.buf = nil
	}
	return nil
}

// noSpace reports whether a write failed for want of space: nothing was
// synced then, and the store may go on. Any other failure of a synchronous
// write may be a failed flush, after which the page cache cannot be
// trusted to hold what the file holds.
func noSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
