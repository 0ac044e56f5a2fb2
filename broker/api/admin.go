package api

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/lease"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// admin returns the caller if the policy in force names it an admin.
func (s *Server) admin(ctx context.Context) (authn.Principal, error) {
	p, err := caller(ctx)
	if err != nil {
		return p, err
	}
	if !s.cfg.Policy().IsAdmin(p) {
		return p, status.Error(codes.PermissionDenied, "this call is for policy admins (the policy file's admins list)")
	}
	return p, nil
}

// RevokeBySelector implements mayflyv1.AdminServiceServer: the kill switch.
func (s *Server) RevokeBySelector(ctx context.Context, req *mayflyv1.RevokeBySelectorRequest) (*mayflyv1.RevokeBySelectorResponse, error) {
	p, err := s.admin(ctx)
	if err != nil {
		return nil, err
	}
	var sel lease.Selector
	switch x := req.GetSelector().(type) {
	case *mayflyv1.RevokeBySelectorRequest_Subject:
		if _, err := principalFromSubject(x.Subject); err != nil {
			return nil, err
		}
		sel.Subject = x.Subject
	case *mayflyv1.RevokeBySelectorRequest_Entitlement:
		if err := validEntitlement("entitlement", x.Entitlement); err != nil {
			return nil, err
		}
		sel.Entitlement = x.Entitlement
	case *mayflyv1.RevokeBySelectorRequest_GrantId:
		if x.GrantId == "" {
			return nil, invalidArg("grant_id", "required")
		}
		if err := validText("grant_id", x.GrantId, 256, true); err != nil {
			return nil, err
		}
		sel.GrantID = x.GrantId
	default:
		return nil, invalidArg("selector", "set exactly one of subject, entitlement or grant_id")
	}
	if err := validText("reason", req.GetReason(), maxReason, false); err != nil {
		return nil, err
	}
	n, err := s.cfg.Store.RevokeMatching(ctx, sel, lease.ReasonKillSwitch, s.cfg.Now())
	if err != nil {
		return nil, storeStatus(err)
	}
	if n > 0 {
		s.cfg.Wake()
	}
	s.log.Warn("kill switch", "by", p.ID, "subject", sel.Subject, "entitlement", sel.Entitlement, "grant", sel.GrantID, "reason", req.GetReason(), "revoked", n)
	return &mayflyv1.RevokeBySelectorResponse{Revoked: int32(n)}, nil
}

// ListAllLeases implements mayflyv1.AdminServiceServer.
func (s *Server) ListAllLeases(ctx context.Context, req *mayflyv1.ListAllLeasesRequest) (*mayflyv1.ListAllLeasesResponse, error) {
	if _, err := s.admin(ctx); err != nil {
		return nil, err
	}
	size, err := validPageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	q := lease.Query{Subject: req.GetSubject(), Entitlement: req.GetEntitlement(), GrantID: req.GetGrantId(), PageSize: size, PageToken: req.GetPageToken()}
	if q.Subject != "" {
		if _, err := principalFromSubject(q.Subject); err != nil {
			return nil, err
		}
	}
	if q.Entitlement != "" {
		if err := validEntitlement("entitlement", q.Entitlement); err != nil {
			return nil, err
		}
	}
	for field, v := range map[string]string{"grant_id": q.GrantID, "page_token": q.PageToken} {
		if err := validText(field, v, 512, true); err != nil {
			return nil, err
		}
	}
	if q.States, err = statesFromProto(req.GetStates()); err != nil {
		return nil, err
	}
	leases, next, err := s.cfg.Store.List(ctx, q)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp := &mayflyv1.ListAllLeasesResponse{NextPageToken: next}
	for _, l := range leases {
		resp.Leases = append(resp.Leases, leaseProto(l))
	}
	return resp, nil
}

func statesFromProto(in []mayflyv1.LeaseState) ([]lease.State, error) {
	var out []lease.State
	for i, st := range in {
		ls, ok := leaseStateFromProto(st)
		if !ok {
			return nil, invalidArg("states", "element %d: %v is not a lease state", i, st)
		}
		out = append(out, ls)
	}
	return out, nil
}
