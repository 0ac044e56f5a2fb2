package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
)

var sentinels = []error{lease.ErrNotFound, lease.ErrExists, lease.ErrDuplicate, lease.ErrWrongState, lease.ErrPastHardEnd, lease.ErrFenced}

// wantStoreError requires a plain store error: "redis: " first, no sentinel.
func wantStoreError(t *testing.T, what string, err error, contains string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			t.Fatalf("%s: error %v is the sentinel %v, want a plain store error", what, err, s)
		}
	}
	if !strings.HasPrefix(err.Error(), "redis: ") || !strings.Contains(err.Error(), contains) {
		t.Fatalf("%s: error %q, want one starting with %q and containing %q", what, err, "redis: ", contains)
	}
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
		default:
			content = "?"
		}
		fmt.Fprintf(&b, "%s %s ttl=%v %v\n", k, typ, ttl, content)
	}
	return b.String()
}

// TestFailureMidScript makes a key a script would write the wrong type
// (a STRING where a hash, a sorted set or a bucket is expected), so a
// write inside the script would fail half way, and checks that each
// script refuses before its first write: every key is exactly as before
// and the error is a plain store error, not a sentinel.
func TestFailureMidScript(t *testing.T) {
	_, c, _ := single(t, redis.Options{})
	ctx := t.Context()
	prefix := uniquePrefix()
	s := newStore(t, c, redis.Options{Prefix: prefix})
	keyOf := func(id, rest string) string { return shardKey(s, id, rest) }
	// bucketOf is the bucket of set (d, a, s, ...) that holds id's entry.
	bucketOf := func(id, set string) string {
		t.Helper()
		_, where := setEntries(t, c, keyOf(id, set))
		for m, b := range where {
			if strings.HasSuffix(m, id) {
				return b
			}
		}
		t.Fatalf("no entry of %s in %s", id, keyOf(id, set))
		return ""
	}

	// breaking turns key into a string for the duration of fn (its content
	// kept aside) and checks that fn's error is a store error and that
	// nothing else changed.
	breaking := func(t *testing.T, key string, fn func() error) {
		t.Helper()
		aside := key + ":aside" // same hash tag, same slot
		had := c.Exists(ctx, key).Val() == 1
		if had {
			if err := c.Rename(ctx, key, aside).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Set(ctx, key, "not a zset", 0).Err(); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, c, prefix)
		err := fn()
		wantStoreError(t, "with "+key+" a string", err, "WRONGTYPE")
		if after := snapshot(t, c, prefix); after != before {
			t.Fatalf("keys changed by a refused script:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		c.Del(ctx, key)
		if had {
			if err := c.Rename(ctx, aside, key).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// sameShard returns a lease like newLease(base, i) in the shard of id.
	sameShard := func(id string, i int) *lease.Lease {
		for {
			l := newLease(base, i)
			if s.Shard(l.ID) == s.Shard(id) {
				return l
			}
		}
	}

	// Every shard's marker exists (a Claim that visits a shard without one
	// creates it).
	if err := s.CheckDataLoss(ctx); err != nil {
		t.Fatal(err)
	}
	l := newLease(base, 1)
	t.Run("Create", func(t *testing.T) {
		other := sameShard(l.ID, 1)              // a neighbour in the same indexes and buckets
		other.DueAt = base.Add(1000 * time.Hour) // never due in this test
		if _, err := s.Create(ctx, other); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{recordKey(s, l.ID), keyOf(l.ID, "k"), keyOf(l.ID, "e"), keyOf(l.ID, "s"),
			keyOf(l.ID, "p"), keyOf(l.ID, "m"),
			bucketOf(other.ID, "e"), bucketOf(other.ID, "s"), bucketOf(other.ID, "k")} {
			breaking(t, k, func() error { _, err := s.Create(ctx, l.Clone()); return err })
		}
		if _, err := s.Get(ctx, l.ID); !errors.Is(err, lease.ErrNotFound) {
			t.Fatalf("Get after refused Creates: %v, want ErrNotFound", err)
		}
	})
	t.Run("RecordOfWrongType", func(t *testing.T) {
		m := newLease(base, 2)
		breaking(t, recordKey(s, m.ID), func() error { _, err := s.Activate(ctx, m.ID, "ref"); return err })
		breaking(t, recordKey(s, m.ID), func() error { _, err := s.Get(ctx, m.ID); return err })
	})

	if _, err := s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	t.Run("Activate", func(t *testing.T) {
		for _, k := range []string{keyOf(l.ID, "p"), keyOf(l.ID, "d"), recordKey(s, l.ID)} {
			breaking(t, k, func() error { _, err := s.Activate(ctx, l.ID, "ref"); return err })
		}
	})
	if _, err := s.Activate(ctx, l.ID, "ref"); err != nil {
		t.Fatal(err)
	}
	t.Run("Renew", func(t *testing.T) {
		for _, k := range []string{keyOf(l.ID, "d"), bucketOf(l.ID, "d")} {
			breaking(t, k, func() error { _, err := s.Renew(ctx, l.ID, l.HardEnd); return err })
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		for _, k := range []string{keyOf(l.ID, "d"), bucketOf(l.ID, "d")} {
			breaking(t, k, func() error { _, err := s.Revoke(ctx, l.ID, lease.ReasonExplicit, base); return err })
		}
	})
	t.Run("RevokeMatching", func(t *testing.T) {
		for _, k := range []string{keyOf(l.ID, "d"), bucketOf(l.ID, "d"), keyOf(l.ID, "s"), bucketOf(l.ID, "s")} {
			breaking(t, k, func() error {
				_, err := s.RevokeMatching(ctx, lease.Selector{Subject: l.Subject}, lease.ReasonKillSwitch, base)
				return err
			})
		}
		breaking(t, keyOf(l.ID, "m"), func() error {
			_, err := s.RevokeMatching(ctx, lease.Selector{Entitlement: l.Entitlement}, lease.ReasonKillSwitch, base)
			return err
		})
	})
	// Only l's shard has due leases: claims elsewhere find nothing.
	t.Run("Claim", func(t *testing.T) {
		for _, k := range []string{keyOf(l.ID, "c"), keyOf(l.ID, "p"), keyOf(l.ID, "m"), keyOf(l.ID, "d"), bucketOf(l.ID, "d"), recordKey(s, l.ID)} {
			breaking(t, k, func() error { _, err := s.Claim(ctx, l.ExpiresAt, 10, time.Minute); return err })
		}
	})
	cs, err := s.Claim(ctx, l.ExpiresAt, 10, time.Minute)
	if err != nil || len(cs) != 1 || cs[0].Lease.ID != l.ID {
		t.Fatalf("Claim = %d, %v; want lease %s", len(cs), err, l.ID)
	}
	t.Run("Finish", func(t *testing.T) {
		for _, k := range []string{keyOf(l.ID, "g"), keyOf(l.ID, "c"), recordKey(s, l.ID)} {
			breaking(t, k, func() error {
				return s.Finish(ctx, cs[0], lease.Outcome{At: l.ExpiresAt, Revoked: true})
			})
		}
	})
	if err := s.Finish(ctx, cs[0], lease.Outcome{At: l.ExpiresAt, Revoked: true}); err != nil {
		t.Fatal(err)
	}
	t.Run("Sweep", func(t *testing.T) {
		// Claim sweeps l from its indexes once its retention passed; with
		// one of them broken, the whole claim script refuses.
		late := l.ExpiresAt.Add(redis.DefaultRetain)
		for _, k := range []string{keyOf(l.ID, "s"), bucketOf(l.ID, "s"), keyOf(l.ID, "g"), bucketOf(l.ID, "g"), bucketOf(l.ID, "e")} {
			breaking(t, k, func() error { _, err := s.Claim(ctx, late, 10, time.Minute); return err })
		}
		if _, err := s.Claim(ctx, late, 10, time.Minute); err != nil {
			t.Fatal(err)
		}
		if c.HExists(ctx, recordKey(s, l.ID), l.ID).Val() {
			t.Fatal("the swept lease's record remains")
		}
		if in := indexedIn(t, c, keyOf(l.ID, ""), l.ID); len(in) != 0 {
			t.Fatalf("the swept lease is still in %v", in)
		}
	})
	checkBuckets(t, c, s)
}

// TestFailureOutOfMemory sets maxmemory tiny with noeviction: Redis
// refuses every write script, and nothing changes.
func TestFailureOutOfMemory(t *testing.T) {
	srv, c, s := single(t, redis.Options{})
	ctx := t.Context()
	prefix := s.Options().Prefix
	l := newLease(base, 1)
	if _, err := s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	// Every shard has its marker: a Claim writes only in l's shard, where
	// it must be refused.
	if err := s.CheckDataLoss(ctx); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, c, prefix)
	for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "1"}} {
		if _, err := srv.Do("CONFIG", "SET", kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Create(ctx, newLease(base, 2))
	wantStoreError(t, "Create over maxmemory", err, "OOM")
	_, err = s.Activate(ctx, l.ID, "ref")
	wantStoreError(t, "Activate over maxmemory", err, "OOM")
	_, err = s.Claim(ctx, l.DueAt, 10, time.Minute)
	wantStoreError(t, "Claim over maxmemory", err, "OOM")
	r := newLease(base, 3)
	r.RequestID = "req-1"
	_, err = s.Create(ctx, r)
	wantStoreError(t, "Create with a request id over maxmemory", err, "OOM")
	if got, err := s.Get(ctx, l.ID); err != nil || got.State != lease.StatePending {
		t.Fatalf("Get over maxmemory = %v, %v; reads still work", got, err)
	}
	if _, err := srv.Do("CONFIG", "SET", "maxmemory", "0"); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, c, prefix); after != before {
		t.Fatalf("keys changed by refused writes:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := s.Activate(ctx, l.ID, "ref"); err != nil {
		t.Fatalf("Activate after memory was freed: %v", err)
	}
}

// TestOutage stops Redis: calls fail fast with a store error; Redis comes
// back on the same port (with its append-only file) and the same Store
// works again, scripts reloaded by themselves.
func TestOutage(t *testing.T) {
	srv := startAOF(t)
	c := client(t, srv.Addr())
	s := newStore(t, c, redis.Options{})
	ctx := t.Context()
	l := newLease(base, 1)
	if _, err := s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Create", func(ctx context.Context) error { _, err := s.Create(ctx, newLease(base, 2)); return err }},
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, l.ID); return err }},
		{"Activate", func(ctx context.Context) error { _, err := s.Activate(ctx, l.ID, "ref"); return err }},
		{"Claim", func(ctx context.Context) error { _, err := s.Claim(ctx, l.DueAt, 10, time.Minute); return err }},
		{"NextDue", func(ctx context.Context) error { _, _, err := s.NextDue(ctx); return err }},
		{"List", func(ctx context.Context) error { _, _, err := s.List(ctx, lease.Query{}); return err }},
		{"RevokeMatching", func(ctx context.Context) error {
			_, err := s.RevokeMatching(ctx, lease.Selector{Subject: l.Subject}, lease.ReasonKillSwitch, base)
			return err
		}},
	}
	for _, c := range calls {
		name, call := c.name, c.call
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err := call(cctx)
		cancel()
		wantStoreError(t, name+" while Redis is down", err, "")
		if d := time.Since(start); d > time.Second+200*time.Millisecond {
			t.Errorf("%s took %s with Redis down, past its context deadline of 1s", name, d)
		}
		t.Logf("%s with Redis down: %s: %v", name, time.Since(start).Round(time.Millisecond), err)
	}

	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Get(ctx, l.ID)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get still failing 10s after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range calls {
		if err := c.call(ctx); err != nil {
			t.Errorf("%s after Redis came back: %v", c.name, err)
		}
	}
}
