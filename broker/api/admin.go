package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer"
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
	kill := audit.Event{Type: audit.TypeLeaseRevokeRequested, Actor: p.ID, Subject: sel.Subject, Entitlement: sel.Entitlement,
		GrantID: sel.GrantID, How: string(lease.ReasonKillSwitch), Fields: map[string]string{"revoked": strconv.Itoa(n)}}
	if r := req.GetReason(); r != "" {
		kill.Fields["reason"] = r
	}
	s.cfg.Audit.Record(kill)
	s.log.Warn("kill switch", "by", p.ID, "subject", sel.Subject, "entitlement", sel.Entitlement, "grant", sel.GrantID, "reason", req.GetReason(), "revoked", n)
	resp := &mayflyv1.RevokeBySelectorResponse{Revoked: int32(n)}
	if sel.Entitlement != "" {
		if note := s.killSessions(ctx, sel.Entitlement); note != nil {
			resp.Notes = append(resp.Notes, note)
		}
	}
	return resp, nil
}

// sessionKiller is implemented by issuers whose credentials cannot be
// revoked one by one but can all be cut off at once (AWS STS: a deny
// policy on the role keyed on the session's issue time).
type sessionKiller interface {
	KillSwitch(ctx context.Context, params any, before time.Time) error
}

// killSessions cuts off, where the backend allows, every session of an
// entitlement issued before now. Only for the entitlement selector: for a
// subject or a grant it would cut off everyone using the role.
func (s *Server) killSessions(ctx context.Context, name string) *mayflyv1.Reason {
	ent := s.cfg.Policy().Entitlement(name)
	if ent == nil {
		return nil
	}
	k, ok := s.cfg.Issuers[ent.Issuer].(sessionKiller)
	if !ok {
		return nil
	}
	err := k.KillSwitch(ctx, ent.Params, s.cfg.Now())
	if errors.Is(err, issuer.ErrNotSupported) {
		return &mayflyv1.Reason{Code: "sessions_run_out", Message: fmt.Sprintf("%s sessions of %q already issued run to their expiry (set revoke_sessions_policy to cut them off)", ent.Issuer, name)}
	}
	if err != nil {
		s.log.Warn("kill switch: could not cut off the backend's sessions", "entitlement", name, "issuer", ent.Issuer, "error", err)
		return &mayflyv1.Reason{Code: "sessions_not_cut_off", Message: fmt.Sprintf("%s sessions of %q issued before now could not be cut off; they end at their expiry (see the broker log)", ent.Issuer, name)}
	}
	return &mayflyv1.Reason{Code: "sessions_cut_off", Message: fmt.Sprintf("every %s session of %q issued before now is denied by a policy on its role", ent.Issuer, name)}
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
