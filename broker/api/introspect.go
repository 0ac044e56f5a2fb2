package api

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/lease"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// maxTokenBytes bounds an introspected token.
const maxTokenBytes = 16 << 10

// Introspect implements mayflyv1.IntrospectionServiceServer.
func (s *Server) Introspect(ctx context.Context, req *mayflyv1.IntrospectRequest) (*mayflyv1.IntrospectResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	switch {
	case req.GetToken() == "":
		return nil, invalidArg("token", "required")
	case len(req.GetToken()) > maxTokenBytes:
		return nil, invalidArg("token", "too long (at most %d bytes)", maxTokenBytes)
	case s.cfg.JWT == nil:
		return nil, status.Error(codes.FailedPrecondition, "this broker runs no JWT issuer")
	}
	in, err := s.cfg.JWT.IntrospectToken(ctx, req.GetToken(), s.LeaseActive)
	if err != nil {
		s.log.Warn("introspection could not consult the lease store", "error", err)
		return nil, status.Error(codes.Unavailable, "lease store unavailable; cannot vouch for the token, retry later")
	}
	if !in.Active {
		return &mayflyv1.IntrospectResponse{Active: false}, nil
	}
	c := in.Claims
	return &mayflyv1.IntrospectResponse{
		Active:      true,
		Subject:     c.Subject,
		Audience:    c.Audience,
		Entitlement: c.Entitlement,
		LeaseId:     c.ID,
		Scopes:      c.Scopes,
		Issuer:      c.Issuer,
		IssuedAt:    ts(c.IssuedAt),
		ExpiresAt:   ts(c.ExpiresAt),
	}, nil
}

// LeaseActive reports whether the lease whose id is jti is active now. It
// is the lease lookup behind introspection (gRPC and HTTPS).
func (s *Server) LeaseActive(ctx context.Context, jti string) (bool, error) {
	if !lease.ValidID(jti) {
		return false, nil
	}
	l, err := s.cfg.Store.Get(ctx, jti)
	if errors.Is(err, lease.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return l.Active(s.cfg.Now()), nil
}
