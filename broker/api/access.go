package api

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// accessStatus maps an access service error. The code comes from the
// sentinel; the message from the policy's reasons when the error carries
// them (they say what to fix), else from the sentinel. A policy refusal
// about the input (duration, ticket, reason) is InvalidArgument, any other
// PermissionDenied.
func accessStatus(err error) error {
	var (
		code codes.Code
		msg  string
	)
	switch {
	case errors.Is(err, access.ErrNotFound):
		return status.Error(codes.NotFound, "not found")
	case errors.Is(err, access.ErrUnavailable):
		return status.Error(codes.Unavailable, "the audit trail is unavailable, so nothing was changed; retry later")
	case errors.Is(err, access.ErrInvalid):
		code, msg = codes.InvalidArgument, strings.TrimPrefix(err.Error(), "access: ")
	case errors.Is(err, access.ErrSelfApproval):
		code, msg = codes.PermissionDenied, "you cannot review your own request, under any identity you hold"
	case errors.Is(err, access.ErrNotApprover):
		code, msg = codes.PermissionDenied, "you are not an approver of this entitlement"
	case errors.Is(err, access.ErrForbidden):
		code, msg = codes.PermissionDenied, strings.TrimPrefix(err.Error(), "access: ")
	case errors.Is(err, access.ErrAlreadyDecided):
		code, msg = codes.FailedPrecondition, "you already reviewed this request; one approver counts once"
	case errors.Is(err, access.ErrNotCounted):
		code, msg = codes.FailedPrecondition, strings.TrimPrefix(err.Error(), "access: ")
	case errors.Is(err, access.ErrClosed):
		code, msg = codes.FailedPrecondition, "the request is closed (approved, denied, cancelled or expired)"
	case errors.Is(err, access.ErrChanged):
		code, msg = codes.FailedPrecondition, "the request changed since you saw it (digest mismatch): get it again and review what it asks now"
	case errors.Is(err, access.ErrConflict):
		return status.Error(codes.Aborted, "the request changed concurrently; retry")
	case errors.Is(err, access.ErrDenied):
		code, msg = codes.PermissionDenied, "denied by policy"
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the access store did not answer in time")
	default:
		return status.Error(codes.Unavailable, "access store unavailable; retry later")
	}
	var denied *access.DeniedError
	if errors.As(err, &denied) && len(denied.Reasons) > 0 {
		msgs := make([]string, 0, len(denied.Reasons))
		for _, r := range denied.Reasons {
			if code == codes.PermissionDenied && policy.IsInvalidArgument(r.Code) {
				code = codes.InvalidArgument
			}
			msgs = append(msgs, r.Message)
		}
		msg = strings.Join(msgs, "; ")
	}
	return status.Error(code, msg)
}

func (s *Server) accessSvc() (*access.Service, error) {
	if s.cfg.Access == nil {
		return nil, status.Error(codes.Unimplemented, "access requests are not enabled on this broker")
	}
	return s.cfg.Access, nil
}

func validRequestID(field, id string) error {
	if err := validLeaseID(field, id); err != nil {
		return status.Error(codes.InvalidArgument, strings.Replace(status.Convert(err).Message(), "lease id", "id", 1))
	}
	return nil
}

// CreateAccessRequest implements mayflyv1.AccessServiceServer.
func (s *Server) CreateAccessRequest(ctx context.Context, req *mayflyv1.CreateAccessRequestRequest) (*mayflyv1.CreateAccessRequestResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	svc, err := s.accessSvc()
	if err != nil {
		return nil, err
	}
	if err := validEntitlement("entitlement", req.GetEntitlement()); err != nil {
		return nil, err
	}
	d, err := validTTL("duration", req.GetDuration())
	if err != nil {
		return nil, err
	}
	if err := validText("reason", req.GetReason(), maxReason, false); err != nil {
		return nil, err
	}
	if err := validText("ticket", req.GetTicket(), maxTicket, true); err != nil {
		return nil, err
	}
	spec := access.RequestSpec{Entitlement: req.GetEntitlement(), Reason: req.GetReason(), Ticket: req.GetTicket(), Duration: d}
	if req.GetStartAt() != nil {
		if err := req.GetStartAt().CheckValid(); err != nil {
			return nil, invalidArg("start_at", "not a valid timestamp")
		}
		spec.StartAt = req.GetStartAt().AsTime()
	}
	r, err := svc.Create(ctx, p, spec)
	if err != nil {
		return nil, accessStatus(err)
	}
	return &mayflyv1.CreateAccessRequestResponse{Request: requestProto(r)}, nil
}

