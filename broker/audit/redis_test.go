package audit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestRedisReplicasShareOneChain runs three broker replicas (three Logs,
// each with its own Redis client and its own file) appending concurrently
// to one Redis chain: the stream is one total order that verifies, every
// event of every replica is in it once, checkpoints never seal nothing,
// and each replica's file holds exactly its own events.
func TestRedisReplicasShareOneChain(t *testing.T) {
	srv := testenv.Redis(t)
	key := newKey(t)
	const replicas, workers, each = 3, 4, 60
	type replica struct {
		log  *Log
		file string
		rs   *RedisStreamSink
	}
	var rsList []replica
	for i := range replicas {
		c := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		fs, err := NewFileSink(FileConfig{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		l, rs := newRedisLog(t, c, key, func(cfg *Config, _ *RedisConfig) {
			cfg.CheckpointEvery = 25
			cfg.Sinks = []SinkConfig{{Sink: fs}}
			cfg.Actor = fmt.Sprintf("replica-%d", i)
		})
		rsList = append(rsList, replica{l, path, rs})
	}
	var wg sync.WaitGroup
	for r := range replicas {
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					_, err := rsList[r].log.Append(context.Background(), Event{Type: TypeDecision,
						Actor: fmt.Sprintf("replica-%d", r), Subject: fmt.Sprintf("w%d", w), Fields: map[string]string{"i": fmt.Sprint(i)}})
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	rs := rsList[0].rs
	rep := mustVerify(t, rs, key.Public())
	total := uint64(replicas * workers * each)
	if !rep.OK() || rep.Last != total+uint64(rep.Checkpoints) || rep.Checkpoints < int(total/25)-1 {
		t.Fatalf("stream: %s (%+v)", rep, rep)
	}
	t.Logf("stream: %s", rep)
	// No two checkpoints in a row, and each replica's file has its own.
	var prevCP bool
	perReplica := map[string]int{}
	for rec, err := range rs.Records(context.Background(), 0) {
		if err != nil {
			t.Fatal(err)
		}
		isCP := rec.Event.Type == TypeCheckpoint
		if isCP && prevCP {
			t.Fatalf("two checkpoints in a row at seq %d", rec.Event.Seq)
		}
		prevCP = isCP
		perReplica[rec.Event.Actor]++
	}
	for i, r := range rsList {
		var n int
		var last uint64
		for rec, err := range (JSONLFile{Path: r.file}).Records(context.Background(), 0) {
			if err != nil {
				t.Fatal(err)
			}
			e := rec.Event
			if h, _ := ComputeHash(&e); h != e.Hash || e.Seq <= last || e.Actor != fmt.Sprintf("replica-%d", i) {
				t.Fatalf("replica %d file: seq %d after %d, actor %s", i, e.Seq, last, e.Actor)
			}
			last = e.Seq
			n++
		}
		if want := perReplica[fmt.Sprintf("replica-%d", i)]; n != want {
			t.Fatalf("replica %d file has %d events, stream has %d of its", i, n, want)
		}
	}
}

func TestRedisCluster(t *testing.T) {
	addrs := testenv.RedisCluster(t)
	c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	key := newKey(t)
	l, rs := newRedisLog(t, c, key, func(cfg *Config, rc *RedisConfig) { cfg.CheckpointEvery = 10; rc.Prefix = "cl" })
	appendN(t, l, 35)
	if rep := mustVerify(t, rs, key.Public()); !rep.OK() || rep.Last != 38 {
		t.Fatalf("cluster: %s", rep)
	}
	if rs.StreamKey() != "cl:{audit}:events" || rs.HeadKey() != "cl:{audit}:head" {
		t.Fatalf("keys %s %s", rs.StreamKey(), rs.HeadKey())
	}
}

func TestRedisChainFailsClosed(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t, testenv.RedisConfig{AppendOnly: true})
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	key := newKey(t)
	l, rs := newRedisLog(t, c, key, func(cfg *Config, _ *RedisConfig) { cfg.CheckpointEvery = -1 })
	appendN(t, l, 3)

	srv.Stop()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := l.Append(cctx, Event{Type: TypeLeaseIssued, LeaseID: "l"})
	cancel()
	if !errors.Is(err, ErrChain) {
		t.Fatalf("Redis down: %v, want ErrChain", err)
	}
	srv.Start()
	e, err := l.Append(ctx, Event{Type: TypeLeaseIssued, LeaseID: "l"})
	if err != nil || e.Seq != 4 {
		t.Fatalf("after restart: seq %d, %v", e.Seq, err)
	}

	// A lost head key is not papered over.
	if err := c.Del(ctx, rs.HeadKey()).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = l.Append(ctx, Event{Type: "x.y"})
	if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "the chain head went back from seq 4 to seq 0") {
		t.Fatalf("missing head, replica that saw it: %v", err)
	}
	fresh, _ := newRedisLog(t, c, key, nil) // a replica that starts now
	_, err = fresh.Append(ctx, Event{Type: "x.y"})
	if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "chain head is missing but the stream holds events: restore mf:{audit}:head") {
		t.Fatalf("missing head, new replica: %v", err)
	}
	if rep := mustVerify(t, rs, key.Public()); rep.OK() || rep.Problem.Kind != Deleted || !strings.Contains(rep.Problem.Detail, "head record is missing") {
		t.Fatalf("verify with a missing head: %s", rep)
	}
}

// TestRedisDataLossIsRefused: a Redis that comes back empty (no
// persistence) would restart the chain at seq 1; a replica that saw the
// old head refuses to append.
func TestRedisDataLossIsRefused(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Redis(t) // no persistence
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	l, _ := newRedisLog(t, c, newKey(t), func(cfg *Config, _ *RedisConfig) { cfg.CheckpointEvery = -1 })
	appendN(t, l, 3)
	srv.Stop()
	srv.Start()
	_, err := l.Append(ctx, Event{Type: "x.y"})
	if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "the chain head went back from seq 3 to seq 0: Redis lost audit events") {
		t.Fatalf("after data loss: %v", err)
	}
	if n, _ := c.XLen(ctx, "mf:{audit}:events").Result(); n != 0 {
		t.Fatalf("%d events written after data loss", n)
	}
}

