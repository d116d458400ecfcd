package oncehttp

import (
	"errors"
	"net/http"
	"reflect"
	"testing"

	"github.com/oncehq/once"
)

func TestResultRoundTrip(t *testing.T) {
	h := http.Header{
		"Content-Type": {"application/json"},
		"Set-Cookie":   {"a=1", "b=2"},
		"Connection":   {"X-Hop"},
		"X-Hop":        {"1"},
		"Keep-Alive":   {"timeout=5"},
		"X-Empty":      {},
	}
	res := EncodeResult(201, h, []byte(`{"ok":true}`), "rid")
	status, got, body, err := DecodeResult(res)
	if err != nil || status != 201 || string(body) != `{"ok":true}` {
		t.Fatalf("DecodeResult = %d %q %v", status, body, err)
	}
	want := http.Header{"Content-Type": {"application/json"}, "Set-Cookie": {"a=1", "b=2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("headers %v, want %v", got, want)
	}
	if res.Meta[MetaRequestID] != "rid" {
		t.Fatal("request ID not recorded")
	}
	ns := notStoredResult(200, 5000, "")
	if s, _, _, err := DecodeResult(ns); s != 200 || !errors.Is(err, ErrResponseNotStored) {
		t.Fatalf("not-stored result: %d %v", s, err)
	}
	for _, bad := range []once.Result{{}, {Meta: map[string]string{MetaStatus: "abc"}}, {Meta: map[string]string{MetaStatus: "42"}}} {
		if _, _, _, err := DecodeResult(bad); !errors.Is(err, ErrCorruptResult) {
			t.Errorf("DecodeResult(%v): %v", bad, err)
		}
	}
}

func FuzzDecodeResult(f *testing.F) {
	f.Add("201", "Content-Type", "a\nb", []byte("body"))
	f.Add("x", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, status, name, value string, data []byte) {
		res := once.Result{Data: data, Meta: map[string]string{MetaStatus: status, MetaHeaderPrefix + name: value}}
		s, h, body, err := DecodeResult(res)
		if err != nil {
			return
		}
		if s < 100 || s > 999 || string(body) != string(data) || h == nil {
			t.Fatalf("DecodeResult accepted %q: %d", status, s)
		}
	})
}

func TestProblemTable(t *testing.T) {
	cases := []struct {
		err    error
		status int
		name   string
	}{
		{ErrMissingKey, 400, "missing-idempotency-key"},
		{once.ErrInvalidKey, 400, "invalid-idempotency-key"},
		{ErrRequestTooLarge, 413, "request-too-large"},
		{&once.ClaimError{Err: once.ErrMismatch}, 422, "idempotency-key-mismatch"},
		{&once.ClaimError{Err: once.ErrInProgress}, 409, "request-in-progress"},
		{&once.ClaimError{Err: once.ErrAbandoned}, 409, "outcome-unknown"},
		{ErrResponseNotStored, 409, "response-not-stored"},
		{ErrUpstreamUnreachable, 502, "upstream-unreachable"},
		{once.Abandon(ErrUpstreamTimeout), 504, "upstream-timeout"},
		{once.Abandon(ErrUpstreamFailed), 502, "upstream-failed"},
		{once.Abandon(errors.New("x")), 502, "upstream-failed"},
		{errors.Join(errors.New("x"), once.ErrUnavailable), 503, "store-unavailable"},
		{once.ErrClosed, 503, "shutting-down"},
		{errors.New("secret internal detail"), 500, "internal-error"},
	}
	for _, c := range cases {
		p := ProblemFor(c.err)
		if p.Status != c.status || p.Name() != c.name || p.Title == "" || p.Detail == "" {
			t.Errorf("ProblemFor(%v) = %+v, want %d %s", c.err, p, c.status, c.name)
		}
	}
	if p := ProblemFor(errors.New("secret internal detail")); p.Detail != internalProblem.detail {
		t.Errorf("an unknown error's text reached the client: %q", p.Detail)
	}
	if p := ProblemFor(&once.ClaimError{Err: once.ErrInProgress, RetryAfter: 1500 * 1e6}); p.RetryAfter <= 0 {
		t.Error("in-progress problem without RetryAfter")
	}
}
