package audit

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// Defaults for the zero values of Config and SinkConfig.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = time.Minute
	DefaultBuffer             = 10000
	DefaultRetryMin           = 100 * time.Millisecond
	DefaultRetryMax           = 30 * time.Second
	DefaultTrimInterval       = 10 * time.Minute
)

// Mode says what a sink failure means for Append.
type Mode int

const (
	// Required (the zero value): Append fails when the sink does not take
	// the event, and keeps failing, without recording anything new, until
	// the sink has taken every event it missed. This is the fail-closed
	// rule: an action that must be audited is refused when it cannot be.
	Required Mode = iota
	// Buffered: a failing sink's events wait in a bounded buffer, in
	// order, and are retried with backoff (by Run, and by Append once the
	// backoff has passed) until the sink takes them. Nothing is dropped:
	// when the buffer is full, Append fails as for a required sink.
	Buffered
)

// String returns "required" or "buffered".
func (m Mode) String() string {
	switch m {
	case Required:
		return "required"
	case Buffered:
		return "buffered"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// SinkConfig is one sink of a Log.
type SinkConfig struct {
	// Sink stores the events.
	Sink Sink
	// Mode is Required (default) or Buffered.
	Mode Mode
	// Buffer is the most events a sink may owe before Append refuses
	// (Buffered only; default DefaultBuffer).
	Buffer int
}

// Config configures NewLog. Signer is required; every other zero value
// has a default.
type Config struct {
	// Chain orders the events. Nil: an in-process chain for a single
	// broker process, whose head is resumed at start from Resume. Use a
	// RedisStreamSink when replicas share one trail; it is then also the
	// first, required store of every event.
	Chain Chain
	// Resume is where an in-process chain finds its head when the process
	// restarts. Nil: the first sink that is also a Reader (a FileSink);
	// with none, the chain starts afresh at seq 1.
	Resume Reader
	// Sinks receive every event after the chain has ordered it, in order.
	Sinks []SinkConfig
	// Signer signs checkpoints (Ed25519 or ECDSA); the broker passes its
	// own key. Replicas sharing a chain should share the key, or every
	// verifier must be given all of their public keys.
	Signer crypto.Signer
	// TrustedKeys are further public keys whose checkpoints Trim accepts
	// (other replicas' keys, retired keys). Signer's own key is always
	// trusted.
	TrustedKeys []crypto.PublicKey
	// CheckpointEvery writes a checkpoint once this many events follow the
	// last one (default 1000; negative: never by count).
	CheckpointEvery int
	// CheckpointInterval: Run writes a checkpoint when events are
	// unsealed and the last checkpoint is this old (default 1m; negative:
	// never by time).
	CheckpointInterval time.Duration
	// Actor is recorded on the events the Log writes itself (checkpoints,
	// trims): the broker replica's identity.
	Actor string
	// RetryMin and RetryMax bound the jittered exponential backoff of a
	// failing buffered sink (defaults 100ms and 30s).
	RetryMin, RetryMax time.Duration
	// TrimInterval is how often Run calls Trim when the Chain is a
	// RedisStreamSink with MaxLen (default 10m).
	TrimInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// NewID makes event ids (default lease.NewID: time-ordered).
	NewID func(now time.Time) string
	// Logger is the base logger (default slog.Default()); the Log adds
	// component=audit. No event content is ever logged.
	Logger *slog.Logger
}

// Log appends events to the chain and its sinks. It is safe for
// concurrent use; appends are serialised, so the events of one process
// reach each sink in Seq order.
type Log struct {
	cfg    Config
	chain  Chain
	sinks  []*sinkState
	log    *slog.Logger
	signer crypto.Signer
	alg    string
	keyID  string
	keys   keyRing

	mu       sync.Mutex // serialises appends, checkpoints, trims, Close
	head     Head       // the head after this process's last append
	closed   bool
	appended uint64
	cps      uint64
	cpErrors uint64
	lastTrim time.Time
}

// sinkState is one sink and the events it still owes.
type sinkState struct {
	cfg      SinkConfig
	mu       sync.Mutex
	pending  []Event
	nextTry  time.Time
	failures int
	lastErr  error
	written  uint64
}

// NewLog validates cfg and, for an in-process chain, finds the head of the
// stored trail to continue it.
func NewLog(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Signer == nil {
		return nil, errors.New("audit: Config.Signer is required (checkpoints are signed)")
	}
	if cfg.CheckpointEvery == 0 {
		cfg.CheckpointEvery = DefaultCheckpointEvery
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryMin {
		return nil, fmt.Errorf("audit: Config.RetryMax %s is below RetryMin %s", cfg.RetryMax, cfg.RetryMin)
	}
	if cfg.TrimInterval <= 0 {
		cfg.TrimInterval = DefaultTrimInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = lease.NewID
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if _, ok := LooksLikeSecret(cfg.Actor); ok || len(cfg.Actor) > MaxValueLen {
		return nil, errors.New("audit: Config.Actor is not a principal id")
	}
	alg, err := signerAlg(cfg.Signer)
	if err != nil {
		return nil, err
	}
	keyID, err := KeyID(cfg.Signer.Public())
	if err != nil {
		return nil, err
	}
	keys, err := newKeyRing(append([]crypto.PublicKey{cfg.Signer.Public()}, cfg.TrustedKeys...))
	if err != nil {
		return nil, err
	}
	l := &Log{
		cfg: cfg, chain: cfg.Chain, signer: cfg.Signer, alg: alg, keyID: keyID, keys: keys,
		log: cfg.Logger.With("component", "audit"),
	}
	seen := map[Sink]bool{}
	for i, sc := range cfg.Sinks {
		switch {
		case sc.Sink == nil:
			return nil, fmt.Errorf("audit: Config.Sinks[%d].Sink is nil", i)
		case sc.Mode != Required && sc.Mode != Buffered:
			return nil, fmt.Errorf("audit: Config.Sinks[%d].Mode %d is not Required or Buffered", i, sc.Mode)
		case sc.Buffer < 0:
			return nil, fmt.Errorf("audit: Config.Sinks[%d].Buffer %d is negative", i, sc.Buffer)
		case seen[sc.Sink]:
			return nil, fmt.Errorf("audit: Config.Sinks[%d]: %s is listed twice", i, sc.Sink.Name())
		case cfg.Chain != nil && isSameSink(cfg.Chain, sc.Sink):
			return nil, fmt.Errorf("audit: Config.Sinks[%d]: %s is already the Chain", i, sc.Sink.Name())
		}
		seen[sc.Sink] = true
		if sc.Buffer == 0 {
			sc.Buffer = DefaultBuffer
		}
		l.sinks = append(l.sinks, &sinkState{cfg: sc})
	}
	if l.chain == nil {
		resume := cfg.Resume
		if resume == nil {
			for _, sc := range cfg.Sinks {
				if r, ok := sc.Sink.(Reader); ok {
					resume = r
					break
				}
			}
		}
		var head Head
		if resume != nil {
			if head, err = resumeHead(ctx, resume); err != nil {
				return nil, err
			}
		}
		l.chain = &localChain{head: head}
		l.head = head
	} else if l.head, err = l.chain.Head(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// isSameSink reports whether the chain is also listed as a sink.
func isSameSink(c Chain, s Sink) bool {
	cs, ok := c.(Sink)
	return ok && cs == s
}

// PublicKey is the key that verifies this Log's checkpoints.
func (l *Log) PublicKey() crypto.PublicKey { return l.signer.Public() }

// Append records e: it validates it (the secret guard included), fills in
// ID and Time when zero, has the chain assign Seq, Prev and Hash, and
// writes it to every sink. It returns the event as recorded.
//
// Fail-closed contract: a nil error means the chain and every Required
// sink hold the event (and every Buffered sink holds it or has it queued).
// An error means the broker must not perform the action the event
// records. If the chain has ordered the event but a Required sink did not
// take it, the returned Event has its Seq and the error wraps ErrSinkDown;
// the sink gets the event before any later one, and until it does, every
// Append fails with ErrSinkDown before anything new is recorded. Append
// also fails, before recording, when a Buffered sink's buffer is full
// (ErrBufferFull), when the chain cannot order the event (ErrChain), and
// for an invalid event (ErrInvalid, ErrSecret).
//
// A checkpoint is written after the event when CheckpointEvery events
// have followed the last one; a checkpoint that fails is logged and tried
// again later, and does not fail the Append.
func (l *Log) Append(ctx context.Context, e Event) (Event, error) {
	e = e.clone()
	if err := validateEvent(&e); err != nil {
		return Event{}, err
	}
	if e.Time.IsZero() {
		e.Time = l.cfg.Now()
	}
	e.Time = e.Time.UTC()
	if e.ID == "" {
		e.ID = l.cfg.NewID(e.Time)
	}
	probe := e
	probe.Prev = GenesisHash
	if n := len(Canonical(&probe)); n > MaxEventSize {
		return Event{}, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrInvalid, n, MaxEventSize)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Event{}, ErrClosed
	}
	ev, head, err := l.appendLocked(ctx, func(h Head) (Event, error) { return seal(e, h) })
	if err != nil {
		return ev, err
	}
	l.appended++
	if n := l.cfg.CheckpointEvery; n > 0 && head.Seq-head.CheckpointSeq >= uint64(n) {
		l.checkpointLocked(ctx, func(h Head) bool { return h.Seq-h.CheckpointSeq >= uint64(n) })
	}
	return ev, nil
}

// seal places e on top of h.
func seal(e Event, h Head) (Event, error) {
	e.Seq, e.Prev, e.Hash = h.Seq+1, h.prevHash(), ""
	hash, err := ComputeHash(&e)
	if err != nil {
		return Event{}, err
	}
	e.Hash = hash
	return e, nil
}

// appendLocked checks the sinks can take an event, has the chain order
// it, and writes it to the sinks. With l.mu held.
func (l *Log) appendLocked(ctx context.Context, sealer func(Head) (Event, error)) (Event, Head, error) {
	if err := l.precheckLocked(ctx); err != nil {
		return Event{}, Head{}, err
	}
	ev, head, err := l.chain.Commit(ctx, sealer)
	if err != nil {
		return Event{}, Head{}, err
	}
	l.head = head
	if err := l.fanoutLocked(ctx, ev); err != nil {
		return ev.clone(), head, err
	}
	return ev.clone(), head, nil
}

// precheckLocked refuses an append while a required sink owes events or a
// buffered sink's buffer is full, after one more try to deliver them.
func (l *Log) precheckLocked(ctx context.Context) error {
	now := l.cfg.Now()
	for _, s := range l.sinks {
		s.mu.Lock()
		err := func() error {
			switch s.cfg.Mode {
			case Required:
				if len(s.pending) > 0 {
					if err := l.flushSinkLocked(ctx, s, now); err != nil {
						return fmt.Errorf("%w: %s still owes %d event(s) from seq %d: %w",
							ErrSinkDown, s.cfg.Sink.Name(), len(s.pending), s.pending[0].Seq, err)
					}
				}
			case Buffered:
				if len(s.pending) >= s.cfg.Buffer {
					if !now.Before(s.nextTry) {
						l.flushSinkLocked(ctx, s, now)
					}
					if len(s.pending) >= s.cfg.Buffer {
						return fmt.Errorf("%w: %s owes %d events (buffer %d): %w",
							ErrBufferFull, s.cfg.Sink.Name(), len(s.pending), s.cfg.Buffer, s.lastErr)
					}
				}
			}
			return nil
		}()
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// fanoutLocked queues ev on every sink and delivers what can be delivered.
func (l *Log) fanoutLocked(ctx context.Context, ev Event) error {
	now := l.cfg.Now()
	var errs []error
	for _, s := range l.sinks {
		s.mu.Lock()
		s.pending = append(s.pending, ev.clone())
		switch s.cfg.Mode {
		case Required:
			if err := l.flushSinkLocked(ctx, s, now); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s did not take seq %d: %w", ErrSinkDown, s.cfg.Sink.Name(), ev.Seq, err))
			}
		case Buffered:
			if len(s.pending) == 1 || !now.Before(s.nextTry) {
				l.flushSinkLocked(ctx, s, now)
			}
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// flushSinkLocked writes s's pending events in order until one fails.
// With s.mu held.
func (l *Log) flushSinkLocked(ctx context.Context, s *sinkState, now time.Time) error {
	for len(s.pending) > 0 {
		if err := s.cfg.Sink.Write(ctx, s.pending[0]); err != nil {
			s.failures++
			s.lastErr = err
			s.nextTry = now.Add(l.backoff(s.failures))
			if s.failures == 1 {
				level := slog.LevelWarn
				if s.cfg.Mode == Required {
					level = slog.LevelError
				}
				l.log.Log(ctx, level, "audit sink failing", "sink", s.cfg.Sink.Name(), "mode", s.cfg.Mode.String(),
					"seq", s.pending[0].Seq, "owed", len(s.pending), "error", err)
			}
			return err
		}
		s.pending[0] = Event{}
		s.pending = s.pending[1:]
		s.written++
	}
	s.pending = nil
	if s.failures > 0 {
		l.log.Info("audit sink recovered", "sink", s.cfg.Sink.Name(), "failures", s.failures)
		s.failures, s.lastErr, s.nextTry = 0, nil, time.Time{}
	}
	return nil
}

// backoff is the jittered exponential delay after n failures.
func (l *Log) backoff(n int) time.Duration {
	d := l.cfg.RetryMin << min(n-1, 30)
	if d <= 0 || d > l.cfg.RetryMax {
		d = l.cfg.RetryMax
	}
	return d/2 + rand.N(d/2+1)
}

// errNotDue: the checkpoint is not needed (already written by another
// replica, or nothing to seal).
var errNotDue = errors.New("audit: checkpoint not due")

// checkpointLocked writes a checkpoint if due(head) still holds at the
// head the chain sees. Failures are logged and counted. With l.mu held.
func (l *Log) checkpointLocked(ctx context.Context, due func(Head) bool) (Event, error) {
	ev, _, err := l.appendLocked(ctx, func(h Head) (Event, error) {
		if h.Seq == 0 || h.Seq == h.CheckpointSeq || !due(h) {
			return Event{}, errNotDue
		}
		cp, err := signCheckpoint(l.signer, l.alg, l.keyID, h.Seq, h.Hash)
		if err != nil {
			return Event{}, err
		}
		now := l.cfg.Now().UTC()
		e := Event{Seq: h.Seq + 1, ID: l.cfg.NewID(now), Time: now, Type: TypeCheckpoint,
			Actor: l.cfg.Actor, Checkpoint: cp, Prev: h.Hash}
		if e.Hash, err = ComputeHash(&e); err != nil {
			return Event{}, err
		}
		return e, nil
	})
	switch {
	case errors.Is(err, errNotDue):
		return Event{}, nil
	case err != nil:
		l.cpErrors++
		l.log.Error("audit checkpoint failed; will try again", "error", err)
		return ev, err
	}
	l.cps++
	return ev, nil
}

// Checkpoint writes a checkpoint now if any event follows the last one,
// and returns it (a zero Event when there was nothing to seal). Close
// calls it, so that a graceful shutdown leaves the trail sealed.
func (l *Log) Checkpoint(ctx context.Context) (Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Event{}, ErrClosed
	}
	return l.checkpointLocked(ctx, func(Head) bool { return true })
}

// Flush tries once to deliver every event a sink owes, and returns the
// errors of the sinks that still owe some.
func (l *Log) Flush(ctx context.Context) error {
	now := l.cfg.Now()
	var errs []error
	for _, s := range l.sinks {
		s.mu.Lock()
		if len(s.pending) > 0 {
			if err := l.flushSinkLocked(ctx, s, now); err != nil {
				errs = append(errs, fmt.Errorf("audit: %s owes %d event(s): %w", s.cfg.Sink.Name(), len(s.pending), err))
			}
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Run does the Log's background work until ctx ends, and returns nil
// then: it retries failing buffered sinks once their backoff has passed,
// writes a checkpoint when events are unsealed and the last checkpoint is
// CheckpointInterval old, and calls Trim every TrimInterval when the
// chain is a RedisStreamSink with MaxLen. The broker starts it from its
// composition root; Append works without it, but then nothing is retried
// or sealed while no events arrive.
func (l *Log) Run(ctx context.Context) error {
	tick := time.Second
	if iv := l.cfg.CheckpointInterval; iv > 0 {
		tick = min(tick, max(iv/4, 10*time.Millisecond))
	}
	tick = min(tick, max(l.cfg.RetryMin, 10*time.Millisecond))
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		l.retryBuffered(ctx)
		if iv := l.cfg.CheckpointInterval; iv > 0 {
			l.timedCheckpoint(ctx, iv)
		}
		if rs, ok := l.chain.(*RedisStreamSink); ok && rs.cfg.MaxLen > 0 {
			l.mu.Lock()
			due := !l.closed && l.cfg.Now().Sub(l.lastTrim) >= l.cfg.TrimInterval
			l.mu.Unlock()
			if due {
				if _, err := l.Trim(ctx); err != nil && ctx.Err() == nil {
					l.log.Error("audit trim failed", "error", err)
				}
			}
		}
	}
}

// retryBuffered delivers what failing buffered sinks owe, once their
// backoff has passed.
func (l *Log) retryBuffered(ctx context.Context) {
	now := l.cfg.Now()
	for _, s := range l.sinks {
		s.mu.Lock()
		if len(s.pending) > 0 && !now.Before(s.nextTry) {
			l.flushSinkLocked(ctx, s, now)
		}
		s.mu.Unlock()
	}
}

// timedCheckpoint writes a checkpoint if the chain has unsealed events and
// its last checkpoint is older than iv.
func (l *Log) timedCheckpoint(ctx context.Context, iv time.Duration) {
	h, err := l.chain.Head(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Error("audit chain head unavailable", "error", err)
		}
		return
	}
	due := func(h Head) bool {
		return h.Seq > h.CheckpointSeq && l.cfg.Now().Sub(h.CheckpointTime) >= iv
	}
	if !due(h) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.checkpointLocked(ctx, due)
	}
}

// closeAttempts bounds Close's delivery attempts per sink when its context
// has no deadline.
const closeAttempts = 5

// Close seals the trail with a last checkpoint, tries to deliver what the
// sinks owe until ctx ends (at most closeAttempts times per sink when ctx
// has no deadline), and closes the sinks (not the Chain). It
// returns an error naming every sink that still owes events: those events
// are in the chain but not in that sink.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	var errs []error
	if _, err := l.checkpointLocked(ctx, func(Head) bool { return true }); err != nil {
		errs = append(errs, err)
	}
	l.closed = true
	for _, s := range l.sinks {
		s.mu.Lock()
		_, deadline := ctx.Deadline()
		for attempt := 0; len(s.pending) > 0; attempt++ {
			if l.flushSinkLocked(ctx, s, l.cfg.Now()) == nil {
				break
			}
			if ctx.Err() != nil || !deadline && attempt >= closeAttempts {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(l.backoff(attempt + 1)):
			}
		}
		if n := len(s.pending); n > 0 {
			errs = append(errs, fmt.Errorf("audit: close: %s did not take %d event(s) from seq %d: %w",
				s.cfg.Sink.Name(), n, s.pending[0].Seq, s.lastErr))
		}
		if err := s.cfg.Sink.Close(); err != nil {
			errs = append(errs, err)
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of a Log, for metrics and health checks.
type Stats struct {
	// Head is the chain head after this process's last append.
	Head Head
	// Appended counts events this process appended (checkpoints apart).
	Appended uint64
	// Checkpoints counts checkpoints this process wrote, and
	// CheckpointErrors the attempts that failed.
	Checkpoints, CheckpointErrors uint64
	// Sinks are in Config order.
	Sinks []SinkStats
}

// SinkStats is one sink's state.
type SinkStats struct {
	// Name is the sink's name.
	Name string
	// Mode is required or buffered.
	Mode Mode
	// Written counts events the sink took.
	Written uint64
	// Owed counts events waiting for the sink (in order, never dropped).
	Owed int
	// Failures counts consecutive failed writes (0 when healthy).
	Failures int
	// LastError is the last failure, while failing.
	LastError error
}

// Stats returns a snapshot.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	st := Stats{Head: l.head, Appended: l.appended, Checkpoints: l.cps, CheckpointErrors: l.cpErrors}
	l.mu.Unlock()
	for _, s := range l.sinks {
		s.mu.Lock()
		st.Sinks = append(st.Sinks, SinkStats{Name: s.cfg.Sink.Name(), Mode: s.cfg.Mode, Written: s.written,
			Owed: len(s.pending), Failures: s.failures, LastError: s.lastErr})
		s.mu.Unlock()
	}
	return st
}
