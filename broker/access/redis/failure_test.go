package redis_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

var sentinels = []error{access.ErrNotFound, access.ErrExists, access.ErrConflict}

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

// TestFailureMidScript gives a key a write script would write the wrong
// type, so that a write inside the script would fail half way, and checks
// that each script refuses before its first write: every key is exactly
// as before and the error is a plain store error, not a sentinel.
func TestFailureMidScript(t *testing.T) {
	_, c, s := single(t, redis.Options{RecordRetention: time.Hour})
	ctx := t.Context()
	prefix := s.Options().Prefix

	// breaking turns key into a value of another type than the store
	// wants (a string, or a list where it wants a string) for the
	// duration of fn, its content kept aside, and checks that fn's error
	// is a store error and that nothing changed.
	breaking := func(t *testing.T, key string, fn func() error) {
		t.Helper()
		aside := key + ":aside" // same hash tag, same slot
		had := c.Exists(ctx, key).Val() == 1
		if had {
			if err := c.Rename(ctx, key, aside).Err(); err != nil {
				t.Fatal(err)
			}
		}
		want, holds := "string", func() error { return c.Set(ctx, key, "wrong", 0).Err() }
		if strings.Contains(key, ":mark:") || strings.Contains(key, ":record:") || strings.HasSuffix(key, ":records:skew") {
			want, holds = "list", func() error { return c.RPush(ctx, key, "wrong").Err() }
		}
		if err := holds(); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, c, prefix)
		err := fn()
		wantStoreError(t, "with "+key+" a "+want, err, "holds a "+want)
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

	t.Run("CreateRequest", func(t *testing.T) {
		r := newRequest(1, "user:alice", "db")
		neighbour := newRequest(1, "user:alice", "db") // fills the same indexes
		if err := s.CreateRequest(ctx, neighbour); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"request:" + r.ID, "requests", "requests:requester:user:alice", "requests:entitlement:db", "requests:state:pending"} {
			breaking(t, keyOf(s, r.ID, k), func() error { c := *r; return s.CreateRequest(ctx, &c) })
		}
		if _, err := s.GetRequest(ctx, r.ID); !errors.Is(err, access.ErrNotFound) {
			t.Fatalf("Get after refused creates: %v, want ErrNotFound", err)
		}
	})
	t.Run("UpdateRequest", func(t *testing.T) {
		r := newRequest(2, "user:alice", "db")
		if err := s.CreateRequest(ctx, r); err != nil {
			t.Fatal(err)
		}
		u := *r
		u.Requester.ID, u.Entitlement, u.State = "user:bob", "web", access.RequestApproved
		for _, k := range []string{
			"request:" + r.ID,
			// old and new index entries of every field that changes
			"requests:requester:user:alice", "requests:requester:user:bob",
			"requests:entitlement:db", "requests:entitlement:web",
			"requests:state:pending", "requests:state:approved",
		} {
			breaking(t, keyOf(s, r.ID, k), func() error { c := u; _, err := s.UpdateRequest(ctx, &c); return err })
		}
		if got, err := s.GetRequest(ctx, r.ID); err != nil || got.Version != 1 || got.State != access.RequestPending {
			t.Fatalf("after refused updates: %+v, %v", got, err)
		}
		if _, err := s.UpdateRequest(ctx, &u); err != nil {
			t.Fatalf("update once the keys are repaired: %v", err)
		}
	})
	t.Run("Grants", func(t *testing.T) {
		g := newGrant(3, "user:alice", "db", policy.GrantRequest)
		for _, k := range []string{"grant:" + g.ID, "grants", "grants:subject:user:alice", "grants:entitlement:db", "grants:kind:request", "grants:state:active"} {
			breaking(t, keyOf(s, g.ID, k), func() error { c := *g; return s.CreateGrant(ctx, &c) })
		}
		if err := s.CreateGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
		u := *g
		u.State = access.GrantRevoked
		for _, k := range []string{"grant:" + g.ID, "grants:state:active", "grants:state:revoked", "grants:kind:request"} {
			breaking(t, keyOf(s, g.ID, k), func() error { c := u; _, err := s.UpdateGrant(ctx, &c); return err })
		}
	})
	t.Run("Certification", func(t *testing.T) {
		c1 := &access.Certification{ID: lease.NewID(at(1)), GrantID: "g1", By: "user:o", At: at(1), Decision: access.Certify}
		if err := s.AddCertification(ctx, c1); err != nil {
			t.Fatal(err)
		}
		// c2 lands in c1's shard, so its script reads c1 as the latest.
		c2 := &access.Certification{GrantID: "g1", By: "user:o", At: at(2), Decision: access.Revoke}
		for i := 0; c2.ID == "" || s.Shard(c2.ID) != s.Shard(c1.ID); i++ {
			c2.ID = lease.NewID(at(2 + i))
		}
		for _, k := range []string{"cert:" + c2.ID, "certs:latest", "cert:" + c1.ID} {
			breaking(t, keyOf(s, c2.ID, k), func() error { return s.AddCertification(ctx, c2) })
		}
		m, err := s.LatestCertifications(ctx)
		if err != nil || m["g1"].ID != c1.ID {
			t.Fatalf("latest after refused adds: %v, %v", m, err)
		}
	})
	t.Run("Marks", func(t *testing.T) {
		if _, _, err := s.Mark(ctx, "seen/g1", at(1)); err != nil {
			t.Fatal(err)
		}
		breaking(t, keyOf(s, "seen/g2", "mark:seen/g2"), func() error { _, _, err := s.Mark(ctx, "seen/g2", at(1)); return err })
		breaking(t, keyOf(s, "seen/g1", "mark:seen/g1"), func() error { return s.Unmark(ctx, "seen/g1") })
	})
	t.Run("AppendRecord", func(t *testing.T) {
		// old is trimmed by the append of rec (same shard, over an hour
		// later), so its key is one the script deletes.
		old := &access.DecisionRecord{ID: lease.NewID(at(0)), At: at(0), Action: access.ActionCancel, Outcome: access.OutcomeDone}
		if err := s.AppendRecord(ctx, old); err != nil {
			t.Fatal(err)
		}
		rec := &access.DecisionRecord{At: at(0).Add(2 * time.Hour), Action: access.ActionCancel, Outcome: access.OutcomeDone}
		for i := 0; rec.ID == "" || s.Shard(rec.ID) != s.Shard(old.ID); i++ {
			rec.ID = lease.NewID(rec.At.Add(time.Duration(i) * time.Millisecond))
		}
		for _, k := range []string{"record:" + rec.ID, "records", "records:at", "records:skew", "record:" + old.ID} {
			breaking(t, keyOf(s, rec.ID, k), func() error { return s.AppendRecord(ctx, rec) })
		}
		if err := s.AppendRecord(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if n := c.Exists(ctx, keyOf(s, old.ID, "record:"+old.ID)).Val(); n != 0 {
			t.Fatal("the record past retention was not trimmed")
		}
	})
	t.Run("Reads", func(t *testing.T) {
		r := newRequest(5, "user:carol", "db")
		if err := s.CreateRequest(ctx, r); err != nil {
			t.Fatal(err)
		}
		key := keyOf(s, r.ID, "request:"+r.ID)
		c.Rename(ctx, key, key+":aside")
		c.Set(ctx, key, "wrong", 0)
		_, err := s.GetRequest(ctx, r.ID)
		wantStoreError(t, "Get of a string", err, "WRONGTYPE")
		_, err = s.ListRequests(ctx, access.RequestQuery{Requester: "user:carol"})
		wantStoreError(t, "List over a string", err, "holds a string")
		c.Del(ctx, key)
		c.Rename(ctx, key+":aside", key)
		idx := keyOf(s, r.ID, "requests:requester:user:carol")
		c.Del(ctx, idx)
		c.Set(ctx, idx, "wrong", 0)
		_, err = s.ListRequests(ctx, access.RequestQuery{Requester: "user:carol"})
		wantStoreError(t, "List of a string index", err, "holds a string")
		c.Del(ctx, idx)
		c.HSet(ctx, key, "j", "{not json")
		_, err = s.GetRequest(ctx, r.ID)
		wantStoreError(t, "Get of damaged JSON", err, "is damaged")
		_, err = s.ListRequests(ctx, access.RequestQuery{})
		wantStoreError(t, "List of damaged JSON", err, "is damaged")
		latest := keyOf(s, "x", "certs:latest")
		c.Set(ctx, latest, "wrong", 0)
		_, err = s.LatestCertifications(ctx)
		wantStoreError(t, "LatestCertifications over a string", err, "holds a string")
		c.Del(ctx, latest)
		recs := keyOf(s, "x", "records")
		c.Set(ctx, recs, "wrong", 0)
		_, err = s.Records(ctx, access.RecordQuery{})
		wantStoreError(t, "Records over a string", err, "holds a string")
		c.Del(ctx, recs)
	})
}

