package redisstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/oncehq/once"
	"github.com/redis/rueidis"
)

// maxDuration caps leases and retentions sent to Redis (about 100 years), so
// that now + lease + retention in microseconds stays below 2^53, the largest
// integer a Lua double holds exactly.
const maxDuration = 100 * 365 * 24 * time.Hour

// micros converts d to whole microseconds, rounding up so that a positive
// duration never becomes zero.
func micros(d time.Duration) string {
	d = min(d, maxDuration)
	return strconv.FormatInt(int64((d+time.Microsecond-1)/time.Microsecond), 10)
}

// slotHash names a record or version in keys: the hex SHA-256 (first 128
// bits) of the length-prefixed scope and id. Hashing keeps keys short and
// free of '{' and '}', so the hash tag around it always holds: every key of
// one record lands in one cluster slot.
func slotHash(scope, id string) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(scope)))])
	h.Write([]byte(scope))
	h.Write([]byte(id))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// encodeMeta encodes m canonically (keys sorted, each key and value
// uvarint-length-prefixed), so that equal maps encode to equal bytes and the
// scripts can compare results byte for byte. A nil or empty map encodes to
// the empty string.
func encodeMeta(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	size := 0
	for k, v := range m {
		keys = append(keys, k)
		size += len(k) + len(v) + 2*binary.MaxVarintLen64
	}
	slices.Sort(keys)
	b := make([]byte, 0, size)
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(m[k])))
		b = append(b, m[k]...)
	}
	return string(b)
}

var errCorrupt = errors.New("redisstore: corrupt record")

// encodeKey encodes a key for the record's k field: the scope's length as a
// uvarint, the scope, the ID.
func encodeKey(k once.Key) string {
	b := binary.AppendUvarint(make([]byte, 0, len(k.Scope)+len(k.ID)+2), uint64(len(k.Scope)))
	return string(append(append(b, k.Scope...), k.ID...))
}

// decodeKey reverses encodeKey.
func decodeKey(s string) (once.Key, error) {
	scope, id, err := readString(s)
	if err != nil {
		return once.Key{}, err
	}
	return once.Key{Scope: scope, ID: id}, nil
}

// decodeMeta reverses encodeMeta. It returns nil for the empty string.
func decodeMeta(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	m := make(map[string]string)
	for s != "" {
		k, rest, err := readString(s)
		if err != nil {
			return nil, err
		}
		v, rest, err := readString(rest)
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%w: metadata key repeated", errCorrupt)
		}
		m[k] = v
		s = rest
	}
	return m, nil
}

func readString(s string) (v, rest string, err error) {
	n, w := binary.Uvarint([]byte(s[:min(len(s), binary.MaxVarintLen64)]))
	if w <= 0 || n > uint64(len(s)-w) {
		return "", "", fmt.Errorf("%w: bad length prefix", errCorrupt)
	}
	return s[w : w+int(n)], s[w+int(n):], nil
}

// Positions in a script's record reply, after the leading code and now.
const (
	fFingerprint = iota + 2
	fState
	fToken
	fAttempts
	fLease
	fLeaseExpires
	fExpires
	fCreated
	fUpdated
	fCompleted
	fData
	fMeta
	replyLen
	fKey = replyLen // Get's reply only
)

// reply reads a script's array reply: its fields as strings ("" for a
// missing field, which Lua sends as false, i.e. null or a RESP3 boolean).
type reply []rueidis.RedisMessage

func (r reply) str(i int) string {
	if i >= len(r) || !r[i].IsString() {
		return ""
	}
	s, _ := r[i].ToString()
	return s
}

func (r reply) int(i int) (int64, error) {
	if i >= len(r) {
		return 0, fmt.Errorf("%w: reply has %d fields", errCorrupt, len(r))
	}
	if r[i].IsInt64() {
		return r[i].ToInt64()
	}
	if !r[i].IsString() {
		return 0, nil
	}
	return r[i].AsInt64()
}

func (r reply) time(i int) (time.Time, error) {
	us, err := r.int(i)
	if err != nil || us == 0 {
		return time.Time{}, err
	}
	return time.UnixMicro(us), nil
}

// record decodes the record fields of a reply.
func (r reply) record(key once.Key) (once.Record, error) {
	if len(r) < replyLen {
		return once.Record{}, fmt.Errorf("%w: reply has %d fields, want %d", errCorrupt, len(r), replyLen)
	}
	rec := once.Record{Key: key, Result: once.Result{}}
	var ints [3]int64
	for i, f := range []int{fState, fAttempts, fLease} {
		v, err := r.int(f)
		if err != nil {
			return once.Record{}, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		ints[i] = v
	}
	if ints[0] < 1 || ints[0] > 3 || ints[1] < 0 || ints[1] > math.MaxUint32 || ints[2] < 0 {
		return once.Record{}, fmt.Errorf("%w: state %d, attempts %d, lease %d", errCorrupt, ints[0], ints[1], ints[2])
	}
	rec.State = once.State(ints[0])
	rec.Attempts = uint32(ints[1])
	rec.Lease = time.Duration(ints[2]) * time.Microsecond
	tok, err := strconv.ParseUint(r.str(fToken), 10, 64)
	if err != nil {
		return once.Record{}, fmt.Errorf("%w: token: %w", errCorrupt, err)
	}
	rec.Token = tok
	if err := r.times(&rec); err != nil {
		return once.Record{}, err
	}
	if fp := r.str(fFingerprint); fp != "" {
		rec.Fingerprint = []byte(fp)
	}
	if d := r.str(fData); d != "" {
		rec.Result.Data = []byte(d)
	}
	if rec.Result.Meta, err = decodeMeta(r.str(fMeta)); err != nil {
		return once.Record{}, err
	}
	return rec, nil
}

func (r reply) times(rec *once.Record) error {
	dst := []*time.Time{&rec.LeaseExpiresAt, &rec.ExpiresAt, &rec.CreatedAt, &rec.UpdatedAt, &rec.CompletedAt}
	for i, f := range []int{fLeaseExpires, fExpires, fCreated, fUpdated, fCompleted} {
		t, err := r.time(f)
		if err != nil {
			return fmt.Errorf("%w: %w", errCorrupt, err)
		}
		*dst[i] = t
	}
	return nil
}