// GetAccessRequest implements mayflyv1.AccessServiceServer.
func (s *Server) GetAccessRequest(ctx context.Context, req *mayflyv1.GetAccessRequestRequest) (*mayflyv1.GetAccessRequestResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validRequestID("id", req.GetId()); err != nil {
		return nil, err
	}
	r, err := svc.Get(ctx, p, req.GetId())
	if err != nil {
		return nil, accessStatus(err)
	}
	return &mayflyv1.GetAccessRequestResponse{Request: requestProto(r)}, nil
}

func (s *Server) accessCaller(ctx context.Context) (p authn.Principal, svc *access.Service, err error) {
	if p, err = caller(ctx); err != nil {
		return p, nil, err
	}
	svc, err = s.accessSvc()
	return p, svc, err
}

// ListAccessRequests implements mayflyv1.AccessServiceServer.
func (s *Server) ListAccessRequests(ctx context.Context, req *mayflyv1.ListAccessRequestsRequest) (*mayflyv1.ListAccessRequestsResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := validPageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if err := validText("page_token", req.GetPageToken(), 512, true); err != nil {
		return nil, err
	}
	opt := access.ListOptions{ToReview: req.GetToReview(), PageSize: size, PageToken: req.GetPageToken()}
	for i, st := range req.GetStates() {
		rs, ok := requestStateFromProto(st)
		if !ok {
			return nil, invalidArg("states", "element %d: %v is not a request state", i, st)
		}
		opt.States = append(opt.States, rs)
	}
	rs, next, err := svc.List(ctx, p, opt)
	if err != nil {
		return nil, accessStatus(err)
	}
	resp := &mayflyv1.ListAccessRequestsResponse{NextPageToken: next}
	for _, r := range rs {
		resp.Requests = append(resp.Requests, requestProto(r))
	}
	return resp, nil
}

// WatchAccessRequest implements mayflyv1.AccessServiceServer.
func (s *Server) WatchAccessRequest(req *mayflyv1.WatchAccessRequestRequest, stream grpc.ServerStreamingServer[mayflyv1.WatchAccessRequestResponse]) error {
	ctx := stream.Context()
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return err
	}
	if err := validRequestID("id", req.GetId()); err != nil {
		return err
	}
	updates, err := svc.Watch(ctx, p, req.GetId())
	if err != nil {
		return accessStatus(err)
	}
	for r := range updates {
		if err := stream.Send(&mayflyv1.WatchAccessRequestResponse{Request: requestProto(&r)}); err != nil {
			return err
		}
		if r.State != access.RequestPending {
			return nil
		}
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return nil
}

// CancelAccessRequest implements mayflyv1.AccessServiceServer.
func (s *Server) CancelAccessRequest(ctx context.Context, req *mayflyv1.CancelAccessRequestRequest) (*mayflyv1.CancelAccessRequestResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validRequestID("id", req.GetId()); err != nil {
		return nil, err
	}
	r, err := svc.Cancel(ctx, p, req.GetId())
	if err != nil {
		return nil, accessStatus(err)
	}
	return &mayflyv1.CancelAccessRequestResponse{Request: requestProto(r)}, nil
}

// ReviewAccessRequest implements mayflyv1.AccessServiceServer.
func (s *Server) ReviewAccessRequest(ctx context.Context, req *mayflyv1.ReviewAccessRequestRequest) (*mayflyv1.ReviewAccessRequestResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validRequestID("id", req.GetId()); err != nil {
		return nil, err
	}
	var approve bool
	switch req.GetDecision() {
	case mayflyv1.ReviewDecision_REVIEW_DECISION_APPROVE:
		approve = true
	case mayflyv1.ReviewDecision_REVIEW_DECISION_DENY:
	default:
		return nil, invalidArg("decision", "must be APPROVE or DENY")
	}
	if err := validText("comment", req.GetComment(), maxReason, false); err != nil {
		return nil, err
	}
	if req.GetDigest() == "" {
		return nil, invalidArg("digest", "required: the digest of the request as you saw it (GetAccessRequest)")
	}
	if err := validText("digest", req.GetDigest(), 128, true); err != nil {
		return nil, err
	}
	r, err := svc.Review(ctx, p, req.GetId(), approve, req.GetComment(), req.GetDigest())
	if err != nil {
		return nil, accessStatus(err)
	}
	return &mayflyv1.ReviewAccessRequestResponse{Request: requestProto(r)}, nil
}

