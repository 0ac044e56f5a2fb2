package broker_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"runtime"
	"sort"
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

// BenchmarkIssueMTLS measures IssueCredential end to end: client and broker
// in one process, real mTLS over loopback, policy decision, memory lease
// store (two-phase), ES256 JWT. It reports issuances per second, p50 and
// p99 latency at 32 concurrent callers, CPU time (user+system, client and
// broker together) per issuance, and the raw ES256 signing rate on all
// cores measured in the same run, for comparison.
func BenchmarkIssueMTLS(b *testing.B) {
	env := brokertest.Start(b, brokertest.Options{Policy: []byte(testPolicy)})
	clients := make([]mayflyv1.CredentialServiceClient, benchCallers)
	for i := range clients {
		clients[i] = mayflyv1.NewCredentialServiceClient(env.Dial(b, fmt.Sprintf("spiffe://mayfly.test/workload/bench-%d", i)))
		// Warm the connection (handshake) outside the measurement.
		if _, err := clients[i].IssueCredential(context.Background(), &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"}); err != nil {
			b.Fatal(err)
		}
	}
	signRate := es256Rate(b, time.Second)

	b.ResetTimer()
	lat := make([][]time.Duration, benchCallers)
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for i := 0; i < benchCallers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req := &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"}
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if _, err := clients[i].IssueCredential(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}(i)
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) time.Duration { return all[int(float64(len(all)-1)*p)] }
	rate := float64(len(all)) / wall.Seconds()
	b.ReportMetric(rate, "issues/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-µs/issue")
	b.ReportMetric(signRate, "es256-signs/s")
	b.ReportMetric(100*rate/signRate, "%-of-es256")
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
