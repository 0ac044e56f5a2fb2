package redis_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
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
		ReadTimeout:           5 * time.Second, // -race on a busy machine
		WriteTimeout:          5 * time.Second,
		PoolSize:              32,
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
		ReadTimeout:           5 * time.Second, // -race on a busy machine
		WriteTimeout:          5 * time.Second,
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

// single starts a server and returns a client of it and a store on it.
func single(t testing.TB, opts redis.Options) (*testenv.RedisServer, *goredis.Client, *redis.Store) {
	t.Helper()
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	return srv, c, newStore(t, c, opts)
}

func at(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

// newRequest returns a pending request whose id sorts after those of
// smaller n.
func newRequest(n int, requester, ent string) *access.Request {
	r := &access.Request{
		ID:          lease.NewID(at(n)),
		Requester:   authn.Principal{Kind: authn.KindHuman, ID: requester, Groups: []string{"oidc-group:corp/sre"}, Method: authn.MethodOIDC},
		Entitlement: ent, Reason: "fix", Ticket: "INC-1", Duration: time.Hour, CreatedAt: at(n), ExpiresAt: at(n).Add(24 * time.Hour),
		State: access.RequestPending, Needed: 2, Approvers: []string{"group:leads"}, PolicyDigest: "d",
	}
	r.Digest = access.Digest(r)
	return r
}

func newGrant(n int, subject, ent string, kind policy.GrantKind) *access.Grant {
	return &access.Grant{
		ID: lease.NewID(at(n)), Kind: kind, Subject: subject, Entitlement: ent, Reason: "r",
		Start: at(n), End: at(n).Add(time.Hour), State: access.GrantActive, CreatedAt: at(n),
	}
}

// keyOf is the key of a store's shard for id (or mark key) with rest.
func keyOf(s *redis.Store, id, rest string) string {
	return fmt.Sprintf("%s:{%d}:%s", s.Options().Prefix, s.Shard(id), rest)
}

// snapshot renders every key under prefix with its type, TTL and content,
// so a test can assert that a refused change changed nothing at all.
func snapshot(t *testing.T, c *goredis.Client, prefix string) string {
	t.Helper()
	ctx := t.Context()
	var ks []string
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		ks = append(ks, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ks)
	var b strings.Builder
	for _, k := range ks {
		typ := c.Type(ctx, k).Val()
		ttl := c.PTTL(ctx, k).Val() > 0
		var content any
		switch typ {
		case "hash":
			m := c.HGetAll(ctx, k).Val()
			fs := make([]string, 0, len(m))
			for f, v := range m {
				fs = append(fs, f+"="+v)
			}
			slices.Sort(fs)
			content = fs
		case "zset":
			content = c.ZRangeWithScores(ctx, k, 0, -1).Val()
		case "string":
			content = c.Get(ctx, k).Val()
		case "list":
			content = c.LRange(ctx, k, 0, -1).Val()
		default:
			content = "?"
		}
		fmt.Fprintf(&b, "%s %s ttl=%v %v\n", k, typ, ttl, content)
	}
	return b.String()
}
