package api

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// Limits on free-text request fields.
const (
	maxReason    = 1024
	maxTicket    = 128
	maxRequestID = 128
	maxPageSize  = 1000
)

// IssueCredential implements mayflyv1.CredentialServiceServer.
func (s *Server) IssueCredential(ctx context.Context, req *mayflyv1.IssueCredentialRequest) (*mayflyv1.IssueCredentialResponse, error) {
	start := time.Now()
	s.issuing.Add(1)
	defer s.issuing.Add(-1)
	resp, err := s.issue(ctx, req)
	s.cfg.Metrics.Issue(resultLabel(err), time.Since(start))
	return resp, err
}

func (s *Server) issue(ctx context.Context, req *mayflyv1.IssueCredentialRequest) (*mayflyv1.IssueCredentialResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validEntitlement("entitlement", req.GetEntitlement()); err != nil {
		return nil, err
	}
	ttl, err := validTTL("ttl", req.GetTtl())
	if err != nil {
		return nil, err
	}
	if err := validText("reason", req.GetReason(), maxReason, false); err != nil {
		return nil, err
	}
	if err := validText("ticket", req.GetTicket(), maxTicket, true); err != nil {
		return nil, err
	}
	if err := validText("request_id", req.GetRequestId(), maxRequestID, true); err != nil {
		return nil, err
	}

	now := s.cfg.Now()
	d, err := s.decide(ctx, policy.Input{Principal: p, Entitlement: req.GetEntitlement(), TTL: ttl, Now: now,
		Reason: req.GetReason(), Ticket: req.GetTicket()})
	if err != nil {
		return nil, err
	}
	if d.Outcome != policy.Allow {
		if s.audited {
			s.cfg.Audit.Record(decisionEvent(s.cfg.Policy().Digest, p.ID, req.GetEntitlement(), d))
		}
		return nil, denied(d)
	}
	ent := d.Entitlement
	iss, ok := s.cfg.Issuers[ent.Issuer]
	if !ok {
		s.log.Error("entitlement names an issuer this broker does not run", "entitlement", ent.Name, "issuer", ent.Issuer)
		return nil, status.Errorf(codes.FailedPrecondition, "entitlement %q: its issuer %q is not running on this broker", ent.Name, ent.Issuer)
	}
	revocable, why := iss.Revocability(ent.Params)
	l := &lease.Lease{
		ID:              lease.NewID(now),
		Subject:         p.ID,
		Entitlement:     ent.Name,
		GrantID:         d.GrantID,
		Issuer:          ent.Issuer,
		RequestID:       req.GetRequestId(),
		State:           lease.StatePending,
		IssuedAt:        now,
		ExpiresAt:       d.ExpiresAt,
		HardEnd:         d.HardEnd,
		DueAt:           now.Add(s.cfg.PendingTimeout),
		Renewable:       d.HardEnd.After(d.ExpiresAt),
		Revocable:       revocable,
		RevocableReason: why,
	}
	// Audit before acting: a decision that cannot be recorded mints nothing.
	if s.audited {
		dev := decisionEvent(s.cfg.Policy().Digest, p.ID, ent.Name, d)
		dev.LeaseID = l.ID
		if err := s.cfg.Audit.Must(ctx, dev); err != nil {
			s.log.Error("audit trail unavailable; nothing issued", "entitlement", ent.Name, "error", err)
			return nil, status.Error(codes.Unavailable, "the audit trail is unavailable, so nothing was issued; retry later")
		}
	}
	existing, err := s.cfg.Store.Create(ctx, l)
	if errors.Is(err, lease.ErrDuplicate) {
		return s.replay(ctx, req, existing, iss, ent, d)
	}
	if err != nil {
		s.log.Warn("lease store refused a pending lease; nothing minted", "entitlement", ent.Name, "error", err)
		return nil, storeStatus(err)
	}

	// The pending lease exists: from here on the caller going away must not
	// leave the issuance half-done, so the backend and store calls run on a
	// context that keeps the values but not the cancellation.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.IssueTimeout)
	defer cancel()
	cred, err := iss.Issue(bctx, issuer.Request{
		Lease:  l,
		Params: ent.Params,
		Bind:   func(ctx context.Context, ref string) error { return s.cfg.Store.Bind(ctx, l.ID, ref) },
	})
	if err != nil {
		s.abandon(l, iss, false, err)
		return nil, issuerStatus(ent.Name, err)
	}
	active, err := s.cfg.Store.Activate(bctx, l.ID, cred.ExternalRef)
	if err != nil {
		s.abandon(l, iss, true, err)
		return nil, storeStatus(err)
	}
	if s.audited {
		s.cfg.Audit.Record(audit.LeaseIssued(active, cred))
	}
	return issueResponse(active, cred, d), nil
}

