package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/oncehq/once"
	"github.com/oncehq/once/oncehttp"
)

func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	dns := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "api.internal"}}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	for _, c := range []struct {
		err       error
		want      error
		abandoned bool
	}{
		{refused, oncehttp.ErrUpstreamUnreachable, false},
		{dns, oncehttp.ErrUpstreamUnreachable, false},
		{errors.New("http: server closed idle connection"), oncehttp.ErrUpstreamUnreachable, false},
		{context.DeadlineExceeded, oncehttp.ErrUpstreamTimeout, true},
		{reset, oncehttp.ErrUpstreamFailed, true},
		{io.ErrUnexpectedEOF, oncehttp.ErrUpstreamFailed, true},
	} {
		got := classify(c.err)
		if !errors.Is(got, c.want) || errors.Is(got, once.ErrOutcomeUnknown) != c.abandoned {
			t.Errorf("classify(%v) = %v; want %v, outcome unknown %v", c.err, got, c.want, c.abandoned)
		}
	}
	if got := classifyRead(context.DeadlineExceeded); !errors.Is(got, oncehttp.ErrUpstreamTimeout) || !errors.Is(got, once.ErrOutcomeUnknown) {
		t.Errorf("classifyRead(deadline) = %v", got)
	}
}
