package api

import (
	"context"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// Explain implements mayflyv1.PolicyServiceServer. It decides exactly as
// IssueCredential would, and acts on nothing.
func (s *Server) Explain(ctx context.Context, req *mayflyv1.ExplainRequest) (*mayflyv1.ExplainResponse, error) {
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
	pol := s.cfg.Policy()
	subject := p
	if req.GetSubject() != "" && req.GetSubject() != p.ID {
		if !pol.IsAdmin(p) {
			return nil, status.Error(codes.PermissionDenied, "subject: explaining a decision for another principal requires being a policy admin (policy key admins)")
		}
		if subject, err = principalFromSubject(req.GetSubject()); err != nil {
			return nil, err
		}
	}
	in := policy.Input{Principal: subject, Entitlement: req.GetEntitlement(), TTL: ttl, Now: s.cfg.Now()}
	if err := s.fillState(ctx, &in); err != nil {
		return nil, err
	}
	d := pol.Decide(in)
	return &mayflyv1.ExplainResponse{Decision: decisionProto(subject.ID, req.GetEntitlement(), d)}, nil
}

// ListEntitlements implements mayflyv1.PolicyServiceServer.
func (s *Server) ListEntitlements(ctx context.Context, req *mayflyv1.ListEntitlementsRequest) (*mayflyv1.ListEntitlementsResponse, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := validPageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after := req.GetPageToken()
	if after != "" {
		if err := validEntitlement("page_token", after); err != nil {
			return nil, err
		}
	}
	usable := s.cfg.Policy().Usable(p, s.cfg.Now()) // sorted by name
	resp := &mayflyv1.ListEntitlementsResponse{}
	for _, u := range usable {
		if after != "" && u.Entitlement.Name <= after {
			continue
		}
		if len(resp.Entitlements) == size {
			resp.NextPageToken = resp.Entitlements[size-1].Name
			break
		}
		e := u.Entitlement
		out := &mayflyv1.Entitlement{
			Name:        e.Name,
			Description: e.Description,
			Owner:       e.Owner,
			Issuer:      e.Issuer,
			Ttl:         durationpb.New(u.TTL),
			MaxTtl:      durationpb.New(e.MaxTTL),
			GrantId:     u.GrantID,
		}
		if iss, ok := s.cfg.Issuers[e.Issuer]; ok {
			out.Revocable, out.RevocableReason = iss.Revocability(e.Params)
		}
		resp.Entitlements = append(resp.Entitlements, out)
	}
	return resp, nil
}

// principalFromSubject builds the hypothetical principal an admin explains
// for. A human's groups are not known here, so group grants are not
// considered for "user:" subjects.
func principalFromSubject(subject string) (authn.Principal, error) {
	switch {
	case strings.HasPrefix(subject, "spiffe://"):
		id, err := spiffeid.FromString(subject)
		if err != nil {
			return authn.Principal{}, invalidArg("subject", "not a SPIFFE ID: %v", err)
		}
		return authn.Principal{Kind: authn.KindWorkload, ID: id.String(), TrustDomain: id.TrustDomain().Name()}, nil
	case strings.HasPrefix(subject, "user:") && len(subject) > len("user:"):
		if err := validText("subject", subject, 256, true); err != nil {
			return authn.Principal{}, err
		}
		return authn.Principal{Kind: authn.KindHuman, ID: subject}, nil
	}
	return authn.Principal{}, invalidArg("subject", "must be a SPIFFE ID (spiffe://…) or a user (user:NAME)")
}
