package redis_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

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
	per, _ := measureMemoryOn(tb, n, p)
	return per
}

// measureMemoryOn is measureMemory returning the server too.
func measureMemoryOn(tb testing.TB, n int, p memoryProfile) (float64, *testenv.RedisServer) {
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
	return float64(after-before) / float64(n), srv
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
// bytes/lease) after writing 100,000 leases, for each profile (see
// TestMemoryPerLeaseAt for 1,000,000).
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

// memoryLimit is the most an active lease may cost with its indexes
// (profile shared-grants), in bytes of INFO used_memory.
const memoryLimit = 500

// TestMemoryPerLeaseAt measures bytes per active lease and logs where the
// bytes go (MEMORY USAGE summed per kind of key), and fails if a lease of
// profile shared-grants costs more than memoryLimit. By default it writes
// 20,000 leases of that profile (a few seconds); MAYFLY_LEASE_MEMORY sets
// the count and measures every profile (or only the one named in
// MAYFLY_LEASE_MEMORY_PROFILE). The figures in doc.go:
//
//	CI=true MAYFLY_LEASE_MEMORY=1000000 go test -run TestMemoryPerLeaseAt -v -timeout 60m ./broker/lease/redis/
func TestMemoryPerLeaseAt(t *testing.T) {
	n, only := 20_000, "shared-grants"
	if v := os.Getenv("MAYFLY_LEASE_MEMORY"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			t.Fatalf("MAYFLY_LEASE_MEMORY=%q", v)
		}
		only = os.Getenv("MAYFLY_LEASE_MEMORY_PROFILE")
	}
	for _, p := range memoryProfiles {
		if only != "" && p.name != only {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			per, srv := measureMemoryOn(t, n, p)
			t.Logf("%s: %d leases: %.1f bytes/lease (INFO used_memory delta / count)", p.name, n, per)
			breakdown(t, srv, n)
			if p.name == "shared-grants" && per > memoryLimit {
				t.Errorf("%.1f bytes a lease, over the limit of %d", per, memoryLimit)
			}
		})
	}
}

// breakdown logs MEMORY USAGE summed per kind of key, per lease.
func breakdown(t *testing.T, srv *testenv.RedisServer, n int) {
	c := client(t, srv.Addr())
	ctx := t.Context()
	sums := map[string]int64{}
	counts := map[string]int{}
	iter := c.Scan(ctx, 0, "*", 5000).Iterator()
	var batch []string
	flush := func() {
		pipe := c.Pipeline()
		cmds := make([]*goredis.IntCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		pipe.Exec(ctx)
		for i, k := range batch {
			kind := keyKind(k)
			sums[kind] += cmds[i].Val()
			counts[kind]++
		}
		batch = batch[:0]
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			flush()
		}
	}
	flush()
	kinds := make([]string, 0, len(sums))
	for k := range sums {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var total int64
	for _, k := range kinds {
		total += sums[k]
		t.Logf("  %-12s %8d keys %8.1f bytes/lease", k, counts[k], float64(sums[k])/float64(n))
	}
	t.Logf("  MEMORY USAGE total %.1f bytes/lease", float64(total)/float64(n))
}

// keyKind names the kind of a key: what follows the hash tag, up to the
// next ':' or '|' (a bucket counts with its set).
func keyKind(k string) string {
	_, rest, ok := strings.Cut(k, "}:")
	if !ok {
		return k
	}
	if i := strings.IndexAny(rest, ":|"); i >= 0 {
		if rest[i] == '|' {
			return rest[:i] + " buckets"
		}
		return rest[:i]
	}
	return rest
}
