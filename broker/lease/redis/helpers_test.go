package redis_test

import (
	"context"
	"fmt"
	"os"
	"strings"
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

// shardKey is key rest of the shard that holds id.
func shardKey(s *redis.Store, id, rest string) string {
	return fmt.Sprintf("%s:{%d}:%s", s.Options().Prefix, s.Shard(id), rest)
}

// recordKey is the hash that holds lease id's record.
func recordKey(s *redis.Store, id string) string { return shardKey(s, id, "r:"+id[len(id)-1:]) }

// sentinel is the member every directory of a bucketed set holds.
var sentinel = strings.Repeat("\xff", 65)

// bucketed sets of a shard, by key name.
var bucketedSets = []string{"d", "g", "s", "e", "k"}

// setEntries returns every entry of a bucketed set (member -> score) and
// the bucket key that holds each.
func setEntries(t testing.TB, c goredis.Cmdable, set string) (map[string]float64, map[string]string) {
	t.Helper()
	ctx := context.Background()
	bounds, err := c.ZRange(ctx, set, 0, -1).Result()
	if err != nil {
		t.Fatalf("ZRANGE %s: %v", set, err)
	}
	entries, where := map[string]float64{}, map[string]string{}
	for _, b := range bounds {
		if b == sentinel {
			continue
		}
		zs, err := c.ZRangeWithScores(ctx, set+"|"+b, 0, -1).Result()
		if err != nil {
			t.Fatalf("bucket %q: %v", set+"|"+b, err)
		}
		for _, z := range zs {
			m := z.Member.(string)
			entries[m] = z.Score
			where[m] = set + "|" + b
		}
	}
	return entries, where
}

// indexedIn returns the bucketed sets of shard prefix sp ("<p>:{s}:") that
// hold an entry for lease id.
func indexedIn(t testing.TB, c goredis.Cmdable, sp, id string) []string {
	t.Helper()
	var in []string
	for _, set := range bucketedSets {
		entries, _ := setEntries(t, c, sp+set)
		for m := range entries {
			if strings.HasSuffix(m, id) {
				in = append(in, set)
			}
		}
	}
	return in
}

// checkBuckets checks the invariants of every bucketed set of every shard:
// each directory is a skiplist ending in the sentinel, each other member
// names a non-empty listpack bucket of fewer than 64 entries; each entry's sort key is at least its bucket's bound and
// below the next bound (so no key is below the first bound). It returns the
// number of entries and buckets seen.
func checkBuckets(t testing.TB, c goredis.Cmdable, s *redis.Store) (entries, buckets int) {
	t.Helper()
	ctx := context.Background()
	for shard := range s.Options().Shards {
		sp := fmt.Sprintf("%s:{%d}:", s.Options().Prefix, shard)
		for _, set := range bucketedSets {
			scored := set == "d" || set == "g"
			bounds, err := c.ZRange(ctx, sp+set, 0, -1).Result()
			if err != nil {
				t.Fatalf("ZRANGE %s: %v", sp+set, err)
			}
			if len(bounds) > 0 {
				if bounds[len(bounds)-1] != sentinel {
					t.Errorf("directory %s has no sentinel", sp+set)
				} else {
					bounds = bounds[:len(bounds)-1]
				}
				if enc := c.ObjectEncoding(ctx, sp+set).Val(); enc != "skiplist" {
					t.Errorf("directory %s is a %s", sp+set, enc)
				}
			}
			for i, b := range bounds {
				key := sp + set + "|" + b
				zs, err := c.ZRangeWithScores(ctx, key, 0, -1).Result()
				if err != nil {
					t.Fatalf("bucket %q: %v", key, err)
				}
				if len(zs) == 0 || len(zs) >= 64 {
					t.Errorf("bucket %q holds %d entries", key, len(zs))
					continue
				}
				if enc := c.ObjectEncoding(ctx, key).Val(); enc != "listpack" {
					t.Errorf("bucket %q is a %s", key, enc)
				}
				buckets++
				entries += len(zs)
				for _, z := range zs {
					k := z.Member.(string)
					if scored {
						k = fmt.Sprintf("%016d", int64(z.Score)+1<<52) + k
					} else if z.Score != 0 {
						t.Errorf("bucket %q: %q has score %v", key, k, z.Score)
					}
					if k < b {
						t.Errorf("bucket %q: key %q below its bound", key, k)
					}
					if i+1 < len(bounds) && k >= bounds[i+1] {
						t.Errorf("bucket %q: key %q at or past the next bound %q", key, k, bounds[i+1])
					}
				}
			}
		}
	}
	return entries, buckets
}
