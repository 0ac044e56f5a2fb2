package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// benchEvent is a typical lease event.
func benchEvent(i int) Event {
	return Event{Type: TypeLeaseIssued, Actor: "spiffe://example.org/ns/prod/sa/billing",
		Subject: "spiffe://example.org/ns/prod/sa/billing", Entitlement: "db-admin", GrantID: "g-billing",
		LeaseID: fmt.Sprintf("01jlease%018d", i), Fields: map[string]string{"issuer": "jwt",
			"expires_at": "2030-01-02T11:00:00Z", "hard_end": "2030-01-02T14:00:00Z", "renewable": "true", "revocable": "false"}}
}

func benchAppend(b *testing.B, l *Log) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Append(ctx, benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendFile: one process, in-process chain, a JSONL file with
// each fsync policy; a checkpoint every 1000 events.
func BenchmarkAppendFile(b *testing.B) {
	for _, tc := range []struct {
		name string
		sync SyncPolicy
	}{{"fsync=always", SyncAlways}, {"fsync=periodic", SyncPeriodic}, {"fsync=never", SyncNever}} {
		b.Run(tc.name, func(b *testing.B) {
			fs, err := NewFileSink(FileConfig{Path: filepath.Join(b.TempDir(), "audit.jsonl"), Sync: tc.sync})
			if err != nil {
				b.Fatal(err)
			}
			l, err := NewLog(context.Background(), Config{Sinks: []SinkConfig{{Sink: fs}}, Signer: newKey(b), Logger: quietLogger(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close(context.Background())
			benchAppend(b, l)
		})
	}
}

// BenchmarkAppendRedis: the Redis stream as the shared chain (one
// compare-and-append script per event), alone and with a JSONL mirror
// (fsync=never); and four "replicas" (Logs with their own clients)
// appending in parallel to one chain, contending for the head.
func BenchmarkAppendRedis(b *testing.B) {
	c := redisClient(b)
	b.Run("chain only", func(b *testing.B) {
		c.FlushAll(context.Background())
		l, _ := newRedisLog(b, c, newKey(b), nil)
		benchAppend(b, l)
	})
	b.Run("chain+file", func(b *testing.B) {
		c.FlushAll(context.Background())
		fs, err := NewFileSink(FileConfig{Path: filepath.Join(b.TempDir(), "audit.jsonl"), Sync: SyncNever})
		if err != nil {
			b.Fatal(err)
		}
		l, _ := newRedisLog(b, c, newKey(b), func(cfg *Config, _ *RedisConfig) { cfg.Sinks = []SinkConfig{{Sink: fs}} })
		benchAppend(b, l)
	})
	b.Run("4 replicas", func(b *testing.B) {
		c.FlushAll(context.Background())
		key := newKey(b)
		logs := make(chan *Log, 4)
		for range 4 {
			rc := goredis.NewClient(&goredis.Options{Addr: c.Options().Addr, ContextTimeoutEnabled: true})
			b.Cleanup(func() { rc.Close() })
			l, _ := newRedisLog(b, rc, key, nil)
			logs <- l
		}
		b.ReportAllocs()
		b.SetParallelism(2) // 2 x GOMAXPROCS goroutines share the 4 Logs
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			l := <-logs
			logs <- l
			for i := 0; pb.Next(); i++ {
				if _, err := l.Append(context.Background(), benchEvent(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkVerify: Verify of a JSONL trail, per event.
func BenchmarkVerify(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	fs, err := NewFileSink(FileConfig{Path: path, Sync: SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	key := newKey(b)
	l, err := NewLog(context.Background(), Config{Sinks: []SinkConfig{{Sink: fs}}, Signer: key, Logger: quietLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	for i := range n {
		if _, err := l.Append(context.Background(), benchEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	l.Close(context.Background())
	b.ResetTimer()
	for b.Loop() {
		rep, err := Verify(context.Background(), JSONLFile{Path: path}, key.Public())
		if err != nil || !rep.OK() {
			b.Fatal(rep, err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
}
