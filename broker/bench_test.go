package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jwtlib "github.com/golang-jwt/jwt/v5"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// benchCallers is the number of concurrent callers, each a workload with its
// own mTLS connection.
const benchCallers = 32

// benchCapacity, when set, is the closed-loop capacity (issues/s) that
// BenchmarkIssueMTLSPaced takes its offered rates from, instead of measuring
// it: use the same value to compare two builds at the same offered load.
var benchCapacity = flag.Float64("mayfly.capacity", 0, "closed-loop capacity in issues/s for BenchmarkIssueMTLSPaced (0: measure it)")

// BenchmarkIssueMTLS measures IssueCredential end to end: client and broker
// in one process, real mTLS over loopback, policy decision, memory lease
// store (two-phase), ES256 JWT. It reports issuances per second, p50 and
// p99 latency at 32 concurrent callers, CPU time (user+system, client and
// broker together) per issuance, and the raw ES256 signing rate on all
// cores measured in the same run, for comparison.
//
// This is a closed loop at saturation: every caller sends its next call as
// soon as the previous one returns, so 32 calls are always in flight and
// the mean latency is 32 / throughput by Little's law. The latency figures
// are queueing at saturation, not service time; BenchmarkIssueMTLSPaced
// measures latency at a given load below capacity.
func BenchmarkIssueMTLS(b *testing.B) {
	clients := startBench(b)
	signRate := es256Rate(b, time.Second)

	b.ResetTimer()
	r := closedLoop(b, clients, b.N)
	b.StopTimer()

	r.report(b)
	b.ReportMetric(signRate, "es256-signs/s")
	b.ReportMetric(100*r.rate()/signRate, "%-of-es256")
}

// BenchmarkIssueMTLSPaced measures latency at a fixed offered load: an open
// loop at 50% and 80% of the closed-loop capacity. Everything else is as in
// BenchmarkIssueMTLS: the same broker, 32 callers each on its own mTLS
// connection, a full IssueCredential with a new lease and a real signature
// per call, CPU of client and broker together.
//
// Calls arrive as a Poisson process at the offered rate, independent of how
// fast the broker answers, and are queued in arrival order to whichever of
// the 32 callers is free; so at most 32 calls are in flight, and a call
// that arrives while all 32 are busy waits. Latency is measured from the
// scheduled arrival, so that wait counts (no coordinated omission), and so
// does the pacer's own lateness, reported as pacer-late-p99-ms.
//
// The capacity is measured once per process with the closed loop of
// BenchmarkIssueMTLS (reported as capacity-issues/s) unless
// -mayfly.capacity gives it; give the same value to compare two builds at
// the same offered load.
func BenchmarkIssueMTLSPaced(b *testing.B) {
	for _, load := range []float64{50, 80} {
		b.Run(fmt.Sprintf("load=%.0f%%", load), func(b *testing.B) {
			capacity := measuredCapacity(b)
			clients := startBench(b)
			offered := capacity * load / 100

			b.ResetTimer()
			r, late := openLoop(b, clients, b.N, offered)
			b.StopTimer()

			r.report(b)
			slices.Sort(late)
			b.ReportMetric(float64(late[len(late)*99/100].Microseconds())/1000, "pacer-late-p99-ms")
			b.ReportMetric(offered, "offered-issues/s")
			b.ReportMetric(capacity, "capacity-issues/s")
		})
	}
}

var capacityOnce struct {
	sync.Once
	rate float64
}

// measuredCapacity is -mayfly.capacity, or the closed-loop throughput of a
// broker of its own (2s), measured the first time it is asked for.
func measuredCapacity(b *testing.B) float64 {
	if *benchCapacity > 0 {
		return *benchCapacity
	}
	capacityOnce.Do(func() {
		clients := startBench(b)
		var calls int
		var wall time.Duration
		for start := time.Now(); time.Since(start) < 2*time.Second; {
			r := closedLoop(b, clients, 2000)
			calls += len(r.lat)
			wall += r.wall
		}
		capacityOnce.rate = float64(calls) / wall.Seconds()
		runtime.GC() // leave the measured run a heap of its own
	})
	return capacityOnce.rate
}

