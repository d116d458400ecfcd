package redisstore

import (
	"testing"
	"time"

	"github.com/oncehq/once"
	"github.com/oncehq/once/internal/testenv"
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
