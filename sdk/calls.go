package sdk

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"fmt"
	"iter"
	"math/rand/v2"
	"time"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Renewal is the result of Client.Renew.
type Renewal struct {
	// Lease is the lease with its new expiry.
	Lease Lease
	// Credential is set when the holder must switch to a new credential value
	// (for example a JWT with a later exp); nil when the existing credential
	// stays valid until Lease.ExpiresAt.
	Credential *Credential
	// TTLClamped says the requested TTL was cut short by the lease's hard end.
	TTLClamped bool
}

// retryPolicy says how often the client retries a unary call that failed with
// codes.Unavailable, which the broker guarantees minted nothing, or which a
// retried idempotent call can safely repeat.
type retryPolicy struct {
	attempts    int
	base, limit time.Duration
}

var defaultRetryPolicy = retryPolicy{attempts: 4, base: 100 * time.Millisecond, limit: 2 * time.Second}

// noRetry is used by CredentialSource, which runs its own backoff and
// reports each failure.
var noRetry = retryPolicy{attempts: 1}

// call runs fn, retrying codes.Unavailable with jittered exponential backoff
// until the policy's attempts are spent or ctx ends. fn must be safe to
// repeat: Issue repeats the same request id.
func call[T any](ctx context.Context, p retryPolicy, fn func(context.Context) (T, error)) (T, error) {
	var (
		res T
		err error
	)
	for attempt := 1; ; attempt++ {
		res, err = fn(ctx)
		if err == nil || status.Code(err) != codes.Unavailable || attempt >= p.attempts {
			return res, err
		}
		t := time.NewTimer(jitter(backoff(p.base, p.limit, attempt), rand.Float64()))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
	}
}

// backoff is base·2^(n-1), capped at limit.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// jitter spreads d by ±10% using r in [0, 1).
func jitter(d time.Duration, r float64) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*r))
}

// newRequestID returns a random idempotency key: 32 hex characters.
func newRequestID() string {
	var b [16]byte
	_, _ = cryptorand.Read(b[:]) // never fails: crypto/rand.Read panics instead
	return hex.EncodeToString(b[:])
}

// Issue asks the broker for a credential for entitlement and returns it with
// its lease. Nothing renews it: use Credential for a credential that stays
// valid for as long as the program runs, or call Renew and Revoke yourself.
//
// A failed attempt with codes.Unavailable is retried with the same request
// id (see WithRequestID), so a retry after a lost response returns the lease
// already minted instead of minting a second one.
func (c *Client) Issue(ctx context.Context, entitlement string, opts ...IssueOption) (*Credential, error) {
	var cfg issueConfig
	for _, o := range opts {
		o.configureIssue(&cfg)
	}
	if cfg.requestID == "" {
		cfg.requestID = newRequestID()
	}
	cred, _, err := c.issue(ctx, c.retry, entitlement, cfg.request, cfg.requestID)
	return cred, err
}

