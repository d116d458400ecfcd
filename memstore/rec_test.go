package memstore

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
)

// TestRecRoundTrip: a record packed and viewed again is the same record,
// nil and empty slices and maps kept apart, whatever its payload's size.
func TestRecRoundTrip(t *testing.T) {
	base, tl := testBase, testTimeline()
	long := strings.Repeat("x", 300) // lengths take two uvarint bytes
	tests := []struct {
		name   string
		fp     []byte
		result once.Result
	}{
		{"nil", nil, once.Result{}},
		{"empty", []byte{}, once.Result{Data: []byte{}, Meta: map[string]string{}}},
		{"small", []byte("fp"), once.Result{Data: []byte("ok"), Meta: map[string]string{"a": "1", "": "empty key"}}},
		{"large", []byte(long), once.Result{Data: []byte(long + long), Meta: map[string]string{long: long, "b": ""}}},
		{"large meta only", nil, once.Result{Meta: map[string]string{"k": long}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := once.Record{
				Key: once.Key{Scope: "tenant", ID: "id"}, Fingerprint: tt.fp, State: once.StateCompleted,
				Token: 7, Attempts: 3, Lease: time.Minute, LeaseExpiresAt: base.Add(time.Minute),
				ExpiresAt: base.Add(time.Hour), CreatedAt: base, UpdatedAt: base.Add(time.Second),
				CompletedAt: base.Add(time.Second), Result: tt.result,
			}
			for _, reserve := range []int{0, 8, maxReserve} {
				var r rec
				r.pack(&n, reserve)
				mustView(t, &r, &tl, n)
				// In progress first, the result added later, in place if
				// it fits the reserve.
				claimed := n
				claimed.Result = once.Result{}
				r.pack(&claimed, reserve)
				mustView(t, &r, &tl, claimed)
				r.addResult(&n)
				mustView(t, &r, &tl, n)
			}
		})
	}
}

func mustView(t *testing.T, r *rec, tl *timeline, want once.Record) {
	t.Helper()
	if !r.set(&want, tl) {
		t.Fatal("times not exact")
	}
	if v := r.view(want.Key, tl, nil); !reflect.DeepEqual(v, want) { // tells nil from empty, compares times exactly
		t.Errorf("view = %+v\nwant %+v", v, want)
	}
}
