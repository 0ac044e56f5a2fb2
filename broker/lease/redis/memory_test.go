package redis_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// memoryProfile says how the leases of a memory measurement look.
type memoryProfile struct {
	name         string
	subjects     int  // distinct subjects
	entitlements int  // distinct entitlements
	grants       int  // distinct grants (0: one per lease)
	requestIDs   bool // every lease has a request id
}

// measureMemory writes n active leases with realistic field sizes (26-char
// ids and refs, SPIFFE subjects of about 45 characters, entitlements of
// about 15, grants of about 40) into a fresh Redis and returns INFO memory
// used_memory growth divided by n: the bytes one active lease costs with
// its hash, due entry and indexes.
func measureMemory(tb testing.TB, n int, p memoryProfile) float64 {
	tb.Helper()
	srv := testenv.Redis(tb)
	c := client(tb, srv.Addr())
	s := newStore(tb, c, redis.Options{Prefix: "mf"})
	ctx := tb.Context()
	// Warm up: load the scripts and create the shard keys.
	for i := range 64 {
		l := leaseFor(base.Add(-time.Hour), n+i, p)
		if _, err := s.Create(ctx, l); err != nil {
			tb.Fatal(err)
		}
	}
	before := usedMemory(tb, srv)
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				l := leaseFor(base.Add(time.Duration(i)*time.Millisecond), i, p)
				if _, err := s.Create(ctx, l); err != nil {
					errs <- err
					return
				}
				if _, err := s.Activate(ctx, l.ID, l.ID); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	after := usedMemory(tb, srv)
	return float64(after-before) / float64(n)
}

func leaseFor(at time.Time, i int, p memoryProfile) *lease.Lease {
	grant := i
	if p.grants > 0 {
		grant = i % p.grants
	}
	l := &lease.Lease{
		ID:          lease.NewID(at),
		Subject:     fmt.Sprintf("spiffe://prod.example.org/ns/payments/sa/w%05d", i%p.subjects),
		Entitlement: fmt.Sprintf("db-read-ord-%03d", i%p.entitlements),
		GrantID:     fmt.Sprintf("grt-standing-payments-db-read-%011d", grant),
		Issuer:      "jwt",
		IssuedAt:    at,
		ExpiresAt:   at.Add(time.Hour),
		HardEnd:     at.Add(4 * time.Hour),
		DueAt:       at.Add(time.Minute),
		Renewable:   true,
		Revocable:   true,
	}
	if p.requestIDs {
		l.RequestID = fmt.Sprintf("req-%022d", i)
	}
	return l
}

func usedMemory(tb testing.TB, srv *testenv.RedisServer) int64 {
	tb.Helper()
	v, err := srv.Info("memory", "used_memory")
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		tb.Fatalf("used_memory %q: %v", v, err)
	}
	return n
}

var memoryProfiles = []memoryProfile{
	{name: "shared-grants", subjects: 2000, entitlements: 20, grants: 200},
	{name: "grant-per-lease", subjects: 2000, entitlements: 20},
	{name: "shared-grants+request-ids", subjects: 2000, entitlements: 20, grants: 200, requestIDs: true},
}

// BenchmarkMemoryPerLease reports bytes per active lease (metric
// bytes/lease) after writing 100,000 leases, for each profile.
func BenchmarkMemoryPerLease(b *testing.B) {
	for _, p := range memoryProfiles {
		b.Run(p.name, func(b *testing.B) {
			var per float64
			for range b.N {
				per = measureMemory(b, 100_000, p)
			}
			b.ReportMetric(per, "bytes/lease")
		})
	}
}
