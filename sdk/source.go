package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrSourceClosed is returned by CredentialSource methods called after Close.
var ErrSourceClosed = errors.New("sdk: credential source is closed")

// CredentialSource holds a credential for one entitlement and keeps it valid:
// it renews the lease before it expires and, when the lease cannot be
// renewed any further, issues a new credential and revokes the old lease.
// It is shaped like go-spiffe's workloadapi.X509Source: read the credential
// with Current or Get, and learn about changes from Updated. It is safe for
// concurrent use. Close it to stop renewing and revoke the lease.
//
// The renewal policy follows Vault's lifetime watcher:
//
//   - The lease is renewed when about two thirds of its remaining lifetime
//     has passed, with ±10% jitter so that many workloads do not renew in
//     step. If the broker returns a new credential value with the renewal,
//     the source switches to it.
//   - A lease that is not renewable, whose renewal fails with
//     codes.FailedPrecondition or codes.NotFound (revoked, expired, at its
//     hard end), or whose hard end is less than one TTL away when it is due
//     for renewal (a renewal could not extend it by a full TTL, and would
//     leave less time to replace it later than there is now), is replaced:
//     the source issues a new credential under a new lease while the current
//     one is still valid, switches to it, then revokes the old lease. The TTL
//     is the one asked for with WithTTL, or else the one the broker granted
//     at issuance.
//   - Transient failures (codes.Unavailable, codes.DeadlineExceeded, …) are
//     retried with jittered exponential backoff from 200ms to 30s, never
//     sleeping past the credential's expiry when there is still time to act.
//     Permanent failures (codes.PermissionDenied, codes.InvalidArgument,
//     codes.Unauthenticated) are retried slowly, from 10s to 5 minutes,
//     because a grant can come back. Every failure is sent on Errors.
//
// Expiry is judged by the local clock against the broker's timestamps, so
// hosts should keep their clocks synchronised (NTP).
type CredentialSource struct {
	client      *Client
	entitlement string
	cfg         sourceConfig
	log         *slog.Logger

	mu      sync.RWMutex
	cur     *Credential   // the latest credential, possibly expired; nil after Close
	ttl     time.Duration // a full lifetime, to judge whether renewing is worth it
	changed chan struct{} // closed and replaced whenever cur changes (for Get)
	closed  bool

	updated chan struct{} // capacity 1; see Updated
	errs    chan error    // see Errors

	cancel    context.CancelFunc
	done      chan struct{} // closed when the renewal goroutine has returned
	closeOnce sync.Once
	closeErr  error
}

// sourceConfig holds a source's settings; the unexported fields are hooks
// for tests.
type sourceConfig struct {
	request requestConfig

	clock          clock
	rand           func() float64
	transient      retryPolicy // backoff after a transient failure
	permanent      retryPolicy // backoff after a permanent failure
	attemptTimeout time.Duration
	closeTimeout   time.Duration
	errorBuffer    int
}

func defaultSourceConfig() sourceConfig {
	return sourceConfig{
		clock:          realClock{},
		rand:           rand.Float64,
		transient:      retryPolicy{base: 200 * time.Millisecond, limit: 30 * time.Second},
		permanent:      retryPolicy{base: 10 * time.Second, limit: 5 * time.Minute},
		attemptTimeout: 10 * time.Second,
		closeTimeout:   5 * time.Second,
		errorBuffer:    16,
	}
}

type sourceOption func(*sourceConfig)

func (f sourceOption) configureSource(c *sourceConfig) { f(c) }

// withSourceConfig lets tests change the unexported settings (clock,
// randomness, backoffs, timeouts).
func withSourceConfig(f func(*sourceConfig)) SourceOption { return sourceOption(f) }