// TestFailureOutOfMemory sets maxmemory tiny with noeviction: Redis
// refuses every write script at its first write, nothing changes, and
// reads still work.
func TestFailureOutOfMemory(t *testing.T) {
	srv, c, s := single(t, redis.Options{})
	ctx := t.Context()
	r := newRequest(1, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, c, s.Options().Prefix)
	for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "1"}} {
		if _, err := srv.Do("CONFIG", "SET", kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	err := s.CreateRequest(ctx, newRequest(2, "user:bob", "db"))
	wantStoreError(t, "CreateRequest over maxmemory", err, "OOM")
	u := *r
	u.State = access.RequestApproved
	_, err = s.UpdateRequest(ctx, &u)
	wantStoreError(t, "UpdateRequest over maxmemory", err, "OOM")
	err = s.CreateGrant(ctx, newGrant(1, "user:alice", "db", policy.GrantRequest))
	wantStoreError(t, "CreateGrant over maxmemory", err, "OOM")
	err = s.AddCertification(ctx, &access.Certification{ID: lease.NewID(at(1)), GrantID: "g", At: at(1)})
	wantStoreError(t, "AddCertification over maxmemory", err, "OOM")
	_, _, err = s.Mark(ctx, "k", at(1))
	wantStoreError(t, "Mark over maxmemory", err, "OOM")
	err = s.AppendRecord(ctx, &access.DecisionRecord{ID: lease.NewID(at(1)), At: at(1)})
	wantStoreError(t, "AppendRecord over maxmemory", err, "OOM")
	if got, err := s.GetRequest(ctx, r.ID); err != nil || got.State != access.RequestPending {
		t.Fatalf("Get over maxmemory = %v, %v; reads still work", got, err)
	}
	if list, err := s.ListRequests(ctx, access.RequestQuery{}); err != nil || len(list) != 1 {
		t.Fatalf("List over maxmemory = %d, %v; reads still work", len(list), err)
	}
	if _, err := srv.Do("CONFIG", "SET", "maxmemory", "0"); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, c, s.Options().Prefix); after != before {
		t.Fatalf("keys changed by refused writes:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := s.UpdateRequest(ctx, &u); err != nil {
		t.Fatalf("UpdateRequest after memory was freed: %v", err)
	}
}

// TestOutage stops Redis: every call fails fast with a store error (the
// service fails closed); Redis comes back on the same port with its
// append-only file and the same Store works again, scripts reloaded.
func TestOutage(t *testing.T) {
	srv := testenv.StartRedis(t, testenv.RedisConfig{AppendOnly: true})
	s := newStore(t, client(t, srv.Addr()), redis.Options{})
	ctx := t.Context()
	r := newRequest(1, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"CreateRequest", func(ctx context.Context) error { return s.CreateRequest(ctx, newRequest(2, "user:b", "db")) }},
		{"GetRequest", func(ctx context.Context) error { _, err := s.GetRequest(ctx, r.ID); return err }},
		{"ListRequests", func(ctx context.Context) error { _, err := s.ListRequests(ctx, access.RequestQuery{}); return err }},
		{"ListGrants", func(ctx context.Context) error {
			_, err := s.ListGrants(ctx, access.GrantQuery{Subject: "a", Entitlement: "b"})
			return err
		}},
		{"LatestCertifications", func(ctx context.Context) error { _, err := s.LatestCertifications(ctx); return err }},
		{"Mark", func(ctx context.Context) error { _, _, err := s.Mark(ctx, "k", at(1)); return err }},
		{"Records", func(ctx context.Context) error {
			_, err := s.Records(ctx, access.RecordQuery{Since: at(0)})
			return err
		}},
	}
	for _, c := range calls {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err := c.call(cctx)
		cancel()
		wantStoreError(t, c.name+" while Redis is down", err, "")
		if d := time.Since(start); d > time.Second+200*time.Millisecond {
			t.Errorf("%s took %s with Redis down, past its context deadline of 1s", c.name, d)
		}
	}
	srv.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.GetRequest(ctx, r.ID); err == nil {
			break
		} else if time.Now().After(deadline) {
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

// TestWaitReplicas: with a replica up, writes wait for it and succeed;
// with the replica stopped, a write returns a store error after
// WaitTimeout (although it happened on the primary); a refused change is
// reported as its sentinel, WAIT or not.
func TestWaitReplicas(t *testing.T) {
	primary, replica := testenv.RedisPair(t)
	s := newStore(t, client(t, primary.Addr()), redis.Options{WaitReplicas: 1, WaitTimeout: time.Second})
	ctx := t.Context()
	r := newRequest(1, "user:alice", "db")
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatalf("CreateRequest with the replica up: %v", err)
	}
	if _, err := s.UpdateRequest(ctx, r); err != nil {
		t.Fatalf("UpdateRequest with the replica up: %v", err)
	}
	if _, err := s.UpdateRequest(ctx, r); !errors.Is(err, access.ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	replica.Stop()
	m := newRequest(2, "user:bob", "db")
	err := s.CreateRequest(ctx, m)
	wantStoreError(t, "CreateRequest with the replica down", err, "0 of 1 replicas")
	if _, err := s.GetRequest(ctx, m.ID); err != nil {
		t.Errorf("Get of the request whose WAIT failed: %v (the write itself happened)", err)
	}
	_, _, err = s.Mark(ctx, "k", at(1))
	wantStoreError(t, "Mark with the replica down", err, "WAIT")
}

// TestReadOnlyReplica: a store pointed at a replica (a failover not yet
// noticed) gets READONLY for every write, as a plain store error.
func TestReadOnlyReplica(t *testing.T) {
	primary, replica := testenv.RedisPair(t)
	ps := newStore(t, client(t, primary.Addr()), redis.Options{})
	r := newRequest(1, "user:alice", "db")
	if err := ps.CreateRequest(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	rs := newStore(t, client(t, replica.Addr()), redis.Options{Prefix: ps.Options().Prefix})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := rs.GetRequest(t.Context(), r.ID); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica never got the request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	err := rs.CreateRequest(t.Context(), newRequest(2, "user:bob", "db"))
	wantStoreError(t, "CreateRequest on a replica", err, "READONLY")
	_, err = rs.UpdateRequest(t.Context(), r)
	wantStoreError(t, "UpdateRequest on a replica", err, "READONLY")
	var re goredis.Error
	if !errors.As(err, &re) {
		t.Errorf("READONLY is not wrapped as a redis.Error: %T", err)
	}
}