// abandon ends a lease whose issuance failed. The pending lease is marked
// for revocation; when the backend may have minted something, it is revoked
// at once too. If the store is unreachable, the pending deadline still makes
// the revoker end the lease.
func (s *Server) abandon(l *lease.Lease, iss issuer.Issuer, minted bool, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.IssueTimeout)
	defer cancel()
	s.log.Warn("issuance failed; revoking the pending lease", "lease", l.ID, "entitlement", l.Entitlement, "issuer", l.Issuer, "error", cause)
	if minted {
		if err := iss.Revoke(ctx, l); err != nil {
			s.log.Warn("immediate revocation failed; the revoker will retry", "lease", l.ID, "error", err)
		}
	}
	if _, err := s.cfg.Store.Revoke(ctx, l.ID, lease.ReasonIssueFailed, s.cfg.Now()); err != nil {
		s.log.Warn("could not mark the lease for revocation; it will be reaped at its pending deadline", "lease", l.ID, "error", err)
		return
	}
	s.cfg.Wake()
}

// replay answers a retried IssueCredential (same subject and request id):
// the same lease, never a second one.
func (s *Server) replay(ctx context.Context, req *mayflyv1.IssueCredentialRequest, l *lease.Lease, iss issuer.Issuer, ent *policy.Entitlement, d policy.Decision) (*mayflyv1.IssueCredentialResponse, error) {
	switch {
	case l == nil:
		return nil, status.Error(codes.Unavailable, "lease store returned no lease for a repeated request_id; retry")
	case l.Entitlement != req.GetEntitlement():
		return nil, invalidArg("request_id", "already used for another entitlement; choose a new request_id")
	case l.State == lease.StatePending:
		return nil, status.Error(codes.Aborted, "a request with this request_id is still being issued; retry shortly")
	case !l.Active(s.cfg.Now()):
		return nil, status.Error(codes.FailedPrecondition, "request_id was used for a lease that has ended; choose a new request_id")
	}
	cred, err := iss.Issue(ctx, issuer.Request{
		Lease:  l,
		Params: ent.Params,
		Bind: func(context.Context, string) error {
			return errors.New("api: a replayed issuance cannot bind a new handle")
		},
	})
	if err != nil {
		return nil, issuerStatus(ent.Name, err)
	}
	d.TTL = l.ExpiresAt.Sub(l.IssuedAt)
	return issueResponse(l, cred, d), nil
}

func issueResponse(l *lease.Lease, cred *issuer.Credential, d policy.Decision) *mayflyv1.IssueCredentialResponse {
	return &mayflyv1.IssueCredentialResponse{
		Lease:        leaseProto(l),
		Credential:   credentialProto(cred),
		EffectiveTtl: durationpb.New(d.TTL),
		TtlClamped:   d.Clamped,
		Reasons:      reasonsProto(d.Reasons),
	}
}