// issue runs IssueCredential under policy p and also returns the TTL the
// broker granted.
func (c *Client) issue(ctx context.Context, p retryPolicy, entitlement string, rc requestConfig, requestID string) (*Credential, time.Duration, error) {
	if entitlement == "" {
		return nil, 0, fmt.Errorf("sdk: issue: %w", status.Error(codes.InvalidArgument, "entitlement is required"))
	}
	req := &mayflyv1.IssueCredentialRequest{
		Entitlement: entitlement,
		Reason:      rc.reason,
		Ticket:      rc.ticket,
		RequestId:   requestID,
	}
	if rc.ttl > 0 {
		req.Ttl = durationpb.New(rc.ttl)
	}
	resp, err := call(ctx, p, func(ctx context.Context) (*mayflyv1.IssueCredentialResponse, error) {
		return c.raw.IssueCredential(ctx, req)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("sdk: issue %q: %w", entitlement, err)
	}
	cred, err := credentialFromProto(resp.GetLease(), resp.GetCredential())
	if err != nil {
		return nil, 0, err
	}
	return cred, resp.GetEffectiveTtl().AsDuration(), nil
}

// Renew extends a lease by ttl from now (zero means the entitlement's
// default), never past its hard end. Read Renewal.Credential: some backends
// hand out a new credential value on renewal.
func (c *Client) Renew(ctx context.Context, leaseID string, ttl time.Duration) (*Renewal, error) {
	return c.renew(ctx, c.retry, leaseID, ttl)
}

func (c *Client) renew(ctx context.Context, p retryPolicy, leaseID string, ttl time.Duration) (*Renewal, error) {
	if leaseID == "" {
		return nil, fmt.Errorf("sdk: renew: %w", status.Error(codes.InvalidArgument, "lease id is required"))
	}
	req := &mayflyv1.RenewLeaseRequest{LeaseId: leaseID}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := call(ctx, p, func(ctx context.Context) (*mayflyv1.RenewLeaseResponse, error) {
		return c.raw.RenewLease(ctx, req)
	})
	if err != nil {
		return nil, fmt.Errorf("sdk: renew lease %s: %w", leaseID, err)
	}
	r := &Renewal{Lease: leaseFromProto(resp.GetLease()), TTLClamped: resp.GetTtlClamped()}
	if resp.GetCredential() != nil {
		cred, err := credentialFromProto(resp.GetLease(), resp.GetCredential())
		if err != nil {
			return nil, err
		}
		r.Credential = cred
	}
	return r, nil
}

// Revoke ends a lease now and returns it. Revoking a revoked lease is not an
// error. Check Lease.Revocable: a bearer credential (a JWT, an STS session)
// may stay usable until its native expiry even though its lease is revoked.
func (c *Client) Revoke(ctx context.Context, leaseID string) (*Lease, error) {
	return c.revoke(ctx, c.retry, leaseID)
}

func (c *Client) revoke(ctx context.Context, p retryPolicy, leaseID string) (*Lease, error) {
	if leaseID == "" {
		return nil, fmt.Errorf("sdk: revoke: %w", status.Error(codes.InvalidArgument, "lease id is required"))
	}
	resp, err := call(ctx, p, func(ctx context.Context) (*mayflyv1.RevokeLeaseResponse, error) {
		return c.raw.RevokeLease(ctx, &mayflyv1.RevokeLeaseRequest{LeaseId: leaseID})
	})
	if err != nil {
		return nil, fmt.Errorf("sdk: revoke lease %s: %w", leaseID, err)
	}
	l := leaseFromProto(resp.GetLease())
	return &l, nil
}

// Lease returns one of the caller's leases.
func (c *Client) Lease(ctx context.Context, id string) (*Lease, error) {
	if id == "" {
		return nil, fmt.Errorf("sdk: get lease: %w", status.Error(codes.InvalidArgument, "lease id is required"))
	}
	resp, err := call(ctx, c.retry, func(ctx context.Context) (*mayflyv1.GetLeaseResponse, error) {
		return c.raw.GetLease(ctx, &mayflyv1.GetLeaseRequest{LeaseId: id})
	})
	if err != nil {
		return nil, fmt.Errorf("sdk: get lease %s: %w", id, err)
	}
	l := leaseFromProto(resp.GetLease())
	return &l, nil
}

// Leases iterates over the caller's leases, oldest first, fetching pages as
// the loop goes. An error ends the iteration and is yielded with a zero
// Lease:
//
//	for lease, err := range client.Leases(ctx, sdk.WithStates(sdk.StateActive)) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(lease.ID, lease.ExpiresAt)
//	}
func (c *Client) Leases(ctx context.Context, opts ...ListOption) iter.Seq2[Lease, error] {
	var cfg listConfig
	for _, o := range opts {
		o.configureList(&cfg)
	}
	return func(yield func(Lease, error) bool) {
		req := &mayflyv1.ListLeasesRequest{PageSize: cfg.pageSize, Entitlement: cfg.entitlement}
		for _, s := range cfg.states {
			st, err := stateToProto(s)
			if err != nil {
				yield(Lease{}, err)
				return
			}
			req.States = append(req.States, st)
		}
		for {
			resp, err := call(ctx, c.retry, func(ctx context.Context) (*mayflyv1.ListLeasesResponse, error) {
				return c.raw.ListLeases(ctx, req)
			})
			if err != nil {
				yield(Lease{}, fmt.Errorf("sdk: list leases: %w", err))
				return
			}
			for _, l := range resp.GetLeases() {
				if !yield(leaseFromProto(l), nil) {
					return
				}
			}
			if resp.GetNextPageToken() == "" {
				return
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
}