// Credential issues a credential for entitlement and returns a source that
// keeps it valid until Close. It blocks until the first credential arrives;
// it retries transient failures meanwhile, and returns early when ctx ends or
// the broker answers with a permanent error such as codes.PermissionDenied
// (status.Code works on the returned error). ctx bounds only this first
// issuance, not the life of the source.
//
// RequestOptions (WithTTL, WithReason, WithTicket) apply to every issuance,
// and WithTTL to every renewal too. Close the source before the Client.
func (c *Client) Credential(ctx context.Context, entitlement string, opts ...SourceOption) (*CredentialSource, error) {
	cfg := defaultSourceConfig()
	for _, o := range opts {
		o.configureSource(&cfg)
	}
	s := &CredentialSource{
		client:      c,
		entitlement: entitlement,
		cfg:         cfg,
		log:         c.log.With("entitlement", entitlement),
		changed:     make(chan struct{}),
		updated:     make(chan struct{}, 1),
		errs:        make(chan error, max(cfg.errorBuffer, 1)),
		done:        make(chan struct{}),
	}

	// One request id for the whole first issuance, so a retry after a lost
	// response returns the lease already minted.
	requestID := newRequestID()
	var lastErr error
	for failures := 0; ; {
		cred, ttl, err := s.issueOnce(ctx, requestID)
		if err == nil {
			s.set(cred, ttl, false)
			break
		}
		if ctx.Err() != nil {
			// The attempt was cut short by ctx; the error before it says more.
			if lastErr == nil {
				lastErr = err
			}
			return nil, fmt.Errorf("sdk: first credential for %q: %w (last error: %w)", entitlement, ctx.Err(), lastErr)
		}
		lastErr = err
		if !isTransient(err) {
			return nil, err
		}
		failures++
		s.log.Warn("issuing first credential failed, retrying", "error", err)
		if !s.sleep(ctx, s.backoff(cfg.transient, failures)) {
			return nil, fmt.Errorf("sdk: first credential for %q: %w (last error: %w)", entitlement, ctx.Err(), lastErr)
		}
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(runCtx)
	return s, nil
}

// Current returns the credential to use now. It never returns an expired
// credential: when the current one has expired and no replacement has
// arrived yet (the broker has been unreachable past the expiry, or the grant
// is gone), it returns nil. Use Get to wait for a valid one instead. It also
// returns nil after Close.
//
// The returned value is shared and never modified by the source; treat it
// as read-only. A renewal installs a new value rather than changing this one.
func (s *CredentialSource) Current() *Credential {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil || !s.cfg.clock.Now().Before(s.cur.validUntil()) {
		return nil
	}
	return s.cur
}

// Get returns the current credential, waiting for a valid one if it has
// expired and no replacement has arrived yet. It returns ErrSourceClosed
// after Close, and the context's error if ctx ends first.
func (s *CredentialSource) Get(ctx context.Context) (*Credential, error) {
	for {
		s.mu.RLock()
		closed, changed := s.closed, s.changed
		s.mu.RUnlock()
		if closed {
			return nil, ErrSourceClosed
		}
		if c := s.Current(); c != nil {
			return c, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("sdk: wait for credential %q: %w", s.entitlement, ctx.Err())
		}
	}
}

// Updated returns a channel that receives a value whenever the credential
// changes: a new credential value, a new lease, or a renewal that only moved
// the expiry. The channel has a buffer of one and the source never blocks on
// it, so several changes between two reads are seen as one; read Current
// after each signal. WaitUntilUpdated receives from the same channel.
func (s *CredentialSource) Updated() <-chan struct{} { return s.updated }

// WaitUntilUpdated waits until the credential changes (see Updated). It
// returns an error wrapping ctx.Err() if ctx ends first, and ErrSourceClosed
// once the source is closed.
func (s *CredentialSource) WaitUntilUpdated(ctx context.Context) error {
	select {
	case <-s.updated:
		return nil
	case <-s.done:
		return ErrSourceClosed
	case <-ctx.Done():
		return fmt.Errorf("sdk: wait for update of %q: %w", s.entitlement, ctx.Err())
	}
}

// Errors returns a channel of renewal failures, for logging and alerting;
// the source handles them itself. Every error keeps its gRPC status
// (status.Code). The source never blocks on the channel: when it is full the
// oldest error is dropped. The channel is not closed by Close.
func (s *CredentialSource) Errors() <-chan error { return s.errs }

// Close stops renewing and revokes the current lease. It waits for the broker
// a bounded time (five seconds per call, at most two calls when it
// interrupts a lease replacement). After Close, Current returns nil and Get returns
// ErrSourceClosed. Calling Close again does nothing and returns the first
// result.
func (s *CredentialSource) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done

		s.mu.Lock()
		cur := s.cur
		s.cur = nil
		s.closed = true
		close(s.changed)
		s.mu.Unlock()

		if cur == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.closeTimeout)
		defer cancel()
		if _, err := s.client.revoke(ctx, s.client.retry, cur.Lease.ID); err != nil && !leaseGone(err) {
			s.closeErr = fmt.Errorf("sdk: close credential source: %w", err)
			return
		}
		s.log.Debug("revoked lease on close", "lease", cur.Lease)
	})
	return s.closeErr
}

