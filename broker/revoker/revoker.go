package revoker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Defaults for the zero values of Config.
const (
	DefaultBatch       = 256
	DefaultConcurrency = 16
	DefaultHold        = 30 * time.Second
	DefaultMaxAttempts = 10
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = 5 * time.Minute
	DefaultMaxIdle     = time.Second
	// DefaultBusyBatch and DefaultBusyConcurrency are Batch and
	// Concurrency while Config.Busy says issuance is being served.
	DefaultBusyBatch       = 32
	DefaultBusyConcurrency = 2
	// DefaultUnavailableBackoffMax caps retries while a backend is down.
	DefaultUnavailableBackoffMax = 15 * time.Second
)

const (
	// storeBackoffMin and storeBackoffMax bound the pause after a store
	// error. The cap is short so that leases that fell due while the
	// store was down are revoked within a second or so of its return.
	storeBackoffMin = 200 * time.Millisecond
	storeBackoffMax = time.Second
	// minPoll is the shortest pause when the store says a lease is due but
	// Claim returned none (a claim deadline on the edge), so the loop does
	// not spin.
	minPoll = 10 * time.Millisecond
	// maxErrLen caps the error text stored in a lease.
	maxErrLen = 1024
)

// Config configures a Revoker. Store and Issuers are required; every other
// zero value means its default. The callbacks run on the goroutines that
// revoke, several at a time: they must be safe for concurrent use and
// should not block for long.
type Config struct {
	// Store holds the leases and their due index, shared by every replica.
	Store lease.Store
	// Issuers resolves a lease's Issuer name to the backend that revokes
	// it; false when no such issuer is configured.
	Issuers func(name string) (issuer.Issuer, bool)
	// Now is the clock (default time.Now). Nothing in the revoker reads
	// the time any other way.
	Now func() time.Time
	// Logger is the base logger (default slog.Default()); the revoker adds
	// component=revoker.
	Logger *slog.Logger
	// Batch is the most leases one Claim takes (default 256).
	Batch int
	// Concurrency is the most issuer Revoke calls in flight (default 16).
	Concurrency int
	// Hold is how long a claim lasts (default 30s). A Revoke call gets a
	// context deadline no later than three quarters of the way through the
	// claim, leaving time to record the outcome before the claim lapses.
	Hold time.Duration
	// MaxAttempts is how many failed Revoke calls make a lease irrevocable
	// (default 10). Only failures where the backend answered count: one
	// that was unreachable (issuer.ErrUnavailable) is retried for as long
	// as it stays down, never given up.
	MaxAttempts int
	// BackoffBase and BackoffMax bound the jittered exponential delay
	// before a failed revocation is retried: attempt n waits between half
	// and all of min(BackoffBase*2^(n-1), BackoffMax). Defaults 1s and 5m.
	BackoffBase, BackoffMax time.Duration
	// UnavailableBackoffMax caps the delay instead while the backend is
	// unreachable, so that revocation resumes soon after it is back
	// (default 15s, never above BackoffMax).
	UnavailableBackoffMax time.Duration
	// MaxIdle is the longest sleep between polls even with nothing due,
	// since other replicas add leases too (default 1s).
	MaxIdle time.Duration
	// Busy, if set, says whether the broker is serving issuance right
	// now. While it is, the revoker claims at most BusyBatch leases at a
	// time and keeps at most BusyConcurrency revocations in flight, so that
	// a burst of expiries leaves the CPU and the store to the callers
	// waiting for credentials; idle, it goes at Batch and Concurrency. A
	// credential's own expiry does not wait for the revoker (a JWT's exp,
	// a Vault token's TTL), only the record of its end and introspection
	// do, and the revoker never stops: it slows down.
	Busy func() bool
	// BusyBatch and BusyConcurrency bound the revoker while Busy is true
	// (defaults 32 and 2, never above Batch and Concurrency).
	BusyBatch, BusyConcurrency int
	// OnRevoked is called after a revocation is recorded, with the lease as
	// recorded and the lag RevokedAt - EndDue(); for metrics and audit.
	OnRevoked func(l *lease.Lease, lag time.Duration)
	// OnRetry is called after a failed revocation is recorded for a retry:
	// l is the claimed lease with Attempts, LastError and DueAt (the retry
	// time) as recorded; err is the issuer's error.
	OnRetry func(l *lease.Lease, err error)
	// OnIrrevocable is called after a lease is recorded irrevocable, with
	// the lease as recorded and the last error.
	OnIrrevocable func(l *lease.Lease, err error)
}

