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
	"strings"
	"time"

	"github.com/oncehq/once"
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

// slotLen is how many bytes of SHA-256 name a record or version in keys.
const slotLen = 16

// slotSum hashes the length-prefixed scope and id for hashKey.
func slotSum(scope, id string) [sha256.Size]byte {
	var buf [128]byte
	b := binary.AppendUvarint(buf[:0], uint64(len(scope)))
	return sha256.Sum256(append(append(b, scope...), id...))
}

// hashKey returns prefix + kind + "{H}", where H is the hex SHA-256 (first
// 128 bits) of the length-prefixed scope and id. Hashing keeps keys short and
// free of '{' and '}', so the hash tag around H always holds: every key of
// one record lands in one cluster slot.
func hashKey(prefix string, kind byte, scope, id string) string {
	sum := slotSum(scope, id)
	var h [2 * slotLen]byte
	hex.Encode(h[:], sum[:slotLen])
	var b strings.Builder
	b.Grow(len(prefix) + len(h) + 3)
	b.WriteString(prefix)
	b.WriteByte(kind)
	b.WriteByte('{')
	b.Write(h[:])
	b.WriteByte('}')
	return b.String()
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

// encodeResult encodes a result as the tail of a completed record: the
// data's length as a uvarint, the data, the metadata (see encodeMeta). Equal
// results encode to equal bytes, so the scripts compare them as strings.
func encodeResult(r once.Result) string {
	meta := encodeMeta(r.Meta)
	var n [binary.MaxVarintLen64]byte
	var b strings.Builder
	b.Grow(len(n) + len(r.Data) + len(meta))
	b.Write(n[:binary.PutUvarint(n[:], uint64(len(r.Data)))])
	b.Write(r.Data)
	b.WriteString(meta)
	return b.String()
}

// decodeResult reverses encodeResult. The empty string, the tail of a deleted
// record, is the empty result.
func decodeResult(s string) (once.Result, error) {
	if s == "" {
		return once.Result{}, nil
	}
	data, rest, err := readString(s)
	if err != nil {
		return once.Result{}, err
	}
	r := once.Result{}
	if data != "" {
		r.Data = []byte(data)
	}
	r.Meta, err = decodeMeta(rest)
	return r, err
}

// maxExact is the largest integer a Lua double holds exactly: no token the
// scripts hand out, and no duration they store, is larger.
const maxExact = 1 << 53

// header reads the packed header of a record value (see headerLen).
type header string

func (h header) u32(off int) uint32 {
	return uint32(h[off]) | uint32(h[off+1])<<8 | uint32(h[off+2])<<16 | uint32(h[off+3])<<24
}

// num returns the i-th double of the header.
func (h header) num(i int) float64 {
	off := 2 + 8*i
	return math.Float64frombits(uint64(h.u32(off)) | uint64(h.u32(off+4))<<32)
}

// time returns the i-th double of the header as a time; 0 is the zero time.
func (h header) time(i int) time.Time {
	if us := h.num(i); us != 0 {
		return time.UnixMicro(int64(us))
	}
	return time.Time{}
}

// splitRecord checks a record value's header and returns its variable
// parts: the fingerprint, the encoded key and the encoded result.
func splitRecord(v string) (fp, key, result string, err error) {
	if len(v) < headerLen {
		return "", "", "", fmt.Errorf("%w: %d bytes", errCorrupt, len(v))
	}
	h := header(v)
	fl, kl := int64(h.u32(66)), int64(h.u32(70))
	if fl+kl > int64(len(v)-headerLen) {
		return "", "", "", fmt.Errorf("%w: lengths %d and %d beyond %d bytes", errCorrupt, fl, kl, len(v))
	}
	k := headerLen + int(fl)
	return v[headerLen:k], v[k : k+int(kl)], v[k+int(kl):], nil
}

// decodeRecord decodes a record value (see headerLen) of key.
func decodeRecord(key once.Key, v string) (once.Record, error) {
	fp, _, result, err := splitRecord(v)
	if err != nil {
		return once.Record{}, err
	}
	h := header(v)
	state, token, attempts, lease := once.State(v[0]), h.num(0), h.num(1), h.num(2)
	if state < once.StateInProgress || state > once.StateReleased || token < 1 || token > maxExact || token != math.Trunc(token) ||
		attempts < 0 || attempts > math.MaxUint32 || lease < 0 || lease > maxExact {
		return once.Record{}, fmt.Errorf("%w: state %d, token %v, attempts %v, lease %v", errCorrupt, state, token, attempts, lease)
	}
	rec := once.Record{
		Key: key, State: state, Token: uint64(token), Attempts: uint32(attempts),
		Lease:          time.Duration(lease) * time.Microsecond,
		LeaseExpiresAt: h.time(3), ExpiresAt: h.time(4),
		CreatedAt: h.time(5), UpdatedAt: h.time(6), CompletedAt: h.time(7),
	}
	if fp != "" {
		rec.Fingerprint = []byte(fp)
	}
	if state == once.StateCompleted {
		if rec.Result, err = decodeResult(result); err != nil {
			return once.Record{}, err
		}
	}
	return rec, nil
}
