package once_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/oncehq/once"
)

func TestValidateID(t *testing.T) {
	var printable strings.Builder
	for c := byte(0x20); c <= 0x7e; c++ {
		printable.WriteByte(c)
	}
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"one byte", "k", true},
		{"space", " ", true},
		{"tilde", "~", true},
		{"every printable byte", printable.String(), true},
		{"uuid", "5f0c1a2e-8d7b-4c1e-9f3a-2b6d8e0a1c4f", true},
		{"255 bytes", strings.Repeat("a", 255), true},
		{"empty", "", false},
		{"256 bytes", strings.Repeat("a", 256), false},
		{"NUL", "a\x00", false},
		{"unit separator 0x1f", "\x1f", false},
		{"DEL 0x7f", "a\x7f", false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"UTF-8", "clé", false},
		{"invalid UTF-8", "\xff", false},
		{"0x80", "\x80", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := once.ValidateID(tt.id)
			if tt.ok && err != nil {
				t.Fatalf("ValidateID(%q) = %v, want nil", tt.id, err)
			}
			if !tt.ok && !errors.Is(err, once.ErrInvalidKey) {
				t.Fatalf("ValidateID(%q) = %v, want ErrInvalidKey", tt.id, err)
			}
		})
	}
}

func TestKeyValidate(t *testing.T) {
	tests := []struct {
		name string
		key  once.Key
		ok   bool
	}{
		{"empty scope", once.Key{ID: "k"}, true},
		{"scope", once.Key{Scope: "tenant-1", ID: "k"}, true},
		{"opaque scope", once.Key{Scope: "a:b/c é\x00\xff", ID: "k"}, true},
		{"1024-byte scope", once.Key{Scope: strings.Repeat("s", 1024), ID: "k"}, true},
		{"1025-byte scope", once.Key{Scope: strings.Repeat("s", 1025), ID: "k"}, false},
		{"empty ID", once.Key{Scope: "s"}, false},
		{"bad ID", once.Key{Scope: "s", ID: "a\x7f"}, false},
		{"256-byte ID", once.Key{ID: strings.Repeat("a", 256)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.key.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, once.ErrInvalidKey)) {
				t.Fatalf("Validate() = %v, want ok=%v (errors wrapping ErrInvalidKey)", err, tt.ok)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ id, want string }{
		{"", ""},
		{"short", "short"},
		{"exactly12byt", "exactly12byt"},
		{"thirteen-byte", "thirteen…"},
		{strings.Repeat("x", 255), "xxxxxxxx…"},
	}
	for _, tt := range tests {
		if got := once.Redact(tt.id); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
	k := once.Key{Scope: "secret-tenant", ID: "0123456789abcdef"}
	if s := k.String(); s != "01234567…" || strings.Contains(s, "secret") {
		t.Errorf("Key.String() = %q, want the redacted ID without the scope", s)
	}
}

func TestParseAbandonPolicy(t *testing.T) {
	tests := []struct {
		in   string
		want once.AbandonPolicy
		ok   bool
	}{
		{"reject", once.AbandonReject, true},
		{"", once.AbandonReject, true},
		{"retry", once.AbandonRetry, true},
		{"Retry", 0, false},
		{"RETRY", 0, false},
		{" retry", 0, false},
		{"ignore", 0, false},
	}
	for _, tt := range tests {
		got, err := once.ParseAbandonPolicy(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParseAbandonPolicy(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err == nil && tt.in != "" && got.String() != tt.in {
			t.Errorf("ParseAbandonPolicy(%q).String() = %q, want the input back", tt.in, got)
		}
	}
}

func TestClaimRequestValidate(t *testing.T) {
	good := once.ClaimRequest{Key: once.Key{ID: "k"}, Lease: time.Second, Retention: time.Hour}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	tests := []struct {
		name   string
		mutate func(*once.ClaimRequest)
		want   error
	}{
		{"bad key", func(r *once.ClaimRequest) { r.Key.ID = "" }, once.ErrInvalidKey},
		{"zero lease", func(r *once.ClaimRequest) { r.Lease = 0 }, once.ErrInvalidArgument},
		{"negative retention", func(r *once.ClaimRequest) { r.Retention = -1 }, once.ErrInvalidArgument},
		{"unknown policy", func(r *once.ClaimRequest) { r.Policy = 7 }, once.ErrInvalidArgument},
	}
	for _, tt := range tests {
		r := good
		tt.mutate(&r)
		if err := r.Validate(); !errors.Is(err, tt.want) {
			t.Errorf("%s: Validate() = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestResultEqualClone(t *testing.T) {
	a := once.Result{Data: []byte("x"), Meta: map[string]string{"k": "v"}}
	if !(once.Result{}).Equal(once.Result{Data: []byte{}, Meta: map[string]string{}}) {
		t.Error("nil and empty results differ, want equal")
	}
	c := a.Clone()
	c.Data[0], c.Meta["k"] = 'y', "w"
	if string(a.Data) != "x" || a.Meta["k"] != "v" {
		t.Errorf("Clone shares memory with the original: %q %v", a.Data, a.Meta)
	}
	if a.Equal(c) || !a.Equal(a.Clone()) {
		t.Error("Equal disagrees with the content")
	}
}

func TestRecordTimes(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r := once.Record{State: once.StateInProgress, Lease: time.Minute, LeaseExpiresAt: now, ExpiresAt: now.Add(time.Hour)}
	if r.Abandoned(now.Add(-1)) || !r.Abandoned(now) {
		t.Error("Abandoned: want false before the lease deadline, true at it")
	}
	if !r.Live(now.Add(time.Hour-1)) || r.Live(now.Add(time.Hour)) {
		t.Error("Live: want true before the retention deadline, false at it")
	}
	if got := r.PurgeAt(); !got.Equal(now.Add(time.Hour + time.Minute)) {
		t.Errorf("PurgeAt = %v, want retention + lease", got)
	}
	r.State = once.StateCompleted
	if r.Abandoned(now.Add(time.Minute)) {
		t.Error("a completed record is never abandoned")
	}
}

// FuzzValidateID: ValidateID accepts exactly the IDs of 1 to 255 printable
// ASCII bytes, and never panics.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"k", "", " ", "~", "a\x7f", "\x1f", "clé", strings.Repeat("a", 255), strings.Repeat("a", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		want := len(id) >= 1 && len(id) <= 255
		for i := 0; i < len(id); i++ {
			want = want && id[i] >= 0x20 && id[i] <= 0x7e
		}
		err := once.ValidateID(id)
		if want != (err == nil) {
			t.Fatalf("ValidateID(%q) = %v, want ok=%v", id, err, want)
		}
		if err != nil && !errors.Is(err, once.ErrInvalidKey) {
			t.Fatalf("ValidateID(%q) = %v, want an error wrapping ErrInvalidKey", id, err)
		}
		if kerr := (once.Key{ID: id}).Validate(); (kerr == nil) != want {
			t.Fatalf("Key{ID: %q}.Validate() = %v, disagrees with ValidateID", id, kerr)
		}
	})
}