// Stats counts what a Revoker did since it was created.
type Stats struct {
	// Claimed counts leases claimed.
	Claimed int64
	// Revoked counts leases recorded revoked.
	Revoked int64
	// Retried counts failed revocations recorded for a retry.
	Retried int64
	// Irrevocable counts leases recorded irrevocable.
	Irrevocable int64
	// Fenced counts outcomes the store refused because another claim
	// superseded this one (the lease is another replica's now).
	Fenced int64
	// Abandoned counts claims left to lapse without an outcome: too close
	// to their deadline to start, or cut short by shutdown.
	Abandoned int64
	// StoreErrors counts failed store calls.
	StoreErrors int64
}

// Revoker claims due leases and revokes them. Create it with New.
type Revoker struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{}
	// sem bounds issuer Revoke calls across Run and RunOnce; busySem
	// bounds them further while Config.Busy is true.
	sem, busySem chan struct{}

	// Test hooks.
	storeMin, storeMax time.Duration
	randN              func(n int64) int64

	claimed, revoked, retried, irrevocable, fenced, abandoned, storeErrors atomic.Int64
}

// New validates cfg, fills in defaults and returns a Revoker. The error
// names the missing or bad field.
func New(cfg Config) (*Revoker, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("revoker: Config.Store is required")
	case cfg.Issuers == nil:
		return nil, errors.New("revoker: Config.Issuers is required")
	}
	for _, f := range []struct {
		name string
		neg  bool
	}{
		{"Batch", cfg.Batch < 0},
		{"Concurrency", cfg.Concurrency < 0},
		{"Hold", cfg.Hold < 0},
		{"MaxAttempts", cfg.MaxAttempts < 0},
		{"BackoffBase", cfg.BackoffBase < 0},
		{"BackoffMax", cfg.BackoffMax < 0},
		{"MaxIdle", cfg.MaxIdle < 0},
		{"BusyBatch", cfg.BusyBatch < 0},
		{"BusyConcurrency", cfg.BusyConcurrency < 0},
		{"UnavailableBackoffMax", cfg.UnavailableBackoffMax < 0},
	} {
		if f.neg {
			return nil, fmt.Errorf("revoker: Config.%s must not be negative", f.name)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Batch = or(cfg.Batch, DefaultBatch)
	cfg.Concurrency = or(cfg.Concurrency, DefaultConcurrency)
	cfg.Hold = or(cfg.Hold, DefaultHold)
	cfg.MaxAttempts = or(cfg.MaxAttempts, DefaultMaxAttempts)
	cfg.BackoffBase = or(cfg.BackoffBase, DefaultBackoffBase)
	cfg.BackoffMax = or(cfg.BackoffMax, DefaultBackoffMax)
	cfg.MaxIdle = or(cfg.MaxIdle, DefaultMaxIdle)
	cfg.BusyBatch = min(or(cfg.BusyBatch, DefaultBusyBatch), cfg.Batch)
	cfg.BusyConcurrency = min(or(cfg.BusyConcurrency, DefaultBusyConcurrency), cfg.Concurrency)
	cfg.UnavailableBackoffMax = min(or(cfg.UnavailableBackoffMax, DefaultUnavailableBackoffMax), cfg.BackoffMax)
	if cfg.BackoffBase > cfg.BackoffMax {
		return nil, fmt.Errorf("revoker: Config.BackoffBase (%s) exceeds Config.BackoffMax (%s)", cfg.BackoffBase, cfg.BackoffMax)
	}
	return &Revoker{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "revoker"),
		wake:     make(chan struct{}, 1),
		sem:      make(chan struct{}, cfg.Concurrency),
		busySem:  make(chan struct{}, cfg.BusyConcurrency),
		storeMin: storeBackoffMin,
		storeMax: storeBackoffMax,
		randN:    rand.Int64N,
	}, nil
}

