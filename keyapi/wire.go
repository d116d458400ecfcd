package keyapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/oncehq/once"
)

// ClaimRequest is the body of POST /v1/keys/{key}/claim. Every field is
// optional.
type ClaimRequest struct {
	// Fingerprint identifies the request's content; a later claim with another
	// non-empty fingerprint gets 422.
	Fingerprint string `json:"fingerprint,omitempty"`
	// LeaseMS is the lease in milliseconds (default: the server's --lease).
	LeaseMS int64 `json:"lease_ms,omitempty"`
	// TTLMS is the retention in milliseconds (default: the server's --ttl).
	TTLMS int64 `json:"ttl_ms,omitempty"`
	// Abandoned is "reject" or "retry" (default: the server's --abandoned).
	Abandoned string `json:"abandoned,omitempty"`
}

// CompleteRequest is the body of POST /v1/keys/{key}/complete. Result is any
// JSON value; ResultBase64 carries bytes that are not JSON (the Go client
// always uses it, so results round-trip byte for byte). At most one of the two
// may be set.
type CompleteRequest struct {
	Token        uint64            `json:"token"`
	Result       json.RawMessage   `json:"result,omitempty"`
	ResultBase64 string            `json:"result_base64,omitempty"`
	Meta         map[string]string `json:"meta,omitempty"`
}

// TokenRequest is the body of release.
type TokenRequest struct {
	Token uint64 `json:"token"`
}

// ExtendRequest is the body of extend.
type ExtendRequest struct {
	Token   uint64 `json:"token"`
	LeaseMS int64  `json:"lease_ms,omitempty"`
}

// VersionRequest is the body of POST /v1/versions/{entity}.
type VersionRequest struct {
	Version uint64 `json:"version"`
}

// VersionResponse answers POST /v1/versions/{entity}.
type VersionResponse struct {
	Applied bool   `json:"applied"`
	Current uint64 `json:"current"`
}

// StateResponse is the body of every answer about a key: claim outcomes,
// complete, release, extend and GET. Fields that do not apply are omitted.
type StateResponse struct {
	// State is acquired, completed, in_progress, abandoned, released, mismatch
	// or deleted.
	State string `json:"state"`
	// StoredState is the stored record's state when State is mismatch.
	StoredState    string            `json:"stored_state,omitempty"`
	Key            string            `json:"key,omitempty"`
	Token          uint64            `json:"token,omitempty"`
	Attempts       uint32            `json:"attempts,omitempty"`
	Fingerprint    string            `json:"fingerprint,omitempty"`
	LeaseMS        int64             `json:"lease_ms,omitempty"`
	LeaseExpiresAt *time.Time        `json:"lease_expires_at,omitempty"`
	ExpiresAt      *time.Time        `json:"expires_at,omitempty"`
	CreatedAt      *time.Time        `json:"created_at,omitempty"`
	UpdatedAt      *time.Time        `json:"updated_at,omitempty"`
	CompletedAt    *time.Time        `json:"completed_at,omitempty"`
	RetryAfterMS   int64             `json:"retry_after_ms,omitempty"`
	Result         json.RawMessage   `json:"result,omitempty"`
	ResultBase64   string            `json:"result_base64,omitempty"`
	Meta           map[string]string `json:"meta,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// RecordState names r's state at now, abandoned included.
func RecordState(r *once.Record, now time.Time) string {
	if r.Abandoned(now) {
		return "abandoned"
	}
	return r.State.String()
}

// FromRecord describes r. The result is included only when r is completed.
func FromRecord(r *once.Record, now time.Time) StateResponse {
	s := StateResponse{
		State:          RecordState(r, now),
		Key:            r.Key.ID,
		Token:          r.Token,
		Attempts:       r.Attempts,
		Fingerprint:    EncodeFingerprint(r.Fingerprint),
		LeaseMS:        r.Lease.Milliseconds(),
		LeaseExpiresAt: timePtr(r.LeaseExpiresAt),
		ExpiresAt:      timePtr(r.ExpiresAt),
		CreatedAt:      timePtr(r.CreatedAt),
		UpdatedAt:      timePtr(r.UpdatedAt),
		CompletedAt:    timePtr(r.CompletedAt),
	}
	if r.State == once.StateCompleted {
		s.Result, s.ResultBase64 = EncodeResult(r.Result.Data)
		s.Meta = r.Result.Meta
	}
	return s
}

// ToRecord is the inverse of FromRecord, for clients.
func (s *StateResponse) ToRecord(scope string) (once.Record, error) {
	r := once.Record{
		Key:         once.Key{Scope: scope, ID: s.Key},
		Token:       s.Token,
		Attempts:    s.Attempts,
		Fingerprint: DecodeFingerprint(s.Fingerprint),
		Lease:       time.Duration(s.LeaseMS) * time.Millisecond,
	}
	for _, f := range []struct {
		dst *time.Time
		src *time.Time
	}{{&r.LeaseExpiresAt, s.LeaseExpiresAt}, {&r.ExpiresAt, s.ExpiresAt}, {&r.CreatedAt, s.CreatedAt}, {&r.UpdatedAt, s.UpdatedAt}, {&r.CompletedAt, s.CompletedAt}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	state := s.State
	if state == "mismatch" {
		state = s.StoredState
	}
	switch state {
	case "in_progress", "abandoned", "acquired":
		r.State = once.StateInProgress
	case "completed":
		r.State = once.StateCompleted
		data, err := DecodeResult(s.Result, s.ResultBase64)
		if err != nil {
			return r, err
		}
		r.Result = once.Result{Data: data, Meta: s.Meta}
	case "released":
		r.State = once.StateReleased
	}
	return r, nil
}

// EncodeResult returns data as a JSON value when it is compact JSON (so that
// it round-trips byte for byte), else as base64.
func EncodeResult(data []byte) (json.RawMessage, string) {
	if len(data) == 0 {
		return nil, ""
	}
	if json.Valid(data) {
		var buf bytes.Buffer
		if json.Compact(&buf, data) == nil && bytes.Equal(buf.Bytes(), data) && !bytes.ContainsAny(data, "<>&") {
			return json.RawMessage(data), ""
		}
	}
	return nil, base64.StdEncoding.EncodeToString(data)
}

// DecodeResult is the inverse of EncodeResult.
func DecodeResult(result json.RawMessage, b64 string) ([]byte, error) {
	if b64 != "" {
		return base64.StdEncoding.DecodeString(b64)
	}
	if len(result) == 0 {
		return nil, nil
	}
	return []byte(result), nil
}
