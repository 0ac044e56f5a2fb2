package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

func TestNewOptions(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	s, err := redis.New(c, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := s.Options()
	if got.Shards != 16 || got.Prefix != "mf" || got.Retain != 7*24*time.Hour || got.WaitReplicas != 0 || got.WaitTimeout != 0 || got.OnDataLoss != nil {
		t.Errorf("defaults = %+v, want 16 shards, prefix mf, retain 7 days", got)
	}
	ring := goredis.NewRing(&goredis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	for _, tc := range []struct {
		c    goredis.UniversalClient
		opts redis.Options
		want string
	}{
		{nil, redis.Options{}, "redis: nil client"},
		{c, redis.Options{Shards: -1}, "redis: Shards -1 is not between 1 and 16384"},
		{c, redis.Options{Prefix: "a{b}"}, `redis: Prefix "a{b}" contains '{' or '}'`},
		{c, redis.Options{Retain: -time.Second}, "redis: Retain -1s is negative"},
		{c, redis.Options{WaitReplicas: -1}, "redis: WaitReplicas -1 is negative"},
		{ring, redis.Options{WaitReplicas: 1}, "redis: WaitReplicas needs a *redis.Client or *redis.ClusterClient, not *redis.Ring"},
	} {
		if _, err := redis.New(tc.c, tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
	if _, err := redis.New(ring, redis.Options{}); err != nil {
		t.Errorf("New(ring) without WaitReplicas: %v", err)
	}
}

func TestArgumentErrors(t *testing.T) {
	_, _, s := single(t, redis.Options{})
	ctx := t.Context()
	if _, err := s.Create(ctx, nil); err == nil || err.Error() != "redis: nil lease" {
		t.Errorf("Create(nil): %v", err)
	}
	l := newLease(base, 1)
	l.Issuer = ""
	if _, err := s.Create(ctx, l); err == nil || err.Error() != fmt.Sprintf("redis: lease %q has no Issuer", l.ID) {
		t.Errorf("Create without Issuer: %v", err)
	}
	l = newLease(base, 1)
	l.HardEnd = time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.Create(ctx, l); err == nil || !strings.Contains(err.Error(), "HardEnd") {
		t.Errorf("Create with a HardEnd past 2^53 ms: %v", err)
	}
	l, err := s.Create(ctx, newLease(base, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, base, 1, 0); err == nil || err.Error() != "redis: claim hold 0s is under a millisecond" {
		t.Errorf("Claim with hold 0: %v", err)
	}
	if cs, err := s.Claim(ctx, l.DueAt, 0, time.Second); err != nil || len(cs) != 0 {
		t.Errorf("Claim with max 0 = %d, %v; want nothing", len(cs), err)
	}
	if _, err := s.Revoke(ctx, l.ID, "", base); err == nil || err.Error() != "redis: revoke without a reason" {
		t.Errorf("Revoke without reason: %v", err)
	}
	if _, _, err := s.List(ctx, lease.Query{PageSize: -1}); err == nil || err.Error() != "redis: negative page size -1" {
		t.Errorf("List with a negative page size: %v", err)
	}
	if _, _, err := s.List(ctx, lease.Query{States: []lease.State{"gone"}}); err == nil || err.Error() != `redis: unknown state "gone"` {
		t.Errorf("List with an unknown state: %v", err)
	}
	cs, err := s.Claim(ctx, l.DueAt, 1, time.Second)
	if err != nil || len(cs) != 1 {
		t.Fatalf("Claim = %d, %v", len(cs), err)
	}
	for _, tc := range []struct {
		out  lease.Outcome
		want string
	}{
		{lease.Outcome{At: base, Revoked: true, Irrevocable: true}, "redis: outcome is both revoked and irrevocable"},
		{lease.Outcome{At: base, Err: "x"}, "redis: retry outcome has no RetryAt"},
		{lease.Outcome{Revoked: true}, "redis: outcome has no At"},
	} {
		if err := s.Finish(ctx, cs[0], tc.out); err == nil || err.Error() != tc.want {
			t.Errorf("Finish(%+v): %v, want %q", tc.out, err, tc.want)
		}
	}
	if err := s.Finish(ctx, lease.Claim{}, lease.Outcome{At: base, Revoked: true}); err == nil || err.Error() != "redis: claim without a lease" {
		t.Errorf("Finish of a claim without a lease: %v", err)
	}
}

func TestSentinelMessages(t *testing.T) {
	_, _, s := single(t, redis.Options{})
	ctx := t.Context()
	_, err := s.Get(ctx, "01abc")
	if err == nil || err.Error() != "redis: lease 01abc: lease: not found" || !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("Get(unknown) = %v", err)
	}
	l, _ := s.Create(ctx, newLease(base, 1))
	if _, err := s.Renew(ctx, l.ID, l.HardEnd); err == nil || err.Error() != fmt.Sprintf("redis: lease %s is pending: lease: wrong state for this change", l.ID) {
		t.Errorf("Renew of a pending lease = %v", err)
	}
	if _, err := s.Create(ctx, l); err == nil || err.Error() != fmt.Sprintf("redis: lease %s: lease: id already exists", l.ID) {
		t.Errorf("Create of a taken id = %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	_, c, s := single(t, redis.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Create(ctx, newLease(base, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Create with a canceled context: %v", err)
	}
	if _, _, err := s.NextDue(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("NextDue with a canceled context: %v", err)
	}
	if n := c.DBSize(t.Context()).Val(); n != 0 {
		t.Errorf("%d keys after a refused Create", n)
	}
}

// TestTimesKeptToTheMillisecondInUTC: a store keeps whole milliseconds and
// returns UTC.
func TestTimesKeptToTheMillisecondInUTC(t *testing.T) {
	_, _, s := single(t, redis.Options{})
	loc := time.FixedZone("X", 5*3600)
	l := newLease(base.In(loc).Add(1234567*time.Nanosecond), 1)
	got, err := s.Create(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	want := base.Add(time.Millisecond)
	if got.IssuedAt != want || got.IssuedAt.Location() != time.UTC {
		t.Errorf("IssuedAt = %v, want %v in UTC", got.IssuedAt, want)
	}
	if g, _ := s.Get(t.Context(), l.ID); g.IssuedAt != want {
		t.Errorf("Get IssuedAt = %v, want %v", g.IssuedAt, want)
	}
}

// TestRequestIDConcurrent: many Creates of one (subject, request id) at
// once, with ids in different shards, write exactly one lease; every other
// caller gets that lease and ErrDuplicate.
func TestRequestIDConcurrent(t *testing.T) {
	run := func(t *testing.T, s *redis.Store) {
		ctx := t.Context()
		const callers, requests = 12, 5
		for r := range requests {
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				winners []string
				dups    []string
			)
			for i := range callers {
				wg.Go(func() {
					l := newLease(base, 7)
					l.RequestID = fmt.Sprintf("req-%d", r)
					got, err := s.Create(ctx, l)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						winners = append(winners, got.ID)
					case errors.Is(err, lease.ErrDuplicate):
						dups = append(dups, got.ID)
					default:
						t.Errorf("caller %d: %v", i, err)
					}
				})
			}
			wg.Wait()
			if len(winners) != 1 {
				t.Fatalf("request %d: %d Creates succeeded, want 1", r, len(winners))
			}
			for _, id := range dups {
				if id != winners[0] {
					t.Errorf("request %d: ErrDuplicate returned lease %s, want the winner %s", r, id, winners[0])
				}
			}
		}
		ls, _, err := s.List(ctx, lease.Query{Subject: newLease(base, 7).Subject, PageSize: 1000})
		if err != nil || len(ls) != requests {
			t.Fatalf("List = %d leases, %v; want %d", len(ls), err, requests)
		}
	}
	t.Run("Single", func(t *testing.T) {
		_, _, s := single(t, redis.Options{})
		run(t, s)
	})
	t.Run("Cluster", func(t *testing.T) {
		run(t, newStore(t, clusterClient(t, testenv.RedisCluster(t)), redis.Options{}))
	})
}

// TestRequestIDFailedCreateFreesIt: a Create that fails after reserving
// the request id (its id is taken) releases it at once.
func TestRequestIDFailedCreateFreesIt(t *testing.T) {
	_, _, s := single(t, redis.Options{})
	ctx := t.Context()
	taken, err := s.Create(ctx, newLease(base, 1))
	if err != nil {
		t.Fatal(err)
	}
	l := newLease(base, 1)
	l.ID = taken.ID
	l.RequestID = "req-1"
	if _, err := s.Create(ctx, l); !errors.Is(err, lease.ErrExists) {
		t.Fatalf("Create with a taken id: %v, want ErrExists", err)
	}
	l = newLease(base, 1)
	l.RequestID = "req-1"
	if _, err := s.Create(ctx, l); err != nil {
		t.Fatalf("Create reusing the request id of a failed Create: %v", err)
	}
}

// TestRetain: a terminal lease stays readable until the first Claim in its
// shard at or after Outcome.At+Retain, which removes its record and every
// index entry; no key of a lease has a TTL.
func TestRetain(t *testing.T) {
	const retain = 500 * time.Millisecond
	_, c, s := single(t, redis.Options{Retain: retain})
	ctx := t.Context()
	live := newLease(base, 1)
	if _, err := s.Create(ctx, live); err != nil {
		t.Fatal(err)
	}
	done := newLease(base, 1) // same subject, entitlement, grant
	done.RequestID = "req-1"
	if _, err := s.Create(ctx, done); err != nil {
		t.Fatal(err)
	}
	s.Activate(ctx, live.ID, "")
	if _, err := s.Revoke(ctx, done.ID, lease.ReasonExplicit, base); err != nil {
		t.Fatal(err)
	}
	cs, err := s.Claim(ctx, base, 10, time.Minute)
	if err != nil || len(cs) != 1 {
		t.Fatalf("Claim = %d, %v", len(cs), err)
	}
	at := base.Add(time.Second)
	if err := s.Finish(ctx, cs[0], lease.Outcome{At: at, Revoked: true}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{done.ID, live.ID} {
		if ttl := c.PTTL(ctx, recordKey(s, id)).Val(); ttl != -1 {
			t.Errorf("PTTL of the record hash of %s = %s, want none", id, ttl)
		}
	}
	ids := func(q lease.Query) []string {
		ls, _, err := s.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range ls {
			out = append(out, l.ID)
		}
		return out
	}
	// Not yet at+retain on the caller's clock: the lease is kept.
	if _, err := s.Claim(ctx, at.Add(retain-time.Millisecond), 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	shard := shardKey(s, done.ID, "")
	if g, err := s.Get(ctx, done.ID); err != nil || g.State != lease.StateRevoked {
		t.Fatalf("Get of a revoked lease before its retention passed = %v, %v", g, err)
	}
	if in := indexedIn(t, c, shard, done.ID); !slices.Equal(in, []string{"g", "s", "e", "k"}) {
		t.Fatalf("revoked lease indexed in %v before its retention passed, want g s e k", in)
	}
	if got := ids(lease.Query{}); len(got) != 2 {
		t.Errorf("List before the sweep = %v, want both", got)
	}
	if _, err := s.Claim(ctx, at.Add(retain), 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, done.ID); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("Get of a revoked lease after its sweep: %v, want ErrNotFound", err)
	}
	if in := indexedIn(t, c, shard, done.ID); len(in) != 0 {
		t.Errorf("swept lease still indexed in %v", in)
	}
	if got := ids(lease.Query{}); len(got) != 1 || got[0] != live.ID {
		t.Errorf("List after the sweep = %v, want only %s", got, live.ID)
	}
	// The live lease is untouched, and the request id of the forgotten
	// lease can be used again.
	if g, err := s.Get(ctx, live.ID); err != nil || g.State != lease.StateActive {
		t.Errorf("live lease after the sweep: %v, %v", g, err)
	}
	again := newLease(base, 1)
	again.RequestID = "req-1"
	if _, err := s.Create(ctx, again); err != nil {
		t.Errorf("Create with the request id of a forgotten lease: %v", err)
	}
	checkBuckets(t, c, s)
}

// TestClaimConcurrentShards: 8 claimers race over 2,000 due leases spread
// over all shards; every lease is claimed exactly once, and Finish works
// for each.
func TestClaimConcurrentShards(t *testing.T) {
	run := func(t *testing.T, s *redis.Store) {
		ctx := t.Context()
		const n, claimers, batch = 2000, 8, 25
		created := make(map[string]bool, n)
		var cwg sync.WaitGroup
		var mu sync.Mutex
		for w := range 8 {
			cwg.Go(func() {
				for i := w; i < n; i += 8 {
					l := newLease(base, i)
					l.DueAt = base
					if _, err := s.Create(ctx, l); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					created[l.ID] = true
					mu.Unlock()
				}
			})
		}
		cwg.Wait()
		got := make([][]lease.Claim, claimers)
		var wg sync.WaitGroup
		for i := range claimers {
			wg.Go(func() {
				for {
					cs, err := s.Claim(ctx, base, batch, time.Minute)
					if err != nil {
						t.Errorf("claimer %d: %v", i, err)
						return
					}
					if len(cs) > batch {
						t.Errorf("claimer %d: %d claims, max %d", i, len(cs), batch)
					}
					if len(cs) == 0 {
						return
					}
					got[i] = append(got[i], cs...)
					for _, c := range cs {
						if err := s.Finish(ctx, c, lease.Outcome{At: base, Revoked: true}); err != nil {
							t.Errorf("claimer %d: Finish: %v", i, err)
						}
					}
				}
			})
		}
		wg.Wait()
		seen := map[string]int{}
		for _, cs := range got {
			for _, c := range cs {
				seen[c.Lease.ID]++
			}
		}
		for id, k := range seen {
			if k != 1 || !created[id] {
				t.Errorf("lease %s claimed %d times (created: %v)", id, k, created[id])
			}
		}
		if len(seen) != n {
			t.Errorf("%d leases claimed, want %d", len(seen), n)
		}
		if _, ok, err := s.NextDue(ctx); ok || err != nil {
			t.Errorf("NextDue after all were revoked: %v, %v", ok, err)
		}
	}
	t.Run("Single", func(t *testing.T) {
		_, _, s := single(t, redis.Options{})
		run(t, s)
	})
	t.Run("Cluster", func(t *testing.T) {
		run(t, newStore(t, clusterClient(t, testenv.RedisCluster(t)), redis.Options{}))
	})
}

// TestClaimBatchBounded: one Claim never returns more than max, however
// many shards have due leases, and visits shards from a random start so
// that the first claims of concurrent replicas differ.
func TestClaimBatchBounded(t *testing.T) {
	_, _, s := single(t, redis.Options{})
	ctx := t.Context()
	for i := range 200 {
		l := newLease(base, i)
		l.DueAt = base
		if _, err := s.Create(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	shards := map[int]bool{}
	for range 20 {
		cs, err := s.Claim(ctx, base, 3, time.Millisecond)
		if err != nil || len(cs) != 3 {
			t.Fatalf("Claim = %d, %v; want 3", len(cs), err)
		}
		shards[s.Shard(cs[0].Lease.ID)] = true
	}
	if len(shards) < 2 {
		t.Errorf("20 Claims all started in shard %v; want a random start", shards)
	}
}

// TestClaimLargeBatchInOneShard: a batch larger than one claim script
// takes (claimChunk, 128) is filled from one shard by several scripts,
// each lease claimed once, and stops at the batch.
func TestClaimLargeBatchInOneShard(t *testing.T) {
	_, _, s := single(t, redis.Options{Shards: 1})
	ctx := t.Context()
	for i := range 400 {
		l := newLease(base, i)
		l.DueAt = base
		if _, err := s.Create(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, want := range []int{300, 100, 0} {
		cs, err := s.Claim(ctx, base, 300, time.Minute)
		if err != nil || len(cs) != want {
			t.Fatalf("Claim(300) = %d, %v; want %d", len(cs), err, want)
		}
		for _, c := range cs {
			if seen[c.Lease.ID] {
				t.Fatalf("lease %s claimed twice", c.Lease.ID)
			}
			seen[c.Lease.ID] = true
		}
	}
}

// TestRedisDoesNotRollBack shows why the scripts check before they write:
// a script whose second write fails keeps its first.
func TestRedisDoesNotRollBack(t *testing.T) {
	_, c, _ := single(t, redis.Options{})
	ctx := t.Context()
	c.Set(ctx, "{x}:idx", "a string", 0)
	err := c.Eval(ctx, `redis.call('HSET', KEYS[1], 'f', 'v'); redis.call('ZADD', KEYS[2], 0, 'id')`,
		[]string{"{x}:h", "{x}:idx"}).Err()
	if err == nil {
		t.Fatal("ZADD on a string: no error")
	}
	if c.Exists(ctx, "{x}:h").Val() != 1 {
		t.Fatal("the first write was rolled back; the scripts' check-first rule would be moot")
	}
}