func or[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Wake tells a sleeping Run that a lease became due earlier than it
// planned (an explicit revoke, a kill switch), so it claims at once. It
// never blocks; wakes while Run is busy collapse into one.
func (r *Revoker) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters so far.
func (r *Revoker) Stats() Stats {
	return Stats{
		Claimed:     r.claimed.Load(),
		Revoked:     r.revoked.Load(),
		Retried:     r.retried.Load(),
		Irrevocable: r.irrevocable.Load(),
		Fenced:      r.fenced.Load(),
		Abandoned:   r.abandoned.Load(),
		StoreErrors: r.storeErrors.Load(),
	}
}

// Run revokes due leases until ctx ends, then waits for the revocations in
// flight (their issuer calls see ctx canceled) and returns nil. A store
// error is logged and retried after a pause; it never ends Run.
func (r *Revoker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	r.log.Info("revoker started", "batch", r.cfg.Batch, "concurrency", r.cfg.Concurrency,
		"hold", r.cfg.Hold, "max_attempts", r.cfg.MaxAttempts)
	defer r.log.Info("revoker stopped")

	var pause time.Duration // after a store error
	storeErr := func(op string, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		pause = min(max(2*pause, r.storeMin), r.storeMax)
		r.log.Error("lease store failed", "op", op, "error", err, "retry_in", pause)
		return r.sleep(ctx, pause, nil)
	}
	for ctx.Err() == nil {
		n, full, err := r.pass(ctx, &wg, nil)
		if err != nil {
			if !storeErr("claim", err) {
				break
			}
			continue
		}
		if full {
			pause = 0
			continue // more may be due
		}
		next, ok, err := r.cfg.Store.NextDue(ctx)
		if err != nil {
			r.storeErrors.Add(1)
			if !storeErr("next_due", err) {
				break
			}
			continue
		}
		pause = 0
		d := r.cfg.MaxIdle
		if ok {
			d = min(d, next.Sub(r.cfg.Now()))
		}
		if d <= 0 && n == 0 {
			d = min(r.cfg.MaxIdle, minPoll)
		}
		if !r.sleep(ctx, d, r.wake) {
			break
		}
	}
	return nil
}

// RunOnce claims one batch of due leases, revokes them and records the
// outcomes, and returns how many it claimed. The error joins the store
// errors met on the way; outcomes refused with ErrFenced are not errors.
func (r *Revoker) RunOnce(ctx context.Context) (int, error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	n, _, err := r.pass(ctx, &wg, func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	wg.Wait()
	return n, errors.Join(append([]error{err}, errs...)...)
}

// pass claims one batch and starts a revocation for each claim, at most
// Concurrency at a time (BusyConcurrency while Busy); it returns once all
// have started, with the number claimed and whether the batch was full.
// report, if not nil, receives the store errors of the revocations.
func (r *Revoker) pass(ctx context.Context, wg *sync.WaitGroup, report func(error)) (int, bool, error) {
	busy := r.cfg.Busy != nil && r.cfg.Busy()
	batch := r.cfg.Batch
	if busy {
		batch = r.cfg.BusyBatch
	}
	claims, err := r.cfg.Store.Claim(ctx, r.cfg.Now(), batch, r.cfg.Hold)
	if err != nil {
		r.storeErrors.Add(1)
		return 0, false, fmt.Errorf("revoker: claim: %w", err)
	}
	r.claimed.Add(int64(len(claims)))
	for i, c := range claims {
		release, ok := r.slot(ctx, busy)
		if ok && ctx.Err() != nil {
			release()
			ok = false
		}
		if !ok {
			// Shutting down: the rest lapse back to due at their deadline.
			r.abandoned.Add(int64(len(claims) - i))
			return len(claims), false, nil
		}
		wg.Go(func() {
			defer release()
			if err := r.revoke(ctx, c); err != nil && report != nil {
				report(err)
			}
		})
	}
	return len(claims), len(claims) == batch, nil
}

// slot takes a revocation slot, and while busy a slot of busySem too,
// unless ctx ends first; release gives back what it took.
func (r *Revoker) slot(ctx context.Context, busy bool) (release func(), ok bool) {
	if !acquire(ctx, r.sem) {
		return nil, false
	}
	if !busy {
		return func() { <-r.sem }, true
	}
	if !acquire(ctx, r.busySem) {
		<-r.sem
		return nil, false
	}
	return func() { <-r.busySem; <-r.sem }, true
}

// acquire takes a slot of sem, unless ctx ends first.
func acquire(ctx context.Context, sem chan struct{}) bool {
	if ctx.Err() != nil {
		return false
	}
	select {
	case sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// revoke ends the credential of one claimed lease and records the outcome.
// It returns only store errors.
func (r *Revoker) revoke(ctx context.Context, c lease.Claim) error {
	l := c.Lease
	log := r.log.With("lease_id", l.ID, "entitlement", l.Entitlement, "issuer", l.Issuer, "fence", c.Fence)
	iss, ok := r.cfg.Issuers(l.Issuer)
	if !ok {
		// A rolling deploy or a config mistake may have left this replica
		// without the issuer: retry like any failure (another replica, or
		// this one after a fix, may revoke it), irrevocable after
		// MaxAttempts.
		err := fmt.Errorf("revoker: issuer %q is not configured on this broker", l.Issuer)
		return r.finish(ctx, c, log, r.failure(l, err), err)
	}
	// Leave a quarter of the hold to record the outcome. A claim that
	// waited too long for a free slot is left to lapse: another pass
	// claims it again with a full hold.
	timeout := c.Deadline.Sub(r.cfg.Now()) - r.cfg.Hold/4
	if timeout < r.cfg.Hold/8 {
		r.abandoned.Add(1)
		log.Warn("claim too close to its deadline to start; leaving it to lapse", "deadline", c.Deadline)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := callRevoke(cctx, iss, l.Clone(), log)
	cancel()
	if err != nil && ctx.Err() != nil {
		// Shutting down: the failure may be ours. The claim lapses and
		// another replica tries again.
		r.abandoned.Add(1)
		log.Info("revocation cut short by shutdown; the claim will lapse", "error", err)
		return nil
	}
	if err == nil {
		return r.finish(ctx, c, log, lease.Outcome{At: r.cfg.Now(), Revoked: true}, nil)
	}
	return r.finish(ctx, c, log, r.failure(l, err), err)
}

// failure is the outcome of a failed attempt: retry with backoff, or
// irrevocable once MaxAttempts is reached. A backend that could not be
// reached is retried until it is back, at most UnavailableBackoffMax
// apart: its credentials' native expiry bounds them meanwhile, and giving
// up would leave them to it.
func (r *Revoker) failure(l *lease.Lease, err error) lease.Outcome {
	now := r.cfg.Now()
	if errors.Is(err, issuer.ErrUnavailable) {
		return lease.Outcome{At: now, RetryAt: now.Add(r.backoffUpTo(l.Attempts+1, r.cfg.UnavailableBackoffMax)), Err: errText(err)}
	}
	if l.Attempts+1 >= r.cfg.MaxAttempts {
		return lease.Outcome{At: now, Irrevocable: true, Err: errText(err)}
	}
	return lease.Outcome{At: now, RetryAt: now.Add(r.backoff(l.Attempts + 1)), Err: errText(err)}
}

// callRevoke calls the issuer, turning a panic into an error so one bad
// backend cannot take the broker down.
func callRevoke(ctx context.Context, iss issuer.Issuer, l *lease.Lease, log *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			// The panic value is not logged: it might hold anything.
			log.Error("issuer panicked in Revoke", "stack", string(debug.Stack()))
			err = fmt.Errorf("revoker: issuer %q panicked in Revoke", l.Issuer)
		}
	}()
	return iss.Revoke(ctx, l)
}

// finish records out. The store call outlives ctx (shutdown), briefly, so a
// revocation that happened is not forgotten.
func (r *Revoker) finish(ctx context.Context, c lease.Claim, log *slog.Logger, out lease.Outcome, cause error) error {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(r.cfg.Hold/4, time.Second))
	defer cancel()
	err := r.cfg.Store.Finish(fctx, c, out)
	switch {
	case errors.Is(err, lease.ErrFenced):
		r.fenced.Add(1)
		log.Info("revocation outcome superseded: another claim holds the lease", "revoked", out.Revoked)
		return nil
	case err != nil:
		r.storeErrors.Add(1)
		log.Error("recording revocation outcome failed; the claim will lapse", "error", err)
		return fmt.Errorf("revoker: finish %s: %w", c.Lease.ID, err)
	}
	l := c.Lease.Clone()
	switch {
	case out.Revoked:
		r.revoked.Add(1)
		l.State = lease.StateRevoked
		l.RevokedAt = out.At
		lag := out.At.Sub(l.EndDue())
		log.Debug("revoked", "reason", l.RevokeReason, "attempts", l.Attempts, "lag", lag)
		if r.cfg.OnRevoked != nil {
			r.cfg.OnRevoked(l, lag)
		}
	case out.Irrevocable:
		r.irrevocable.Add(1)
		l.State = lease.StateIrrevocable
		l.RevokedAt = out.At
		l.Attempts++
		l.LastError = out.Err
		log.Error("lease irrevocable", "reason", l.RevokeReason, "attempts", l.Attempts, "error", out.Err)
		if r.cfg.OnIrrevocable != nil {
			r.cfg.OnIrrevocable(l, cause)
		}
	default:
		r.retried.Add(1)
		l.Attempts++
		l.LastError = out.Err
		l.DueAt = out.RetryAt
		log.Warn("revocation failed; will retry", "attempts", l.Attempts, "retry_at", out.RetryAt, "error", out.Err)
		if r.cfg.OnRetry != nil {
			r.cfg.OnRetry(l, cause)
		}
		r.Wake() // the retry may be due before Run planned to look
	}
	return nil
}

// backoff is the delay before retry n (n >= 1): a random duration between
// half and all of min(BackoffBase*2^(n-1), BackoffMax).
func (r *Revoker) backoff(n int) time.Duration { return r.backoffUpTo(n, r.cfg.BackoffMax) }

// backoffUpTo is backoff capped at most instead of BackoffMax.
func (r *Revoker) backoffUpTo(n int, most time.Duration) time.Duration {
	d := r.cfg.BackoffBase
	for i := 1; i < n && d < most; i++ {
		d *= 2
	}
	d = min(d, most)
	half := d / 2
	return half + time.Duration(r.randN(int64(d-half)+1))
}

// sleep waits for d, ctx or wake (nil: not wakeable) and reports whether
// ctx is still live.
func (r *Revoker) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	}
	return true
}

// errText is the error as stored in the lease: capped, valid UTF-8.
func errText(err error) string {
	s := err.Error()
	if len(s) > maxErrLen {
		s = strings.ToValidUTF8(s[:maxErrLen], "")
	}
	return s
}
