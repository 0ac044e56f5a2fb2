package audit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// seqIDs makes deterministic event ids.
type seqIDs struct {
	mu sync.Mutex
	n  int
}

func (s *seqIDs) New(time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return fmt.Sprintf("ev-%04d", s.n)
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// quietLogger discards logs, or shows them with -v.
func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// memSink is a test sink that keeps the events it took and can be told to
// fail.
type memSink struct {
	name   string
	mu     sync.Mutex
	events []Event
	fail   error
	closed bool
}

func (s *memSink) Name() string { return s.name }

func (s *memSink) Write(_ context.Context, e Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.events = append(s.events, e)
	return nil
}

func (s *memSink) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func (s *memSink) setFail(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

func (s *memSink) seqs() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for _, e := range s.events {
		out = append(out, e.Seq)
	}
	return out
}

var errDown = errors.New("sink down")

// fileLog is a Log on a FileSink in a temporary directory.
type fileLog struct {
	*Log
	path  string
	key   ed25519.PrivateKey
	clock *fakeClock
	file  *FileSink
}

func newFileLog(t testing.TB, mutate func(*Config)) *fileLog {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	return openFileLog(t, path, newKey(t), newClock(), mutate)
}

func openFileLog(t testing.TB, path string, key ed25519.PrivateKey, clock *fakeClock, mutate func(*Config)) *fileLog {
	t.Helper()
	fs, err := NewFileSink(FileConfig{Path: path, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ids := &seqIDs{}
	cfg := Config{
		Sinks:  []SinkConfig{{Sink: fs}},
		Signer: key,
		Actor:  "spiffe://example.org/mayflyd",
		Now:    clock.Now,
		NewID:  ids.New,
		Logger: quietLogger(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	l, err := NewLog(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return &fileLog{Log: l, path: path, key: key, clock: clock, file: fs}
}

// appendN appends n simple events.
func appendN(t testing.TB, l *Log, n int) []Event {
	t.Helper()
	var out []Event
	for i := range n {
		e, err := l.Append(context.Background(), Event{Type: TypeDecision, Subject: "user:alice",
			Entitlement: "db-read", Outcome: "allow", Reasons: []string{"standing_grant"},
			Fields: map[string]string{"i": fmt.Sprint(i)}})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		out = append(out, e)
	}
	return out
}

// readLines returns the file's lines.
func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func writeLines(t testing.TB, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// redisClient starts a Redis for the test (testenv) and returns a client.
func redisClient(t testing.TB) *goredis.Client {
	t.Helper()
	srv := testenv.Redis(t)
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// redisLog is a Log whose chain is a RedisStreamSink.
func newRedisLog(t testing.TB, c goredis.UniversalClient, key ed25519.PrivateKey, mutate func(*Config, *RedisConfig)) (*Log, *RedisStreamSink) {
	t.Helper()
	var rc RedisConfig
	cfg := Config{Signer: key, Actor: "spiffe://example.org/mayflyd", Logger: quietLogger(t)}
	if mutate != nil {
		mutate(&cfg, &rc)
	}
	rs, err := NewRedisStreamSink(c, rc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Chain = rs
	l, err := NewLog(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l, rs
}

// rewriteStream replaces the stream's entries with raw JSON events, in
// order, with ids 1-0, 2-0, ... (what an attacker with Redis access can
// do), keeping the head key.
func rewriteStream(t testing.TB, c goredis.UniversalClient, rs *RedisStreamSink, raws []string) {
	t.Helper()
	ctx := context.Background()
	if err := c.Del(ctx, rs.StreamKey()).Err(); err != nil {
		t.Fatal(err)
	}
	for i, raw := range raws {
		if err := c.XAdd(ctx, &goredis.XAddArgs{Stream: rs.StreamKey(), ID: fmt.Sprintf("%d-0", i+1),
			Values: []any{"e", raw}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// streamRaws returns the JSON of every stream entry.
func streamRaws(t testing.TB, c goredis.UniversalClient, rs *RedisStreamSink) []string {
	t.Helper()
	msgs, err := c.XRange(context.Background(), rs.StreamKey(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, m.Values["e"].(string))
	}
	return out
}

// mustVerify verifies and fails the test on a read error.
func mustVerify(t testing.TB, r Reader, pubs ...crypto.PublicKey) Report {
	t.Helper()
	rep, err := Verify(context.Background(), r, pubs...)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func findSecret(b []byte, secrets []string) string {
	for _, s := range secrets {
		if s != "" && bytes.Contains(b, []byte(s)) {
			return s
		}
	}
	return ""
}

// xaddArgs is an XADD of raw field/value pairs with an explicit id.
func xaddArgs(rs *RedisStreamSink, id string, kv ...any) *goredis.XAddArgs {
	return &goredis.XAddArgs{Stream: rs.StreamKey(), ID: id, Values: kv}
}
