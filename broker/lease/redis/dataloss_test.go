package redis_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// losses records what a store reports through OnDataLoss.
type losses struct {
	mu      sync.Mutex
	details []string
}

func (l *losses) add(d string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.details = append(l.details, d)
}

// take returns the reports since the last take.
func (l *losses) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.details
	l.details = nil
	return d
}

// pass is one revoker pass: Claim with the revoker's batch and hold.
func pass(t *testing.T, s *redis.Store) {
	t.Helper()
	if _, err := s.Claim(t.Context(), base, 256, 30*time.Second); err != nil {
		t.Fatalf("Claim: %v", err)
	}
}

// wantLoss requires exactly one report naming every shard.
func wantLoss(t *testing.T, what string, got []string, shards int, contains string) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("%s: %d reports %q, want 1", what, len(got), got)
	}
	if !strings.Contains(got[0], contains) {
		t.Errorf("%s: report %q does not say %q", what, got[0], contains)
	}
	for shard := range shards {
		if !strings.Contains(got[0], fmt.Sprintf("shard %d:", shard)) {
			t.Errorf("%s: report %q does not name shard %d", what, got[0], shard)
		}
	}
}

func wantNoLoss(t *testing.T, what string, got []string) {
	t.Helper()
	if len(got) != 0 {
		t.Fatalf("%s: reports %q, want none", what, got)
	}
}

// TestDataLossFlushAll: after FLUSHALL the next revoker pass reports the
// loss once, re-creates every marker, and the pass after it reports
// nothing; the store goes on working.
func TestDataLossFlushAll(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	var got losses
	s := newStore(t, c, redis.Options{Shards: 4, OnDataLoss: got.add})
	ctx := t.Context()
	if _, err := s.Create(ctx, newLease(base, 1)); err != nil {
		t.Fatal(err)
	}
	pass(t, s) // creates the other shards' markers
	pass(t, s)
	wantNoLoss(t, "before FLUSHALL", got.take())

	if _, err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	pass(t, s)
	wantLoss(t, "pass after FLUSHALL", got.take(), 4, "changed from epoch")
	for shard := range 4 {
		key := fmt.Sprintf("%s:{%d}:m", s.Options().Prefix, shard)
		if c.HGet(ctx, key, "e").Val() == "" {
			t.Errorf("marker %s not re-created", key)
		}
	}
	pass(t, s)
	wantNoLoss(t, "second pass", got.take())

	l := newLease(base, 2)
	if _, err := s.Create(ctx, l); err != nil {
		t.Fatalf("Create after the loss: %v", err)
	}
	if _, err := s.Activate(ctx, l.ID, "ref"); err != nil {
		t.Fatalf("Activate after the loss: %v", err)
	}
	wantNoLoss(t, "Create after the loss", got.take())
}

