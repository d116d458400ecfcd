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
// where crc is the CRC-32C of seq and payload, seq numbers frames from 1 up
// across segments without gaps, and key is a tag byte (tagRecord,
// tagVersion) followed by the bbolt key. A frame holds the new value of
// every key its batch changed: replaying frames in order is idempotent.
//
// A retired segment is reused as a later one (renamed, not rewritten), so
// that appending to it overwrites blocks the file system already allocated
// and fdatasync has no metadata to flush. Its old frames stay behind the new
// ones; they never continue the chain of sequence numbers, so recovery stops
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
	num  uint64
	path string
	f    *os.File
	off  int64 // where the next frame goes, a multiple of frameAlign
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
// in order.
func listSegments(db string) ([]uint64, error) {
	matches, err := filepath.Glob(db + walSuffix + "*")
	if err != nil {
		return nil, err
	}
	var nums []uint64
	for _, m := range matches {
		hex := strings.TrimPrefix(m, db+walSuffix)
		if len(hex) != 16 {
			continue
		}
		if n, err := strconv.ParseUint(hex, 16, 64); err == nil {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	return nums, nil
}

// sealFrame fills in the header of frame, whose payload follows the
// frameHeaderLen bytes reserved at its start, as frame seq.
func sealFrame(frame []byte, seq uint64) {
	payload := frame[frameHeaderLen:]
	binary.BigEndian.PutUint64(frame[8:16], seq)
	crc := crc32.Update(0, crcTable, frame[8:16])
	crc = crc32.Update(crc, crcTable, payload)
	binary.BigEndian.PutUint32(frame[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(frame[4:8], crc)
}

// nextFrame reads the frame at the start of b. It returns ok false when b
// holds no whole frame with a matching CRC there: the end of the log, a
// torn write, or old bytes of a reused segment.
func nextFrame(b []byte) (seq uint64, payload []byte, size int, ok bool) {
	if len(b) < frameHeaderLen {
		return 0, nil, 0, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n == 0 || uint64(n) > uint64(len(b)-frameHeaderLen) {
		return 0, nil, 0, false
	}
	seq = binary.BigEndian.Uint64(b[8:16])
	payload = b[frameHeaderLen : frameHeaderLen+int(n)]
	crc := crc32.Update(0, crcTable, b[8:16])
	if crc32.Update(crc, crcTable, payload) != binary.BigEndian.Uint32(b[4:8]) {
		return 0, nil, 0, false
	}
	return seq, payload, frameHeaderLen + int(n), true
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
// writes are synchronous (O_DSYNC).
func openSegment(db string, num uint64, spare string, noSync bool) (*segment, error) {
	path := segmentPath(db, num)
	if spare != "" {
		if err := os.Rename(spare, path); err != nil {
			return nil, err
		}
	}
	flags := os.O_RDWR | os.O_CREATE
	if !noSync {
		flags |= unix.O_DSYNC
	}
	f, err := os.OpenFile(path, flags|unix.O_DIRECT, 0o600)
	if errors.Is(err, unix.EINVAL) {
		// The file system does not do direct I/O (tmpfs): go through the
		// page cache, still synchronously.
		f, err = os.OpenFile(path, flags, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if !noSync {
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return &segment{num: num, path: path, f: f}, nil
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
	if _, err := g.f.WriteAt(buf, g.off); err != nil {
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
