package chaos

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// LinkProxy impairs a TCP link in user space, for kernels without tc
// netem: it listens on loopback and forwards every connection to Target,
// delaying each chunk of bytes by Delay in each direction, and "losing"
// a chunk with probability Loss: a lost chunk arrives after a
// retransmission timeout (RTO, doubled for each further loss of the same
// chunk), as TCP would deliver it, keeping the byte order. It models what
// latency and loss do to a TCP client (late replies, timeouts, retries);
// it drops no bytes.
type LinkProxy struct {
	// Target is the address connections are forwarded to.
	Target string
	ln     net.Listener
	delay  atomic.Int64 // nanoseconds
	loss   atomic.Uint64
	rto    time.Duration

	mu    sync.Mutex
	rnd   *rand.Rand
	conns []net.Conn
}

// NewLinkProxy listens on a free loopback port. Impair sets the
// impairment; until then the proxy forwards at once.
func NewLinkProxy(target string, seed uint64) (*LinkProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &LinkProxy{Target: target, ln: ln, rto: 750 * time.Millisecond, rnd: rand.New(rand.NewPCG(seed, 7))}
	go p.serve()
	return p, nil
}

// Addr is the proxy's loopback address.
func (p *LinkProxy) Addr() string { return p.ln.Addr().String() }

// Impair sets the one-way delay and the loss probability (0 to 1).
func (p *LinkProxy) Impair(delay time.Duration, loss float64) {
	p.delay.Store(int64(delay))
	p.loss.Store(uint64(loss * 1e9))
}

// Close stops listening and closes every connection.
func (p *LinkProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	return err
}

func (p *LinkProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *LinkProxy) handle(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.Target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	go p.pipe(u, c)
	p.pipe(c, u)
}

// penalty is the extra time a chunk takes: one RTO per loss, doubling.
func (p *LinkProxy) penalty() time.Duration {
	loss := float64(p.loss.Load()) / 1e9
	p.mu.Lock()
	defer p.mu.Unlock()
	var d time.Duration
	rto := p.rto
	for loss > 0 && p.rnd.Float64() < loss {
		d += rto
		rto *= 2
	}
	return d
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst through a queue that releases each chunk at its
// time, in order.
func (p *LinkProxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		last := time.Time{}
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				at := time.Now().Add(time.Duration(p.delay.Load()) + p.penalty())
				if at.Before(last) {
					at = last // TCP delivers in order: a later chunk waits for an earlier lost one
				}
				last = at
				q <- chunk{append([]byte(nil), buf[:n]...), at}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	for range q { // drain after a write error
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		_ = dst.Close()
	}
	_, _ = io.Copy(io.Discard, src)
}
