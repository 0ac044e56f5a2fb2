package api

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/metrics"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// Config wires the handlers to the broker's components.
type Config struct {
	// Policy returns the policy in force (it may change between calls).
	Policy func() *policy.Policy
	// Store holds the leases.
	Store lease.Store
	// Issuers are the backends by name.
	Issuers map[string]issuer.Issuer
	// Access is the access-request service (requests, approvals, grants,
	// break-glass, reviews); nil leaves those RPCs Unimplemented and
	// issuance decided on standing grants alone.
	Access *access.Service
	// JWT is the broker's own JWT issuer, used for introspection (may be nil).
	JWT *jwt.Issuer
	// Wake tells the revoker a lease became due early (may be nil).
	Wake func()
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Metrics (may be nil).
	Metrics *metrics.Metrics
	// Audit records the evidence of what the API does (nil: nothing is
	// recorded).
	Audit Auditor
	// PendingTimeout is how long a lease may stay pending before the
	// revoker reaps it (default 30s). IssueTimeout bounds the backend call
	// and must be shorter (default PendingTimeout/2).
	PendingTimeout, IssueTimeout time.Duration
}

// Auditor records audit events (the broker wraps its audit.Log).
type Auditor interface {
	// Must records e before the action it describes; an error means it
	// could not be recorded and the action must not happen.
	Must(ctx context.Context, e audit.Event) error
	// Record records e, which describes something that happened or must
	// happen whatever the audit trail's state (a revocation, a refusal).
	// It never fails: what cannot be recorded now is kept and retried.
	Record(e audit.Event)
}

// noAudit records nothing.
type noAudit struct{}

func (noAudit) Must(context.Context, audit.Event) error { return nil }
func (noAudit) Record(audit.Event)                      {}

// Server implements the broker's gRPC services.
type Server struct {
	mayflyv1.UnimplementedCredentialServiceServer
	mayflyv1.UnimplementedPolicyServiceServer
	mayflyv1.UnimplementedIntrospectionServiceServer
	mayflyv1.UnimplementedAdminServiceServer
	mayflyv1.UnimplementedAccessServiceServer
	mayflyv1.UnimplementedReviewServiceServer

	cfg     Config
	log     *slog.Logger
	records recordSampler
	audited bool         // Config.Audit was set: build events only then
	issuing atomic.Int64 // IssueCredential calls in flight
}

// Issuing says whether an IssueCredential call is in flight: the revoker
// slows down while callers wait for credentials (revoker.Config.Busy).
func (s *Server) Issuing() bool { return s.issuing.Load() > 0 }

// New validates cfg and returns the handlers.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Policy == nil:
		return nil, errors.New("api: Config.Policy is required")
	case cfg.Store == nil:
		return nil, errors.New("api: Config.Store is required")
	case len(cfg.Issuers) == 0:
		return nil, errors.New("api: Config.Issuers is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Wake == nil {
		cfg.Wake = func() {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	audited := cfg.Audit != nil
	if !audited {
		cfg.Audit = noAudit{}
	}
	if cfg.PendingTimeout <= 0 {
		cfg.PendingTimeout = 30 * time.Second
	}
	if cfg.IssueTimeout <= 0 || cfg.IssueTimeout >= cfg.PendingTimeout {
		cfg.IssueTimeout = cfg.PendingTimeout / 2
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "api"), audited: audited}, nil
}

// Register adds every service to s.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	mayflyv1.RegisterCredentialServiceServer(g, s)
	mayflyv1.RegisterPolicyServiceServer(g, s)
	mayflyv1.RegisterIntrospectionServiceServer(g, s)
	mayflyv1.RegisterAdminServiceServer(g, s)
	mayflyv1.RegisterAccessServiceServer(g, s)
	mayflyv1.RegisterReviewServiceServer(g, s)
}
