package audit

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Defaults for RedisConfig.
const (
	// DefaultRedisPrefix starts the keys when RedisConfig.Prefix is "".
	DefaultRedisPrefix = "mf"
	// DefaultRedisMaxWait bounds how long one Commit keeps trying when
	// RedisConfig.MaxWait is 0.
	DefaultRedisMaxWait = 2 * time.Second
)

const (
	// reserveAfter is how many rounds a Commit loses to other writers
	// before it reserves the next append.
	reserveAfter = 3
	// reserveTTL is how long a reservation lasts if its holder dies.
	reserveTTL = 250 * time.Millisecond
)

// redisPage is how many entries one XRANGE reads.
const redisPage = 512

// RedisConfig configures NewRedisStreamSink.
type RedisConfig struct {
	// Prefix starts both keys (default "mf"): <prefix>:{audit}:events is
	// the stream, <prefix>:{audit}:head the chain head. The {audit} hash
	// tag keeps both in one Redis Cluster slot, so one script updates them
	// atomically. Prefix must not contain '{' or '}'.
	Prefix string
	// MaxLen, if above 0, lets Log.Trim (called by Log.Run) remove the
	// oldest events once the stream holds more than MaxLen. It never
	// removes a range silently or unverified: it removes only a prefix
	// that ends just before a signed checkpoint, only after Verify accepts
	// that prefix with the Log's trusted keys, and only after appending an
	// audit.trimmed event that records the last removed seq and hash. With
	// no such checkpoint the stream keeps growing past MaxLen (logged).
	// 0 keeps every event; archive the trail elsewhere (a FileSink on an
	// archiving host, or an export) before setting it.
	MaxLen int64
	// MaxWait bounds how long one Commit keeps trying while other
	// replicas move the head or hold the reservation (default
	// DefaultRedisMaxWait); the context's deadline bounds it too.
	MaxWait time.Duration
}

// RedisStreamSink keeps the chain in a Redis Stream shared by every broker
// replica. It is a Chain (it orders events across replicas: see Commit),
// a Sink (as a plain copy of a chain ordered elsewhere) and a Reader.
//
// Stream entries have the id <seq>-0 and one field, "e", holding the
// event's JSON, so XRANGE by seq works; Verify does not rely on the ids.
// The head hash (<prefix>:{audit}:head) holds seq, hash, cp_seq and
// cp_time (unix nanoseconds) of the last event and the last checkpoint;
// <prefix>:{audit}:reserve is the short-lived reservation of a writer
// that lost too many rounds (see Commit).
type RedisStreamSink struct {
	c          goredis.UniversalClient
	cfg        RedisConfig
	stream     string
	headKey    string
	reserveKey string
	mu         sync.Mutex
	head       Head // last head this process saw
	headKnown  bool
	maxSeq     uint64 // highest head seq this process saw
}

var (
	_ Chain  = (*RedisStreamSink)(nil)
	_ Sink   = (*RedisStreamSink)(nil)
	_ Reader = (*RedisStreamSink)(nil)
)

// appendScript is the compare-and-append. Redis has no SHA-256 in Lua, so
// the replica computes the hash and the script accepts the event only if
// the head is still the one the hash was computed on.
//
// KEYS[1] head, KEYS[2] stream, KEYS[3] reservation.
// ARGV: expected seq, expected hash ("" for an empty chain), new seq, new
// hash, event JSON, "1" if a checkpoint, event time (unix ns), "1" if a
// head equal to the new event counts as done (Write's retry), the
// caller's reservation token ("" for none).
// Returns {code, seq, hash, cp_seq, cp_time}: code 1 appended, 2 already
// there (a retried write), 0 the head moved, 3 another writer holds the
// reservation (the fields are the head now).
var appendScript = goredis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'seq', 'hash', 'cp_seq', 'cp_time')
local seq, hash, cps, cpt = h[1] or '0', h[2] or '', h[3] or '0', h[4] or '0'
if ARGV[8] == '1' and seq == ARGV[3] and hash == ARGV[4] then
  return {2, seq, hash, cps, cpt}
end
local r = redis.call('GET', KEYS[3])
if r and r ~= ARGV[9] then
  return {3, seq, hash, cps, cpt}
end
if seq ~= ARGV[1] or hash ~= ARGV[2] then
  return {0, seq, hash, cps, cpt}
end
if seq == '0' and redis.call('XLEN', KEYS[2]) > 0 then
  return redis.error_reply('AUDITHEAD chain head is missing but the stream holds events')
end
redis.call('XADD', KEYS[2], ARGV[3] .. '-0', 'e', ARGV[5])
if ARGV[6] == '1' then
  cps = ARGV[3]
  cpt = ARGV[7]
end
redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'hash', ARGV[4], 'cp_seq', cps, 'cp_time', cpt)
if r then
  redis.call('DEL', KEYS[3])