// run renews and replaces the credential until ctx ends.
func (s *CredentialSource) run(ctx context.Context) {
	defer close(s.done)
	var (
		replace   bool   // the current lease must be replaced, not renewed
		requestID string // idempotency key of the replacement in progress
		transient int    // consecutive transient failures
		permanent int    // consecutive permanent failures
	)
	delay := s.renewDelay()
	for {
		if !s.sleep(ctx, delay) {
			return
		}
		cur, ttl := s.snapshot()
		if !replace && s.mustReplace(cur, ttl) {
			replace = true
		}

		var err error
		if replace {
			if requestID == "" {
				requestID = newRequestID()
			}
			if err = s.replace(ctx, cur, requestID); err == nil {
				replace, requestID = false, ""
			}
		} else if err = s.renewOnce(ctx, cur); err != nil && leaseGone(err) {
			// Revoked behind our back, expired, or at its hard end: issue a
			// new credential at once.
			s.report(err)
			s.log.Warn("lease cannot be renewed, replacing it", "lease", cur.Lease, "error", err)
			replace, delay = true, 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			transient, permanent = 0, 0
			delay = s.renewDelay()
			continue
		}

		s.report(err)
		if isTransient(err) {
			transient++
			delay = s.backoff(s.cfg.transient, transient)
			// Do not sleep through the rest of a still valid credential.
			if rest := s.remaining(); rest > 0 && delay > rest/2 {
				delay = max(rest/2, s.cfg.transient.base)
			}
			s.log.Warn("renewal failed, retrying", "error", err, "retry_in", delay)
		} else {
			permanent++
			delay = s.backoff(s.cfg.permanent, permanent)
			s.log.Error("renewal refused, retrying slowly", "error", err, "retry_in", delay)
		}
	}
}

// mustReplace says whether the current lease should be replaced by a new one
// rather than renewed.
func (s *CredentialSource) mustReplace(cur *Credential, ttl time.Duration) bool {
	switch {
	case !cur.Lease.Renewable:
		return true
	case !s.cfg.clock.Now().Before(cur.validUntil()):
		return true // already expired: renewing would fail
	case !cur.Lease.HardEnd.IsZero() && cur.Lease.HardEnd.Sub(s.cfg.clock.Now()) < ttl:
		// A renewal now would be cut short by the hard end, and would leave
		// less time to act at the next renewal point than there is now.
		return true
	}
	return false
}

// renewOnce renews the current lease and installs the result.
func (s *CredentialSource) renewOnce(ctx context.Context, cur *Credential) error {
	actx, cancel := context.WithTimeout(ctx, s.cfg.attemptTimeout)
	defer cancel()
	r, err := s.client.renew(actx, noRetry, cur.Lease.ID, s.cfg.request.ttl)
	if err != nil {
		return err
	}
	next := r.Credential
	if next == nil {
		// The credential value stays valid until the lease's new expiry.
		next = cur.clone()
		next.Lease = r.Lease
		next.ExpiresAt = r.Lease.ExpiresAt
	}
	s.mu.RLock()
	ttl := s.ttl
	s.mu.RUnlock()
	s.set(next, ttl, true)
	s.log.Debug("renewed lease", "lease", next.Lease, "new_value", r.Credential != nil)
	return nil
}