// TestDataLossSeenByCreate: a Create in a shard whose marker vanished
// reports it (before any revoker pass), and the pass after it reports the
// other shards only.
func TestDataLossSeenByCreate(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	var got losses
	s := newStore(t, c, redis.Options{Shards: 4, OnDataLoss: got.add})
	pass(t, s)
	if _, err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	l := newLease(base, 1)
	if _, err := s.Create(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	d := got.take()
	if len(d) != 1 || !strings.Contains(d[0], fmt.Sprintf("shard %d:", s.Shard(l.ID))) {
		t.Fatalf("Create after FLUSHALL reported %q, want its shard %d", d, s.Shard(l.ID))
	}
	pass(t, s)
	d = got.take()
	if len(d) != 1 || strings.Contains(d[0], fmt.Sprintf("shard %d:", s.Shard(l.ID))) || strings.Count(d[0], "shard ") != 3 {
		t.Fatalf("pass after the Create reported %q, want the 3 other shards", d)
	}
}

// TestDataLossRestartWithoutPersistence: a Redis that restarts without
// persistence comes back empty; the next pass reports it.
func TestDataLossRestartWithoutPersistence(t *testing.T) {
	srv := testenv.Redis(t) // no RDB, no AOF
	c := client(t, srv.Addr())
	var got losses
	s := newStore(t, c, redis.Options{Shards: 2, OnDataLoss: got.add})
	if _, err := s.Create(t.Context(), newLease(base, 1)); err != nil {
		t.Fatal(err)
	}
	pass(t, s)
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Claim(t.Context(), base, 256, 30*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Claim after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantLoss(t, "pass after a restart without persistence", got.take(), 2, "changed from epoch")
}

// TestDataLossRestartWithPersistence: a restart that keeps the data (AOF)
// is not a loss.
func TestDataLossRestartWithPersistence(t *testing.T) {
	srv := startAOF(t)
	c := client(t, srv.Addr())
	var got losses
	s := newStore(t, c, redis.Options{Shards: 2, OnDataLoss: got.add})
	if _, err := s.Create(t.Context(), newLease(base, 1)); err != nil {
		t.Fatal(err)
	}
	pass(t, s)
	time.Sleep(1100 * time.Millisecond) // appendfsync everysec
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.Claim(t.Context(), base, 256, 30*time.Second); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("Claim after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantNoLoss(t, "pass after a restart with the AOF", got.take())
}

// TestDataLossOtherReplicas: every broker replica that had seen the old
// markers reports the loss once, whichever re-created the markers; a
// replica that starts after the loss reports nothing.
func TestDataLossOtherReplicas(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	prefix := uniquePrefix()
	var ga, gb, gc losses
	a := newStore(t, c, redis.Options{Prefix: prefix, Shards: 3, OnDataLoss: ga.add})
	b := newStore(t, c, redis.Options{Prefix: prefix, Shards: 3, OnDataLoss: gb.add})
	pass(t, a)
	pass(t, b)
	if _, err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	pass(t, a)
	wantLoss(t, "replica a", ga.take(), 3, "changed from epoch")
	pass(t, b)
	wantLoss(t, "replica b, after a re-created the markers", gb.take(), 3, "changed from epoch")
	later := newStore(t, c, redis.Options{Prefix: prefix, Shards: 3, OnDataLoss: gc.add})
	pass(t, later)
	pass(t, a)
	pass(t, b)
	wantNoLoss(t, "a replica started after the loss", gc.take())
	wantNoLoss(t, "replica a again", ga.take())
	wantNoLoss(t, "replica b again", gb.take())
}

// TestDataLossCheck: CheckDataLoss checks every shard in one call, and a
// store without OnDataLoss works as before.
func TestDataLossCheck(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	var got losses
	s := newStore(t, c, redis.Options{OnDataLoss: got.add})
	quiet := newStore(t, c, redis.Options{Prefix: s.Options().Prefix})
	ctx := t.Context()
	for _, st := range []*redis.Store{s, quiet} {
		if err := st.CheckDataLoss(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wantNoLoss(t, "first check", got.take())
	if _, err := srv.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckDataLoss(ctx); err != nil {
		t.Fatal(err)
	}
	wantLoss(t, "check after FLUSHALL", got.take(), redis.DefaultShards, "changed from epoch")
	if err := quiet.CheckDataLoss(ctx); err != nil {
		t.Fatalf("CheckDataLoss without OnDataLoss: %v", err)
	}
	if err := s.CheckDataLoss(ctx); err != nil {
		t.Fatal(err)
	}
	wantNoLoss(t, "second check", got.take())
}

// TestDataLossMarkerGone: a marker that vanished while its shard still
// holds leases (eviction, a partial restore) is reported even by a store
// that never saw it.
func TestDataLossMarkerGone(t *testing.T) {
	srv := testenv.Redis(t)
	c := client(t, srv.Addr())
	s := newStore(t, c, redis.Options{Shards: 2})
	l := newLease(base, 1)
	if _, err := s.Create(t.Context(), l); err != nil {
		t.Fatal(err)
	}
	c.HDel(t.Context(), shardKey(s, l.ID, "m"), "e")
	var got losses
	fresh := newStore(t, c, redis.Options{Prefix: s.Options().Prefix, Shards: 2, OnDataLoss: got.add})
	pass(t, fresh)
	d := got.take()
	if len(d) != 1 || !strings.Contains(d[0], "still holds leases") ||
		!strings.Contains(d[0], fmt.Sprintf("shard %d:", s.Shard(l.ID))) {
		t.Fatalf("reports %q, want one for shard %d saying it still holds leases", d, s.Shard(l.ID))
	}
	if _, err := fresh.Get(t.Context(), l.ID); err != nil {
		t.Fatalf("Get: %v", err)
	}
}

// TestDataLossCluster: FLUSHALL on every primary of a cluster is reported
// by the next pass, once, naming every shard.
func TestDataLossCluster(t *testing.T) {
	nodes := testenv.RedisClusterNodes(t)
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}
	c := clusterClient(t, addrs)
	var got losses
	s := newStore(t, c, redis.Options{OnDataLoss: got.add})
	ctx := t.Context()
	for i := range 20 {
		l := newLease(base, i)
		if _, err := s.Create(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	pass(t, s)
	wantNoLoss(t, "before FLUSHALL", got.take())
	for _, n := range nodes {
		if _, err := n.Do("FLUSHALL"); err != nil {
			t.Fatal(err)
		}
	}
	pass(t, s)
	wantLoss(t, "pass after FLUSHALL on every primary", got.take(), redis.DefaultShards, "changed from epoch")
	pass(t, s)
	wantNoLoss(t, "second pass", got.take())
	if n, err := c.Exists(ctx, fmt.Sprintf("%s:{0}:m", s.Options().Prefix)).Result(); err != nil || n != 1 {
		t.Errorf("marker of shard 0 after the pass: %d, %v", n, err)
	}
}
