package boltstore

import (
	"bytes"
	"fmt"
	"os"

	"go.etcd.io/bbolt"
)

// recoverLog applies to db, at Open, the frames of the log that its last
// checkpoint does not cover, checkpointing them segment by segment. It
// returns the sequence number of the last frame (or of the checkpoint) and
// the numbers of the segments it found, all of them covered now.
//
// Frames are read from the start of each segment while their CRC matches
// and their sequence numbers follow one another; what comes after is a torn
// last write or old bytes of a reused segment. Frames the checkpoint covers
// are skipped. The first frame it does not cover must be the next one, and
// so on without a gap across segments: a frame missing in between means the
// log is damaged, and Open fails rather than lose it silently.
func recoverLog(db *bbolt.DB, path string) (last uint64, nums []uint64, err error) {
	var cp uint64
	var salt []byte
	err = db.View(func(tx *bbolt.Tx) error {
		cp, salt = walSeq(tx), bytes.Clone(tx.Bucket(bucketMeta).Get(keyWALSalt))
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	last = cp
	if nums, err = listSegments(path); err != nil {
		return 0, nil, err
	}
	for _, num := range nums {
		seg := segmentPath(path, num)
		data, err := os.ReadFile(seg)
		if err != nil {
			return 0, nil, err
		}
		payloads, next, err := scanSegment(data, cp, last, salt)
		if err != nil {
			return 0, nil, fmt.Errorf("log %s: %w", seg, err)
		}
		last = next
		if len(payloads) == 0 {
			continue
		}
		err = db.Update(func(tx *bbolt.Tx) error {
			a := newApplier(tx)
			for _, p := range payloads {
				if err := entries(p, a.put); err != nil {
					return err
				}
			}
			if err := a.flush(); err != nil {
				return err
			}
			return setWALSeq(tx, last)
		})
		if err != nil {
			return 0, nil, fmt.Errorf("log %s: %w", seg, err)
		}
	}
	return last, nums, nil
}

// scanSegment returns the payloads of the frames of the segment data that
// the checkpoint cp does not cover, given that the log's frames so far end
// at last, and the number of the last frame then. salt is the one the
// frames were written with.
func scanSegment(data []byte, cp, last uint64, salt []byte) (payloads [][]byte, _ uint64, _ error) {
	for off, prev := 0, uint64(0); ; {
		seq, payload, size, ok := nextFrame(data[off:], salt)
		if !ok || (prev != 0 && seq != prev+1) {
			return payloads, last, nil
		}
		off, prev = min(off+alignUp(size), len(data)), seq
		switch {
		case seq <= cp:
			// covered by the checkpoint
		case seq == last+1:
			payloads = append(payloads, payload)
			last = seq
		default:
			return nil, 0, fmt.Errorf("frame %d follows frame %d: frames are missing "+
				"(were log files of another store copied here?)", seq, last)
		}
	}
}