// BreakGlass implements mayflyv1.AccessServiceServer.
func (s *Server) BreakGlass(ctx context.Context, req *mayflyv1.BreakGlassRequest) (*mayflyv1.BreakGlassResponse, error) {
	p, svc, err := s.accessCaller(ctx)
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
	if strings.TrimSpace(req.GetReason()) == "" {
		return nil, invalidArg("reason", "required: say why you break the glass")
	}
	if err := validText("reason", req.GetReason(), maxReason, false); err != nil {
		return nil, err
	}
	g, err := svc.BreakGlass(ctx, p, req.GetEntitlement(), ttl, req.GetReason())
	if err != nil {
		return nil, accessStatus(err)
	}
	s.log.Warn("break-glass used", "subject", p.ID, "entitlement", g.Entitlement, "grant", g.ID, "until", g.End, "review_due", g.ReviewDue)
	return &mayflyv1.BreakGlassResponse{Grant: grantProto(g)}, nil
}

// ListGrants implements mayflyv1.AccessServiceServer.
func (s *Server) ListGrants(ctx context.Context, req *mayflyv1.ListGrantsRequest) (*mayflyv1.ListGrantsResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := validPageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if err := validText("page_token", req.GetPageToken(), 512, true); err != nil {
		return nil, err
	}
	f := access.GrantFilter{PageSize: size, PageToken: req.GetPageToken()}
	if !req.GetAll() {
		f.Subject = p.ID
	}
	for i, st := range req.GetStates() {
		gs, ok := grantStateFromProto(st)
		if !ok {
			return nil, invalidArg("states", "element %d: %v is not a grant state", i, st)
		}
		f.States = append(f.States, gs)
	}
	gs, next, err := svc.Grants(ctx, p, f)
	if err != nil {
		return nil, accessStatus(err)
	}
	resp := &mayflyv1.ListGrantsResponse{NextPageToken: next}
	for _, g := range gs {
		resp.Grants = append(resp.Grants, grantProto(g))
	}
	return resp, nil
}

// RevokeGrant implements mayflyv1.AccessServiceServer.
func (s *Server) RevokeGrant(ctx context.Context, req *mayflyv1.RevokeGrantRequest) (*mayflyv1.RevokeGrantResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validRequestID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := validText("reason", req.GetReason(), maxReason, false); err != nil {
		return nil, err
	}
	g, n, err := svc.RevokeGrant(ctx, p, req.GetId(), req.GetReason())
	if err != nil {
		return nil, accessStatus(err)
	}
	s.cfg.Wake()
	return &mayflyv1.RevokeGrantResponse{Grant: grantProto(g), LeasesRevoked: int32(n)}, nil
}

// ListReviews implements mayflyv1.ReviewServiceServer.
func (s *Server) ListReviews(ctx context.Context, req *mayflyv1.ListReviewsRequest) (*mayflyv1.ListReviewsResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := svc.ListReviews(ctx, p)
	if err != nil {
		return nil, accessStatus(err)
	}
	now := s.cfg.Now()
	resp := &mayflyv1.ListReviewsResponse{}
	for _, r := range rs {
		out := reviewProto(r, now)
		if !req.GetIncludeUpcoming() && out.GetDueAt() != nil && out.GetDueAt().AsTime().After(now.Add(7*24*time.Hour)) && !out.GetOverdue() {
			continue
		}
		resp.Reviews = append(resp.Reviews, out)
	}
	return resp, nil
}

// CertifyGrant implements mayflyv1.ReviewServiceServer.
func (s *Server) CertifyGrant(ctx context.Context, req *mayflyv1.CertifyGrantRequest) (*mayflyv1.CertifyGrantResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetGrantId() == "" {
		return nil, invalidArg("grant_id", "required")
	}
	if err := validText("grant_id", req.GetGrantId(), 256, true); err != nil {
		return nil, err
	}
	if err := validText("comment", req.GetComment(), maxReason, false); err != nil {
		return nil, err
	}
	var d access.CertifyDecision
	switch req.GetDecision() {
	case mayflyv1.CertifyDecision_CERTIFY_DECISION_CERTIFY:
		d = access.Certify
	case mayflyv1.CertifyDecision_CERTIFY_DECISION_REVOKE:
		d = access.Revoke
	default:
		return nil, invalidArg("decision", "must be CERTIFY or REVOKE")
	}
	c, err := svc.Certify(ctx, p, req.GetGrantId(), d, req.GetComment())
	if err != nil {
		return nil, accessStatus(err)
	}
	resp := &mayflyv1.CertifyGrantResponse{}
	if d == access.Certify {
		if _, g := s.cfg.Policy().StandingGrant(c.GrantID); g != nil && g.ReviewEvery > 0 {
			resp.NextDueAt = timestamppb.New(c.At.Add(g.ReviewEvery))
		}
	} else {
		s.cfg.Wake()
	}
	return resp, nil
}

