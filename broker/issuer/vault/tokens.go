package vault

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// tokenQueueSize bounds the per-lease tokens waiting to be revoked
	// after their secrets were (an accessor each, a few dozen bytes).
	tokenQueueSize = 8192
	// tokenWorkers is how many of those revocations run at once.
	tokenWorkers = 4
	// tokenAttempts is how often one is tried before it is left to its
	// TTL; tokenRetry is the pause after the first failure, doubled after
	// each.
	tokenAttempts = 3
	tokenRetry    = time.Second
	// tokenYield is how often a token revocation that gives way to secret
	// revocations looks again.
	tokenYield = 5 * time.Millisecond
	// tokenIdle is how long a worker waits for work before it exits.
	tokenIdle = 30 * time.Second
)

// tokenSweeper revokes, in the background, the per-lease tokens whose
// secrets Revoke has revoked. Such a token holds nothing: its one secret
// is gone, its value never left the process that created it, and its TTL
// ends it at the lease's expiry. Revoking it is tidying up, so it gives
// way to the secret revocations in flight, which end credentials: Vault's
// database plugin revokes one credential at a time per connection, and
// every request competing with those revocations for Vault's CPU delays
// them. A burst of due leases has its database roles dropped first and
// its tokens revoked after.
type tokenSweeper struct {
	mu      sync.Mutex
	queue   chan tokenJob // made on first use
	workers int
	// secrets counts secret revocations in flight.
	secrets atomic.Int64
}

// tokenJob is one token to revoke; lease and entitlement are for the log.
type tokenJob struct {
	accessor, lease, entitlement string
}

// deferTokenRevocation queues a token for revocation, starting a worker
// if fewer than tokenWorkers run; false when the queue is full.
func (i *Issuer) deferTokenRevocation(j tokenJob) bool {
	ts := &i.tokens
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.queue == nil {
		ts.queue = make(chan tokenJob, tokenQueueSize)
	}
	select {
	case ts.queue <- j:
	default:
		return false
	}
	if ts.workers < tokenWorkers {
		ts.workers++
		go i.sweepTokens()
	}
	return true
}

// sweepTokens revokes queued tokens until it has been idle for tokenIdle.
func (i *Issuer) sweepTokens() {
	ts := &i.tokens
	idle := time.NewTimer(tokenIdle)
	defer idle.Stop()
	for {
		select {
		case j := <-ts.queue:
			i.sweepToken(j)
			idle.Reset(tokenIdle)
		case <-idle.C:
			// Under the lock: a job queued from now on starts a worker.
			ts.mu.Lock()
			if len(ts.queue) > 0 {
				ts.mu.Unlock()
				idle.Reset(tokenIdle)
				continue
			}
			ts.workers--
			ts.mu.Unlock()
			return
		}
	}
}

// sweepToken revokes one queued token, after the secret revocations in
// flight unless the queue is half full (then tokens compete again rather
// than back up into Revoke), retrying a failure tokenAttempts times.
func (i *Issuer) sweepToken(j tokenJob) {
	ts := &i.tokens
	for ts.secrets.Load() > 0 && len(ts.queue) < cap(ts.queue)/2 {
		time.Sleep(tokenYield)
	}
	var err error
	for attempt, pause := 1, tokenRetry; ; attempt, pause = attempt+1, 2*pause {
		ctx, cancel := context.WithTimeout(context.Background(), i.cfg.RequestTimeout)
		err = i.revokeToken(ctx, j.accessor)
		cancel()
		if err == nil {
			return
		}
		if attempt == tokenAttempts {
			break
		}
		time.Sleep(pause)
	}
	i.log.Warn("could not revoke the per-lease token of a revoked lease; it holds no secret and ends at its TTL",
		"lease", j.lease, "entitlement", j.entitlement, "error", err)
}

// revokeToken revokes a per-lease token by accessor; one already gone is
// success.
func (i *Issuer) revokeToken(ctx context.Context, accessor string) error {
	s, err := i.session(ctx)
	if err != nil {
		return err
	}
	if err := s.client.Auth().Token().RevokeAccessorWithContext(ctx, accessor); err != nil &&
		!(refused(err) && vaultSays(err, "invalid accessor", "not found")) {
		return classify("revoke the per-lease token", err, "the broker's token lacks permission for auth/token/revoke-accessor")
	}
	return nil
}