// RenewLease implements mayflyv1.CredentialServiceServer.
func (s *Server) RenewLease(ctx context.Context, req *mayflyv1.RenewLeaseRequest) (*mayflyv1.RenewLeaseResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validLeaseID("lease_id", req.GetLeaseId()); err != nil {
		return nil, err
	}
	ttl, err := validTTL("ttl", req.GetTtl())
	if err != nil {
		return nil, err
	}
	l, err := s.ownLease(ctx, p, req.GetLeaseId())
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if !l.Active(now) {
		return nil, status.Error(codes.FailedPrecondition, "lease is not active (revoked, expired or being revoked); issue a new credential")
	}
	if !l.Renewable {
		return nil, status.Error(codes.FailedPrecondition, "lease is not renewable; issue a new credential before it expires")
	}
	// The grant must still allow the entitlement; its end and max_ttl cap
	// the renewal as they capped the issuance.
	d, err := s.decide(ctx, policy.Input{Principal: p, Entitlement: l.Entitlement, TTL: ttl, Now: now})
	if err != nil {
		return nil, err
	}
	if d.Outcome != policy.Allow {
		return nil, status.Errorf(codes.FailedPrecondition, "policy no longer allows entitlement %q for this caller; the lease will end at its expiry", l.Entitlement)
	}
	iss, ok := s.cfg.Issuers[l.Issuer]
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "entitlement %q: its issuer %q is not running on this broker", l.Entitlement, l.Issuer)
	}
	want := now.Add(d.TTL)
	expires := minTime(want, l.HardEnd, d.HardEnd)
	clamped := d.Clamped || expires.Before(want)
	if !expires.After(l.ExpiresAt) {
		return nil, status.Error(codes.FailedPrecondition, "lease is at its hard end and cannot be renewed further; issue a new credential")
	}
	renewed, err := s.cfg.Store.Renew(ctx, l.ID, expires)
	if err != nil {
		return nil, storeStatus(err)
	}
	// The backend is renewed only once the renewal is on record; a lease
	// that outlives its credential is harmless, the reverse is not.
	if s.audited {
		if err := s.cfg.Audit.Must(ctx, audit.LeaseRenewed(renewed, nil)); err != nil {
			s.log.Error("audit trail unavailable; renewal not completed", "lease", l.ID, "error", err)
			return nil, status.Error(codes.Unavailable, "the audit trail is unavailable, so the credential was not renewed; retry later")
		}
	}
	// The lease is extended first: a credential must never outlive its lease.
	cred, err := iss.Renew(ctx, renewed, d.Entitlement.Params, expires)
	if err != nil {
		s.log.Warn("backend renewal failed after the lease was extended", "lease", l.ID, "entitlement", l.Entitlement, "error", err)
		return nil, issuerStatus(l.Entitlement, err)
	}
	resp := &mayflyv1.RenewLeaseResponse{Lease: leaseProto(renewed), TtlClamped: clamped}
	if cred != nil {
		resp.Credential = credentialProto(cred)
	}
	return resp, nil
}

// RevokeLease implements mayflyv1.CredentialServiceServer.
func (s *Server) RevokeLease(ctx context.Context, req *mayflyv1.RevokeLeaseRequest) (*mayflyv1.RevokeLeaseResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validLeaseID("lease_id", req.GetLeaseId()); err != nil {
		return nil, err
	}
	if _, err := s.ownLease(ctx, p, req.GetLeaseId()); err != nil {
		return nil, err
	}
	l, err := s.cfg.Store.Revoke(ctx, req.GetLeaseId(), lease.ReasonExplicit, s.cfg.Now())
	if err != nil {
		return nil, storeStatus(err)
	}
	s.cfg.Wake()
	s.cfg.Audit.Record(audit.LeaseRevokeRequested(l, lease.ReasonExplicit, p.ID))
	s.log.Info("lease revocation requested", "lease", l.ID, "entitlement", l.Entitlement, "subject", l.Subject)
	return &mayflyv1.RevokeLeaseResponse{Lease: leaseProto(l)}, nil
}