// startBench runs a broker and dials it with benchCallers workloads, each
// with its own connection, handshake done.
func startBench(b *testing.B) []mayflyv1.CredentialServiceClient {
	env := brokertest.Start(b, brokertest.Options{Policy: []byte(testPolicy)})
	clients := make([]mayflyv1.CredentialServiceClient, benchCallers)
	for i := range clients {
		clients[i] = mayflyv1.NewCredentialServiceClient(env.Dial(b, fmt.Sprintf("spiffe://mayfly.test/workload/bench-%d", i)))
		// Warm the connection (handshake) outside the measurement.
		if _, err := clients[i].IssueCredential(context.Background(), &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"}); err != nil {
			b.Fatal(err)
		}
	}
	return clients
}

// loadResult is what one measured run saw.
type loadResult struct {
	lat  []time.Duration // one per successful call
	wall time.Duration
	cpu  time.Duration // user+system of the whole process
}

func (r *loadResult) rate() float64 { return float64(len(r.lat)) / r.wall.Seconds() }

func (r *loadResult) report(b *testing.B) {
	if len(r.lat) == 0 {
		b.Fatal("no call succeeded")
	}
	slices.Sort(r.lat)
	pct := func(p float64) float64 {
		return float64(r.lat[int(float64(len(r.lat)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(r.rate(), "issues/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(r.cpu.Microseconds())/float64(len(r.lat)), "cpu-µs/issue")
}

// closedLoop makes n calls with every caller sending its next call as soon
// as its previous one returns.
func closedLoop(b *testing.B, clients []mayflyv1.CredentialServiceClient, n int) loadResult {
	lat := make([][]time.Duration, len(clients))
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for i, c := range clients {
		lat[i] = make([]time.Duration, 0, n/len(clients)+1)
		wg.Go(func() {
			req := &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"}
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				if _, err := c.IssueCredential(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		})
	}
	wg.Wait()
	r := loadResult{wall: time.Since(start), cpu: cpuTime() - cpu0}
	r.lat = slices.Concat(lat...)
	return r
}

// openLoop makes n calls arriving as a Poisson process at rate per second
// and returns their latencies from the arrival; see BenchmarkIssueMTLSPaced.
// It also returns how late the pacer was in putting each arrival in the
// queue (Go timers on an idle process wake up to ~1ms late), which is
// part of the latencies.
func openLoop(b *testing.B, clients []mayflyv1.CredentialServiceClient, n int, rate float64) (loadResult, []time.Duration) {
	arrivals := make(chan time.Time, n) // scheduled arrival times, in order
	lat := make([][]time.Duration, len(clients))
	late := make([]time.Duration, 0, n)
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for i, c := range clients {
		lat[i] = make([]time.Duration, 0, n/len(clients)+1)
		wg.Go(func() {
			req := &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"}
			for at := range arrivals {
				if _, err := c.IssueCredential(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(at))
			}
		})
	}
	rnd := mrand.New(mrand.NewPCG(uint64(n), 0x6d617966))
	at := start
	for range n {
		at = at.Add(time.Duration(rnd.ExpFloat64() / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		late = append(late, time.Since(at))
		arrivals <- at
	}
	close(arrivals)
	wg.Wait()
	r := loadResult{wall: time.Since(start), cpu: cpuTime() - cpu0}
	r.lat = slices.Concat(lat...)
	return r, late
}

// es256Rate signs a JWT like the broker's with golang-jwt on every core
// for d and returns signatures per second.
func es256Rate(b *testing.B, d time.Duration) float64 {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	claims := jwtlib.MapClaims{
		"iss": "https://127.0.0.1:7444", "sub": "spiffe://mayfly.test/workload/bench-1",
		"aud": "https://long.mayfly.test", "iat": time.Now().Unix(), "nbf": time.Now().Unix(),
		"exp": time.Now().Add(time.Minute).Unix(), "jti": "01jd0000000000000000000000", "ent": "long-api",
	}
	var n atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				tok := jwtlib.NewWithClaims(jwtlib.SigningMethodES256, claims)
				tok.Header["kid"] = "bench"
				if _, err := tok.SignedString(key); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