// replace issues a new credential, switches to it, and revokes the old lease.
func (s *CredentialSource) replace(ctx context.Context, old *Credential, requestID string) error {
	cred, ttl, err := s.issueOnce(ctx, requestID)
	if err != nil {
		return err
	}
	s.set(cred, ttl, true)
	s.log.Info("switched to a new lease", "lease", cred.Lease, "old_lease", old.Lease.ID)
	if old.Lease.ID == cred.Lease.ID {
		return nil
	}
	// Finish the revocation even if Close interrupts: the old lease would
	// otherwise live on until its expiry.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.closeTimeout)
	defer cancel()
	if _, err := s.client.revoke(rctx, noRetry, old.Lease.ID); err != nil && !leaseGone(err) {
		// The broker revokes it at its expiry anyway; tell the owner.
		s.report(err)
		s.log.Warn("revoking the replaced lease failed", "lease", old.Lease.ID, "error", err)
	}
	return nil
}

// issueOnce makes one IssueCredential attempt.
func (s *CredentialSource) issueOnce(ctx context.Context, requestID string) (*Credential, time.Duration, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.attemptTimeout)
	defer cancel()
	cred, ttl, err := s.client.issue(actx, noRetry, s.entitlement, s.cfg.request, requestID)
	if err != nil {
		return nil, 0, err
	}
	if ttl <= 0 {
		ttl = cred.Lease.ExpiresAt.Sub(cred.Lease.IssuedAt)
	}
	if s.cfg.request.ttl > 0 {
		ttl = s.cfg.request.ttl
	}
	return cred, ttl, nil
}

// set installs a new credential and, unless it is the first, signals Updated.
func (s *CredentialSource) set(cred *Credential, ttl time.Duration, signal bool) {
	s.mu.Lock()
	s.cur = cred
	s.ttl = ttl
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if signal {
		select {
		case s.updated <- struct{}{}:
		default:
		}
	}
}

// snapshot returns the current credential, expired or not, and its lifetime.
func (s *CredentialSource) snapshot() (*Credential, time.Duration) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur, s.ttl
}

// remaining is how long the current credential stays valid.
func (s *CredentialSource) remaining() time.Duration {
	cur, _ := s.snapshot()
	if cur == nil {
		return 0
	}
	return cur.validUntil().Sub(s.cfg.clock.Now())
}

// renewDelay is about two thirds of the remaining lifetime, ±10%.
func (s *CredentialSource) renewDelay() time.Duration {
	rest := s.remaining()
	if rest <= 0 {
		return 0
	}
	return jitter(rest*2/3, s.cfg.rand())
}

// backoff is the jittered delay before retry number n under policy p.
func (s *CredentialSource) backoff(p retryPolicy, n int) time.Duration {
	return jitter(backoff(p.base, p.limit, n), s.cfg.rand())
}

// sleep waits for d on the source's clock; false means ctx ended.
func (s *CredentialSource) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := s.cfg.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// report sends err on Errors, dropping the oldest error if the buffer is full.
func (s *CredentialSource) report(err error) {
	for {
		select {
		case s.errs <- err:
			return
		default:
		}
		select {
		case <-s.errs:
		default:
		}
	}
}

// leaseGone says the broker no longer holds the lease as active: it was
// revoked, expired, reached its hard end, or never was the caller's.
func leaseGone(err error) bool {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.NotFound:
		return true
	}
	return false
}

// isTransient says a failure may go away by itself soon.
func isTransient(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated,
		codes.FailedPrecondition, codes.NotFound, codes.Unimplemented,
		codes.AlreadyExists, codes.OutOfRange:
		return false
	}
	return true
}