// TestRedisStreamAsSink copies an in-process chain into a stream.
func TestRedisStreamAsSink(t *testing.T) {
	c := redisClient(t)
	rs, err := NewRedisStreamSink(c, RedisConfig{Prefix: "copy"})
	if err != nil {
		t.Fatal(err)
	}
	fl := newFileLog(t, func(cfg *Config) { cfg.Sinks = append(cfg.Sinks, SinkConfig{Sink: rs}) })
	appendN(t, fl.Log, 5)
	// A retried write of the head is success; a write that skips is not.
	last := streamRaws(t, c, rs)[4]
	if err := rs.Write(context.Background(), parse(t, last)); err != nil {
		t.Fatalf("retried write: %v", err)
	}
	e := parse(t, last)
	e.Seq += 2
	if err := rs.Write(context.Background(), e); err == nil || !strings.Contains(err.Error(), "stream head is at seq 5, not 6") {
		t.Fatalf("skipping write: %v", err)
	}
	fl.Close(context.Background())
	for _, r := range []Reader{rs, fl.file} {
		if rep := mustVerify(t, r, fl.PublicKey()); !rep.OK() || rep.Last != 6 {
			t.Fatalf("%T: %s", r, rep)
		}
	}
	if _, err := NewLog(context.Background(), Config{Chain: rs, Sinks: []SinkConfig{{Sink: rs}}, Signer: fl.key}); err == nil {
		t.Fatal("the chain listed as a sink too was accepted")
	}
}

func TestRedisTrim(t *testing.T) {
	ctx := context.Background()
	c := redisClient(t)
	key := newKey(t)
	clock := newClock()
	l, rs := newRedisLog(t, c, key, func(cfg *Config, rc *RedisConfig) {
		cfg.CheckpointEvery = 5
		cfg.Now = clock.Now
		rc.MaxLen = 8
	})
	appendN(t, l, 16)
	n, err := l.Trim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A checkpoint follows every 5 events: 1-5 cp6 7-11 cp12 13-17 cp18
	// 19. Head 19, keep at least 8: cut at the last checkpoint at or
	// before seq 12, so 1..11 go and cp12 is the new first event.
	if n != 11 {
		t.Fatalf("trimmed %d, want 11", n)
	}
	rep := mustVerify(t, rs, key.Public())
	if !rep.OK() || rep.First != 12 || rep.TrimmedThrough != 11 || rep.Last != 20 {
		t.Fatalf("after trim: %s (%+v)", rep, rep)
	}
	evs, _ := Query(ctx, rs, Filter{Types: []Type{TypeTrimmed}})
	if len(evs) != 1 || evs[0].Fields["through_seq"] != "11" || evs[0].Fields["from_seq"] != "1" {
		t.Fatalf("trim record %+v", evs)
	}
	// Nothing more to trim at a checkpoint yet.
	if n, err := l.Trim(ctx); err != nil || n != 0 {
		t.Fatalf("second trim: %d, %v", n, err)
	}

	// A prefix deleted without a record is caught.
	raws := streamRaws(t, c, rs)
	var noRecord []string
	for _, r := range raws {
		if parse(t, r).Type != TypeTrimmed {
			noRecord = append(noRecord, r)
		}
	}
	rewriteStream(t, c, rs, noRecord)
	if rep := mustVerify(t, rs, key.Public()); rep.OK() || rep.Problem.Kind != Deleted || rep.Problem.Seq != 1 {
		t.Fatalf("prefix removed without record: %s", rep)
	}

	// A prefix that does not verify is not trimmed.
	c2 := redisClient(t)
	l2, rs2 := newRedisLog(t, c2, key, func(cfg *Config, rc *RedisConfig) { cfg.CheckpointEvery = 5; rc.MaxLen = 8 })
	appendN(t, l2, 16)
	raws = streamRaws(t, c2, rs2)
	e := parse(t, raws[1])
	e.Subject = "user:mallory"
	raws[1] = encode(t, e)
	rewriteStream(t, c2, rs2, raws)
	if n, err := l2.Trim(ctx); !errors.Is(err, ErrNotVerified) || n != 0 {
		t.Fatalf("trim of a tampered prefix: %d, %v", n, err)
	}
	if got := len(streamRaws(t, c2, rs2)); got != 19 {
		t.Fatalf("stream has %d entries after a refused trim", got)
	}
}

func TestRedisTrimFromRun(t *testing.T) {
	c := redisClient(t)
	key := newKey(t)
	l, rs := newRedisLog(t, c, key, func(cfg *Config, rc *RedisConfig) {
		cfg.CheckpointEvery = 5
		cfg.TrimInterval = time.Millisecond
		rc.MaxLen = 5
	})
	appendN(t, l, 12)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool {
		rep, err := Verify(context.Background(), rs, key.Public())
		return err == nil && rep.OK() && rep.TrimmedThrough > 0
	})
}