// GetLease implements mayflyv1.CredentialServiceServer.
func (s *Server) GetLease(ctx context.Context, req *mayflyv1.GetLeaseRequest) (*mayflyv1.GetLeaseResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validLeaseID("lease_id", req.GetLeaseId()); err != nil {
		return nil, err
	}
	l, err := s.ownLease(ctx, p, req.GetLeaseId())
	if err != nil {
		return nil, err
	}
	return &mayflyv1.GetLeaseResponse{Lease: leaseProto(l)}, nil
}

// ListLeases implements mayflyv1.CredentialServiceServer.
func (s *Server) ListLeases(ctx context.Context, req *mayflyv1.ListLeasesRequest) (*mayflyv1.ListLeasesResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := validPageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if req.GetEntitlement() != "" {
		if err := validEntitlement("entitlement", req.GetEntitlement()); err != nil {
			return nil, err
		}
	}
	if err := validText("page_token", req.GetPageToken(), 512, true); err != nil {
		return nil, err
	}
	q := lease.Query{Subject: p.ID, Entitlement: req.GetEntitlement(), PageSize: size, PageToken: req.GetPageToken()}
	if q.States, err = statesFromProto(req.GetStates()); err != nil {
		return nil, err
	}
	leases, next, err := s.cfg.Store.List(ctx, q)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &mayflyv1.ListLeasesResponse{NextPageToken: next}
	for _, l := range leases {
		resp.Leases = append(resp.Leases, leaseProto(l))
	}
	return resp, nil
}

// ownLease returns the caller's lease, or NotFound whether the lease does
// not exist or belongs to someone else.
func (s *Server) ownLease(ctx context.Context, p authn.Principal, id string) (*lease.Lease, error) {
	l, err := s.cfg.Store.Get(ctx, id)
	if err != nil {
		return nil, storeStatus(err)
	}
	if l.Subject != p.ID {
		return nil, errLeaseNotFound
	}
	return l, nil
}

func caller(ctx context.Context) (authn.Principal, error) {
	p, ok := authn.FromContext(ctx)
	if !ok {
		return authn.Principal{}, status.Error(codes.Unauthenticated, "no authenticated caller")
	}
	return p, nil
}

func validPageSize(n int32) (int, error) {
	switch {
	case n < 0 || n > maxPageSize:
		return 0, invalidArg("page_size", "must be between 0 and %d", maxPageSize)
	case n == 0:
		return 100, nil
	}
	return int(n), nil
}

// denied turns a non-allow decision into PermissionDenied. The message is
// the decision's public reasons, which never reveal whether an entitlement
// the caller holds no grant for exists.
func denied(d policy.Decision) error {
	msg := "permission denied"
	if len(d.Reasons) > 0 {
		msg = d.Reasons[0].Message
		for _, r := range d.Reasons[1:] {
			msg += "; " + r.Message
		}
	}
	if d.Outcome == policy.NeedsApproval {
		msg += "; create an access request (mayfly request) and wait for approval"
	}
	return status.Error(codes.PermissionDenied, msg)
}

func resultLabel(err error) string {
	switch status.Code(err) {
	case codes.OK:
		return "ok"
	case codes.PermissionDenied:
		return "denied"
	case codes.InvalidArgument:
		return "invalid"
	case codes.Unavailable, codes.DeadlineExceeded:
		return "unavailable"
	case codes.Unauthenticated:
		return "unauthenticated"
	default:
		return "error"
	}
}

func minTime(t time.Time, more ...time.Time) time.Time {
	for _, u := range more {
		if !u.IsZero() && u.Before(t) {
			t = u
		}
	}
	return t
}

// decisionEvent is the audit event of an issuance decision.
func decisionEvent(digest, subject, entitlement string, d policy.Decision) audit.Event {
	codes := make([]string, 0, len(d.Reasons))
	for _, r := range d.Reasons {
		codes = append(codes, r.Code)
	}
	info := audit.DecisionInfo{Subject: subject, Entitlement: entitlement, GrantID: d.GrantID, Outcome: d.Outcome.String(),
		Reasons: codes, PolicyDigest: digest}
	if d.Outcome == policy.Allow {
		info.TTL = d.TTL
	}
	return audit.Decision(info)
}