// CompleteBreakGlassReview implements mayflyv1.ReviewServiceServer.
func (s *Server) CompleteBreakGlassReview(ctx context.Context, req *mayflyv1.CompleteBreakGlassReviewRequest) (*mayflyv1.CompleteBreakGlassReviewResponse, error) {
	p, svc, err := s.accessCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validRequestID("grant_id", req.GetGrantId()); err != nil {
		return nil, err
	}
	if err := validText("comment", req.GetComment(), maxReason, false); err != nil {
		return nil, err
	}
	g, err := svc.CompleteBreakGlassReview(ctx, p, req.GetGrantId(), req.GetComment())
	if err != nil {
		return nil, accessStatus(err)
	}
	return &mayflyv1.CompleteBreakGlassReviewResponse{Grant: grantProto(g)}, nil
}

// maxCandidatePolicy bounds a what-if policy upload.
const maxCandidatePolicy = 4 << 20

// WhatIf implements mayflyv1.PolicyServiceServer.
func (s *Server) WhatIf(ctx context.Context, req *mayflyv1.WhatIfRequest) (*mayflyv1.WhatIfResponse, error) {
	if _, err := s.admin(ctx); err != nil {
		return nil, err
	}
	svc, err := s.accessSvc()
	if err != nil {
		return nil, err
	}
	if len(req.GetPolicy()) == 0 {
		return nil, invalidArg("policy", "required: the candidate policy file")
	}
	if len(req.GetPolicy()) > maxCandidatePolicy {
		return nil, invalidArg("policy", "too large (at most %d bytes)", maxCandidatePolicy)
	}
	window := 7 * 24 * time.Hour
	if req.GetWindow() != nil {
		if window, err = validTTL("window", req.GetWindow()); err != nil {
			return nil, err
		}
	}
	decoders := map[string]func(*yaml.Node) (any, error){}
	for name, iss := range s.cfg.Issuers {
		decoders[name] = iss.DecodeParams
	}
	candidate, err := policy.Parse(req.GetPolicy(), policy.Options{Issuers: decoders})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "policy: %s", strings.TrimPrefix(err.Error(), "policy: "))
	}
	changes, sum, err := svc.WhatIf(ctx, candidate, s.cfg.Now().Add(-window))
	if err != nil {
		return nil, accessStatus(err)
	}
	resp := &mayflyv1.WhatIfResponse{Replayed: int32(sum.Records), PolicyDigest: candidate.Digest}
	for _, c := range changes {
		resp.Changes = append(resp.Changes, changeProto(c))
	}
	return resp, nil
}

func changeProto(c policy.Change) *mayflyv1.DecisionChange {
	rec := c.Record
	subject, ent := "", ""
	switch {
	case rec.Issue != nil:
		subject, ent = rec.Issue.Principal.ID, rec.Issue.Entitlement
	case rec.Request != nil:
		subject, ent = rec.Request.Principal.ID, rec.Request.Entitlement
	case rec.Approval != nil:
		subject, ent = rec.Approval.Approver.ID, rec.Approval.Entitlement
	case rec.BreakGlass != nil:
		subject, ent = rec.BreakGlass.Principal.ID, rec.BreakGlass.Entitlement
	}
	result := func(r policy.Result) *mayflyv1.Decision {
		d := &mayflyv1.Decision{Outcome: outcomes[r.Outcome], Entitlement: ent, Subject: subject, GrantId: r.Basis, Reasons: reasonsProto(r.Reasons)}
		if r.TTL > 0 {
			d.Ttl = durationpb.New(r.TTL)
		}
		return d
	}
	after := result(c.New)
	if c.Err != "" {
		after.Reasons = append(after.Reasons, &mayflyv1.Reason{Code: "unreplayable", Message: c.Err})
	}
	return &mayflyv1.DecisionChange{Kind: string(rec.Kind), Subject: subject, Entitlement: ent, At: ts(rec.At), Before: result(c.Old), After: after}
}