end
return {1, ARGV[3], ARGV[4], cps, cpt}
`)

// releaseScript drops a reservation if the caller still holds it.
var releaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// NewRedisStreamSink returns a sink on client (a *redis.Client, a
// *redis.ClusterClient, or any UniversalClient). It does not contact Redis.
// Use a client with ContextTimeoutEnabled so that a call gives up at its
// context's deadline.
func NewRedisStreamSink(client goredis.UniversalClient, cfg RedisConfig) (*RedisStreamSink, error) {
	switch {
	case client == nil:
		return nil, errors.New("audit: nil Redis client")
	case strings.ContainsAny(cfg.Prefix, "{}"):
		return nil, fmt.Errorf("audit: RedisConfig.Prefix %q contains '{' or '}'", cfg.Prefix)
	case cfg.MaxLen < 0:
		return nil, fmt.Errorf("audit: RedisConfig.MaxLen %d is negative", cfg.MaxLen)
	case cfg.MaxWait < 0:
		return nil, fmt.Errorf("audit: RedisConfig.MaxWait %s is negative", cfg.MaxWait)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultRedisPrefix
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = DefaultRedisMaxWait
	}
	p := cfg.Prefix + ":{audit}:"
	return &RedisStreamSink{c: client, cfg: cfg, stream: p + "events", headKey: p + "head", reserveKey: p + "reserve"}, nil
}

// StreamKey is the Redis key of the stream.
func (s *RedisStreamSink) StreamKey() string { return s.stream }

// HeadKey is the Redis key of the chain head.
func (s *RedisStreamSink) HeadKey() string { return s.headKey }

// Name implements Sink.
func (s *RedisStreamSink) Name() string { return "redis:" + s.stream }

// Close implements Sink; the client belongs to the caller.
func (s *RedisStreamSink) Close() error { return nil }

// Head implements Chain: the head as Redis holds it now.
func (s *RedisStreamSink) Head(ctx context.Context) (Head, error) {
	floor := s.floor()
	h, err := s.readHead(ctx)
	if err != nil {
		return Head{}, err
	}
	if err := s.observe(h, floor); err != nil {
		return Head{}, err
	}
	return h, nil
}

// readHead reads the head key.
func (s *RedisStreamSink) readHead(ctx context.Context) (Head, error) {
	vals, err := s.c.HMGet(ctx, s.headKey, "seq", "hash", "cp_seq", "cp_time").Result()
	if err != nil {
		return Head{}, fmt.Errorf("%w: redis: %w", ErrChain, err)
	}
	strs := make([]any, len(vals))
	for i, v := range vals {
		if v == nil {
			v = ""
		}
		strs[i] = v
	}
	return parseHead(strs)
}

// parseHead reads {seq, hash, cp_seq, cp_time} as the script or HMGET
// return them.
func parseHead(v []any) (Head, error) {
	str := func(i int) string {
		switch x := v[i].(type) {
		case string:
			return x
		case int64:
			return strconv.FormatInt(x, 10)
		}
		return ""
	}
	num := func(i int) (uint64, error) {
		s := str(i)
		if s == "" {
			return 0, nil
		}
		return strconv.ParseUint(s, 10, 64)
	}
	var h Head
	var err1, err2, err3 error
	h.Seq, err1 = num(0)
	h.Hash = str(1)
	h.CheckpointSeq, err2 = num(2)
	var ns uint64
	ns, err3 = num(3)
	if err := errors.Join(err1, err2, err3); err != nil || len(v) < 4 {
		return Head{}, fmt.Errorf("%w: redis: chain head is not well formed", ErrChain)
	}
	if ns > 0 {
		h.CheckpointTime = time.Unix(0, int64(ns)).UTC()
	}
	return h, nil
}

// floor is the highest head seq this process had seen before it sends a
// request: Redis must answer with a head at least that high.
func (s *RedisStreamSink) floor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxSeq
}

// observe caches h as the head if it is the newest seen. A head below
// floor, the highest seen before the request was sent, means Redis lost
// data (a restart without persistence, a failover to a replica that was
// behind): appending would reuse seqs that other copies of the trail
// already hold, so it is refused until an operator acts. (Replies to
// concurrent requests may arrive in any order, hence the floor rather
// than the latest head.)
func (s *RedisStreamSink) observe(h Head, floor uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.Seq < floor {
		s.headKnown = false
		return fmt.Errorf("%w: redis: the chain head went back from seq %d to seq %d: Redis lost audit events; "+
			"restore %s and %s from a backup (new events would reuse their seqs)", ErrChain, floor, h.Seq, s.headKey, s.stream)
	}
	if h.Seq >= s.maxSeq {
		s.head, s.headKnown, s.maxSeq = h, true, h.Seq
	}
	return nil
}

func (s *RedisStreamSink) forget() {
	s.mu.Lock()
	s.headKnown = false
	s.mu.Unlock()
}

// Commit implements Chain with an optimistic compare-and-append: seal
// runs on the head this process last saw; the script appends only if
// Redis still has that head, and otherwise returns the current head, on
// which seal runs again. So every replica's events form one total order
// with one hash chain, and a replica appending alone needs one round trip
// per event.
//
// Under contention one writer wins each round, but nothing stops the
// same one losing round after round. A writer that has lost reserveAfter
// rounds therefore reserves the next append (SET NX with a 250 ms expiry):
// while the reservation stands, the script refuses every other writer,
// who waits a little and retries, so the reserving writer gets through
// within two rounds. Commit gives up with ErrChain after MaxWait or at
// the context's deadline. A network error leaves the outcome unknown (the
// event may be in the stream); the error then says so and wraps ErrChain.
func (s *RedisStreamSink) Commit(ctx context.Context, sealFn func(Head) (Event, error)) (Event, Head, error) {
	s.mu.Lock()
	head, known := s.head, s.headKnown
	s.mu.Unlock()
	if !known {
		var err error
		if head, err = s.Head(ctx); err != nil {
			return Event{}, Head{}, err
		}
	}
	deadline := time.Now().Add(s.cfg.MaxWait)
	var (
		token  string
		lost   int
		waited int
	)
	defer func() {
		if token != "" { // not consumed by a successful append
			releaseScript.Run(context.WithoutCancel(ctx), s.c, []string{s.reserveKey}, token)
		}
	}()
	for {
		e, err := sealFn(head)
		if err != nil {
			return Event{}, Head{}, err
		}
		code, now, err := s.cas(ctx, head, &e, false, token)
		if err != nil {
			return Event{}, Head{}, err
		}
		switch code {
		case 1, 2:
			token = ""
			return e, now, nil
		case 0:
			lost++
			if lost >= reserveAfter && token == "" {
				t := newToken()
				if ok, err := s.c.SetNX(ctx, s.reserveKey, t, reserveTTL).Result(); err == nil && ok {
					token = t
				}
			}
		case 3:
			waited++
			if err := sleepCtx(ctx, time.Duration(50+rand.IntN(200*min(waited, 5)))*time.Microsecond); err != nil {
				return Event{}, Head{}, fmt.Errorf("%w: %w", ErrChain, err)
			}
		}
		head = now
		if time.Now().After(deadline) {
			return Event{}, Head{}, fmt.Errorf("%w: other writers kept the head moving for %s", ErrChain, s.cfg.MaxWait)
		}
	}
}

// newToken returns a random reservation token.
func newToken() string {
	var b [12]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// cas runs the append script for e on top of expected, with the caller's
// reservation token if any. With retry, a head that is e already counts as
// success.
func (s *RedisStreamSink) cas(ctx context.Context, expected Head, e *Event, retry bool, token string) (int64, Head, error) {
	b, err := encodeEvent(e)
	if err != nil {
		return 0, Head{}, err
	}
	cp := "0"
	if e.Type == TypeCheckpoint {
		cp = "1"
	}
	floor := s.floor()
	res, err := appendScript.Run(ctx, s.c, []string{s.headKey, s.stream, s.reserveKey},
		strconv.FormatUint(expected.Seq, 10), expected.Hash,
		strconv.FormatUint(e.Seq, 10), e.Hash, b, cp, strconv.FormatInt(e.Time.UnixNano(), 10), boolArg(retry), token).Slice()
	if err != nil {
		s.forget()
		if strings.HasPrefix(err.Error(), "AUDITHEAD") {
			return 0, Head{}, fmt.Errorf("%w: redis: %s: restore %s before appending", ErrChain, strings.TrimPrefix(err.Error(), "AUDITHEAD "), s.headKey)
		}
		var rerr goredis.Error
		if errors.As(err, &rerr) {
			return 0, Head{}, fmt.Errorf("%w: redis refused seq %d: %w", ErrChain, e.Seq, err)
		}
		return 0, Head{}, fmt.Errorf("%w: redis: outcome of seq %d unknown: %w", ErrChain, e.Seq, err)
	}
	if len(res) != 5 {
		s.forget()
		return 0, Head{}, fmt.Errorf("%w: redis: unexpected script reply", ErrChain)
	}
	code, _ := res[0].(int64)
	h, err := parseHead(res[1:])
	if err != nil {
		s.forget()
		return 0, Head{}, err
	}
	if err := s.observe(h, floor); err != nil {
		return 0, Head{}, err
	}
	return code, h, nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Write implements Sink, for a stream that copies a chain ordered
// elsewhere (an in-process chain): it appends e only on top of the event
// before it, so the stream stays one chain. A retried write that already
// succeeded is success.
func (s *RedisStreamSink) Write(ctx context.Context, e Event) error {
	expected := Head{Seq: e.Seq - 1}
	if e.Seq > 1 {
		expected.Hash = e.Prev
	}
	code, now, err := s.cas(ctx, expected, &e, true, "")
	if err != nil {
		return err
	}
	if code == 0 || code == 3 {
		return fmt.Errorf("audit: %s: stream head is at seq %d, not %d: is another chain writing to it?", s.Name(), now.Seq, e.Seq-1)
	}
	return nil
}

// Records implements Reader: XRANGE pages in stream order. With from > 1
// it starts at entry id <from>-0.
func (s *RedisStreamSink) Records(ctx context.Context, from uint64) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		start := "-"
		if from > 1 {
			start = strconv.FormatUint(from, 10)
		}
		for {
			msgs, err := s.c.XRangeN(ctx, s.stream, start, "+", redisPage).Result()
			if err != nil {
				yield(Record{}, fmt.Errorf("audit: redis: %w", err))
				return
			}
			for _, m := range msgs {
				pos := "entry " + m.ID
				raw, ok := m.Values["e"].(string)
				if !ok || len(m.Values) != 1 {
					if !yield(Record{Pos: pos}, &MalformedError{Pos: pos, Reason: "entry does not hold exactly one field e"}) {
						return
					}
					continue
				}
				e, problem := decodeEvent([]byte(raw))
				if problem != "" {
					if !yield(Record{Pos: pos}, &MalformedError{Pos: pos, Reason: problem}) {
						return
					}
					continue
				}
				if !yield(Record{Event: e, Pos: pos}, nil) {
					return
				}
			}
			if len(msgs) < redisPage {
				return
			}
			start = "(" + msgs[len(msgs)-1].ID
		}
	}
}

// storedHead implements headReader, so Verify can tell a deleted tail.
func (s *RedisStreamSink) storedHead(ctx context.Context) (Head, bool, error) {
	h, err := s.readHead(ctx)
	return h, true, err
}

// Trim removes the oldest events of a RedisStreamSink chain beyond its
// MaxLen, under the rules written on RedisConfig.MaxLen, and returns how
// many it removed. It does nothing for other chains or without MaxLen.
// ErrNotVerified means the prefix did not verify: nothing was removed.
func (l *Log) Trim(ctx context.Context) (int64, error) {
	rs, ok := l.chain.(*RedisStreamSink)
	if !ok || rs.cfg.MaxLen <= 0 {
		return 0, nil
	}
	l.mu.Lock()
	l.lastTrim = l.cfg.Now()
	l.mu.Unlock()
	n, err := rs.c.XLen(ctx, rs.stream).Result()
	if err != nil {
		return 0, fmt.Errorf("audit: trim: redis: %w", err)
	}
	if n <= rs.cfg.MaxLen {
		return 0, nil
	}
	head, err := rs.Head(ctx)
	if err != nil {
		return 0, err
	}
	if head.Seq <= uint64(rs.cfg.MaxLen) {
		return 0, nil
	}
	// Keep at least MaxLen events: the cut is a checkpoint at or before
	// head-MaxLen+1, which stays as the new first event.
	through := head.Seq - uint64(rs.cfg.MaxLen) + 1
	rep, err := verify(ctx, rs, l.keys, verifyOptions{through: through, trimming: true})
	if err != nil {
		return 0, fmt.Errorf("audit: trim: %w", err)
	}
	if rep.Problem != nil {
		return 0, fmt.Errorf("%w: %s", ErrNotVerified, rep.Problem)
	}
	cut, cutPrev := rep.lastCP, rep.lastCPPrev
	if cut <= rep.First {
		l.log.Warn("audit stream is over MaxLen but has no signed checkpoint to trim at",
			"len", n, "max_len", rs.cfg.MaxLen, "first", rep.First)
		return 0, nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	_, _, err = l.appendLocked(ctx, func(h Head) (Event, error) {
		now := l.cfg.Now().UTC()
		return seal(Event{ID: l.cfg.NewID(now), Time: now, Type: TypeTrimmed, Actor: l.cfg.Actor,
			Fields: map[string]string{
				"from_seq":     strconv.FormatUint(rep.First, 10),
				"through_seq":  strconv.FormatUint(cut-1, 10),
				"through_hash": cutPrev,
			}}, h)
	})
	l.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("audit: trim: record the trim: %w", err)
	}
	removed, err := rs.c.XTrimMinID(ctx, rs.stream, strconv.FormatUint(cut, 10)).Result()
	if err != nil {
		return 0, fmt.Errorf("audit: trim: redis: %w", err)
	}
	l.log.Info("audit stream trimmed", "removed", removed, "from_seq", rep.First, "through_seq", cut-1)
	return removed, nil
}
