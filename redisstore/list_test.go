package redisstore

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
	"github.com/redis/rueidis"
)

// TestListGlobPrefix: a prefix with SCAN's pattern characters lists only its
// own records.
func TestListGlobPrefix(t *testing.T) {
	url := testenv.RedisURL(t)
	base := testPrefix(t)
	odd := openTest(t, url, Config{Prefix: base + "a*[x]?\\:"})
	near := openTest(t, url, Config{Prefix: base + "aZ[x]?\\:"})
	k := once.Key{Scope: "s", ID: "one"}
	mustClaim(t, odd, claimReq(k, time.Minute, time.Minute))
	mustClaim(t, near, claimReq(once.Key{Scope: "s", ID: "two"}, time.Minute, time.Minute))
	var got []once.Key
	if err := odd.List(ctx, "s", func(r once.Record) bool { got = append(got, r.Key); return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != k {
		t.Fatalf("List = %v, want [%v]", got, k)
	}
}

func TestKeyCodec(t *testing.T) {
	for _, k := range []once.Key{{ID: "x"}, {Scope: "ab", ID: "c"}, {Scope: string(make([]byte, 1024)), ID: "id with spaces"}} {
		got, err := decodeKey(encodeKey(k))
		if err != nil || got != k {
			t.Errorf("decodeKey(encodeKey(%q)) = %q, %v", k, got, err)
		}
	}
	if _, err := decodeKey("\x09ab"); err == nil {
		t.Error("short key accepted")
	}
}

// TestOldFormatRecords: a record as earlier versions kept it (a hash), or a
// string that is no record, under the record keys does not make List fail:
// List skips them, and the operations on such a key fail with an error that
// names it.
func TestOldFormatRecords(t *testing.T) {
	s := newTestStore(t)
	old, foreign, fresh := once.Key{Scope: "s", ID: "old"}, once.Key{Scope: "s", ID: "foreign"}, once.Key{Scope: "s", ID: "new"}
	c := s.client
	hset := c.B().Hset().Key(s.recordKey(old)).FieldValue().FieldValue("s", "2").FieldValue("t", "1").FieldValue("a", "1").
		FieldValue("e", "99999999999999999").FieldValue("k", encodeKey(old)).FieldValue("r", "done").Build()
	for _, cmd := range []rueidis.Completed{hset, c.B().Set().Key(s.recordKey(foreign)).Value("not a record").Build()} {
		if err := c.Do(ctx, cmd).Error(); err != nil {
			t.Fatal(err)
		}
	}
	mustClaim(t, s, claimReq(fresh, time.Minute, time.Minute))
	for scope, want := range map[string]string{"s": "[new]", "other": "[]"} {
		var got []string
		if err := s.List(ctx, scope, func(r once.Record) bool { got = append(got, r.Key.ID); return true }); err != nil {
			t.Fatalf("List(%q): %v", scope, err)
		}
		if fmt.Sprint(got) != want {
			t.Errorf("List(%q) = %v, want %s", scope, got, want)
		}
	}
	// A key that became a hash between SCAN and its reading.
	var got []string
	keys := []string{s.recordKey(old), s.recordKey(foreign), s.recordKey(fresh)}
	if _, err := s.listKeys(ctx, keys, "s", func(r once.Record) bool { got = append(got, r.Key.ID); return true }); err != nil || fmt.Sprint(got) != "[new]" {
		t.Errorf("listKeys = %v, %v, want [new]", got, err)
	}
	_, claimErr := s.Claim(ctx, claimReq(old, time.Minute, time.Minute))
	_, getErr := s.Get(ctx, old)
	_, _, watchErr := s.Watch(ctx, old)
	for op, err := range map[string]error{"Claim": claimErr, "Get": getErr, "Watch": watchErr, "Complete": s.Complete(ctx, old, 1, once.Result{})} {
		if !errors.Is(err, once.ErrUnavailable) || !strings.Contains(err.Error(), s.recordKey(old)) {
			t.Errorf("%s of a hash record: %v, want ErrUnavailable naming the key", op, err)
		}
	}
}
