package redis_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// startAOF starts a server with the append-only file on, as the broker
// needs it in production.
func startAOF(t *testing.T) *testenv.RedisServer {
	return testenv.StartRedis(t, testenv.RedisConfig{AppendOnly: true})
}

// TestWaitReplicas: with a replica up, writes wait for it and succeed;
// with the replica stopped, a write returns an error after WaitTimeout
// (although it happened on the primary), and works again once the replica
// is back.
func TestWaitReplicas(t *testing.T) {
	primary, replica := testenv.RedisPair(t)
	c := client(t, primary.Addr())
	const timeout = time.Second
	s := newStore(t, c, redis.Options{WaitReplicas: 1, WaitTimeout: timeout})
	ctx := t.Context()

	l := newLease(base, 1)
	if _, err := s.Create(ctx, l); err != nil {
		t.Fatalf("Create with the replica up: %v", err)
	}
	if _, err := s.Activate(ctx, l.ID, "ref"); err != nil {
		t.Fatalf("Activate with the replica up: %v", err)
	}
	r := newLease(base, 2)
	r.RequestID = "req-1"
	if _, err := s.Create(ctx, r); err != nil {
		t.Fatalf("Create with a request id, replica up: %v", err)
	}
	// A refused change is reported as such, WAIT or not.
	if _, err := s.Activate(ctx, l.ID, "ref"); !errors.Is(err, lease.ErrWrongState) {
		t.Fatalf("second Activate: %v, want ErrWrongState", err)
	}

	replica.Stop()
	m := newLease(base, 3)
	start := time.Now()
	_, err := s.Create(ctx, m)
	took := time.Since(start)
	wantStoreError(t, "Create with the replica down", err, "0 of 1 replicas")
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("Create with the replica down took %s, want about WaitTimeout %s", took, timeout)
	}
	// The write happened on the primary all the same (the documented
	// semantics): the caller treats the store as unavailable.
	if _, err := s.Get(ctx, m.ID); err != nil {
		t.Errorf("Get of the lease whose WAIT failed: %v (the write itself happened)", err)
	}
	_, err = s.Revoke(ctx, l.ID, lease.ReasonExplicit, base)
	wantStoreError(t, "Revoke with the replica down", err, "WAIT")

	replica.Start()
	testenv.WaitReplicaLink(t, replica)
	if _, err := s.Create(ctx, newLease(base, 4)); err != nil {
		t.Fatalf("Create with the replica back: %v", err)
	}
}

// TestWaitCluster: WAIT runs on the primary that owns the lease's slot (on
// the same connection as the write); the test cluster has no replicas, so
// every write reports 0 of 1, never a routing error.
func TestWaitCluster(t *testing.T) {
	c := clusterClient(t, testenv.RedisCluster(t))
	s := newStore(t, c, redis.Options{WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	for i := range 8 {
		l := newLease(base, i)
		_, err := s.Create(t.Context(), l)
		wantStoreError(t, "Create on a cluster without replicas", err, "0 of 1 replicas")
		if _, err := s.Get(t.Context(), l.ID); err != nil {
			t.Fatalf("Get: %v", err)
		}
	}
}

// TestReadOnlyReplica: a store pointed at a replica (a failover not yet
// noticed) gets READONLY for every write, as a plain store error, and the
// replica is unchanged.
func TestReadOnlyReplica(t *testing.T) {
	primary, replica := testenv.RedisPair(t)
	ps := newStore(t, client(t, primary.Addr()), redis.Options{})
	l := newLease(base, 1)
	if _, err := ps.Create(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	rc := client(t, replica.Addr())
	rs := newStore(t, rc, redis.Options{Prefix: ps.Options().Prefix})
	deadline := time.Now().Add(10 * time.Second)
	for { // the replica catches up
		if _, err := rs.Get(t.Context(), l.ID); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica never got the lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := rs.Create(t.Context(), newLease(base, 2))
	wantStoreError(t, "Create on a replica", err, "READONLY")
	_, err = rs.Activate(t.Context(), l.ID, "ref")
	wantStoreError(t, "Activate on a replica", err, "READONLY")
	if got, err := rs.Get(t.Context(), l.ID); err != nil || got.State != lease.StatePending {
		t.Fatalf("lease on the replica after refused writes: %v, %v", got, err)
	}
}
