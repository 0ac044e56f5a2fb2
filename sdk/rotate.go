package sdk

import (
	"context"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
)

// reconnectingConn is a grpc.ClientConnInterface that opens a new
// connection to the broker whenever the client's X.509-SVID changes, so
// that no call travels on a connection whose handshake SVID has expired or
// was signed by an authority since removed from the trust bundle (the
// broker checks the handshake SVID again on every call). The previous
// connection is closed after a grace period, letting calls in flight
// finish.
type reconnectingConn struct {
	svids x509svid.Source
	dial  func() (*grpc.ClientConn, error)
	grace time.Duration

	mu      sync.Mutex
	cur     *grpc.ClientConn
	serial  string    // leaf serial of the SVID current when cur was made
	checked time.Time // when the SVID was last compared
	timers  []*time.Timer
	old     []*grpc.ClientConn
	closed  bool
}

func leafSerial(s x509svid.Source) string {
	svid, err := s.GetX509SVID()
	if err != nil || svid == nil || len(svid.Certificates) == 0 {
		return ""
	}
	return svid.Certificates[0].SerialNumber.String()
}

func (r *reconnectingConn) current() *grpc.ClientConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Look at the SVID at most every 100ms: a file source stats its files.
	if r.closed || time.Since(r.checked) < 100*time.Millisecond {
		return r.cur
	}
	r.checked = time.Now()
	serial := leafSerial(r.svids)
	if serial == "" || serial == r.serial {
		return r.cur
	}
	next, err := r.dial()
	if err != nil {
		return r.cur
	}
	prev := r.cur
	r.cur, r.serial = next, serial
	r.old = append(r.old, prev)
	r.timers = append(r.timers, time.AfterFunc(r.grace, func() { _ = prev.Close() }))
	return r.cur
}

func (r *reconnectingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return r.current().Invoke(ctx, method, args, reply, opts...)
}

func (r *reconnectingConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return r.current().NewStream(ctx, desc, method, opts...)
}

func (r *reconnectingConn) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, t := range r.timers {
		t.Stop()
	}
	for _, c := range r.old {
		_ = c.Close()
	}
	return r.cur.Close()
}
