package redis_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

var base = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

func TestMain(m *testing.M) {
	goredis.SetLogger(quiet{}) // outage tests would fill the log with dial errors
	os.Exit(m.Run())
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// prefixes makes every store of a test binary use its own keys.
var prefixes atomic.Int64

func uniquePrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

// client returns a client of a single server, closed when the test ends.
func client(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		DialerRetries:         1,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// clusterClient returns a client of a cluster, closed when the test ends.
func clusterClient(t testing.TB, addrs []string) *goredis.ClusterClient {
	t.Helper()
	c := goredis.NewClusterClient(&goredis.ClusterOptions{
		Addrs:                 addrs,
		ContextTimeoutEnabled: true,
		DialTimeout:           time.Second,
		DialerRetries:         1,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func newStore(t testing.TB, c goredis.UniversalClient, opts redis.Options) *redis.Store {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = uniquePrefix()
	}
	s, err := redis.New(c, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// single starts a server and returns it with a store on it.
func single(t testing.TB, opts redis.Options) (*testenv.RedisServer, *goredis.Client, *redis.Store) {
	t.Helper()
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	return srv, c, newStore(t, c, opts)
}

// newLease returns a lease ready for Create with realistic field sizes.
func newLease(at time.Time, i int) *lease.Lease {
	return &lease.Lease{
		ID:          lease.NewID(at),
		Subject:     fmt.Sprintf("spiffe://prod.example.org/ns/payments/sa/api-%04d", i%1000),
		Entitlement: fmt.Sprintf("db-read-orders%d", i%10),
		GrantID:     fmt.Sprintf("grant-standing-payments-db-read-orders-%02d", i%50),
		Issuer:      "jwt",
		IssuedAt:    at,
		ExpiresAt:   at.Add(time.Hour),
		HardEnd:     at.Add(4 * time.Hour),
		DueAt:       at.Add(time.Minute),
		Renewable:   true,
		Revocable:   true,
	}
}
