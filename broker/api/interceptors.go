package api

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// Authenticator finds the caller of a call (broker/authn implements it).
type Authenticator interface {
	Authenticate(ctx context.Context) (authn.Principal, error)
}

// publicPrefix lists services that answer without a caller identity:
// health checks come from probes that hold no SVID.
const publicPrefix = "/grpc.health.v1.Health/"

// InterceptorOption adds to what the interceptors do.
type InterceptorOption func(*interceptor)

// OnRefused is called for every call refused before its handler runs
// (authentication failed, or the caller is over its quota), with the
// method and the status error returned: the broker audits them.
func OnRefused(f func(method string, p *authn.Principal, err error)) InterceptorOption {
	return func(i *interceptor) { i.onRefused = f }
}

// WithQuota limits each authenticated identity's calls (ResourceExhausted
// past it).
func WithQuota(q *Quota) InterceptorOption {
	return func(i *interceptor) { i.quota = q }
}

type interceptor struct {
	auth      Authenticator
	log       *slog.Logger
	onRefused func(method string, p *authn.Principal, err error)
	quota     *Quota
}

// admit authenticates a call and applies the quota.
func (i *interceptor) admit(ctx context.Context, method string) (context.Context, error) {
	p, aerr := i.auth.Authenticate(ctx)
	if aerr != nil {
		i.log.Info("unauthenticated call refused", "method", method, "error", aerr)
		err := authnStatus(aerr)
		if i.onRefused != nil {
			i.onRefused(method, nil, err)
		}
		return nil, err
	}
	if !i.quota.Allow(p.ID) {
		err := status.Errorf(codes.ResourceExhausted, "%s is over its quota of %s; slow down and retry with backoff", p.ID, i.quota)
		if i.onRefused != nil {
			i.onRefused(method, &p, err)
		}
		return nil, err
	}
	return authn.WithPrincipal(ctx, p), nil
}

// UnaryInterceptor authenticates every call except health checks, puts the
// Principal into the context, applies the quota, and turns a handler panic
// into Internal without taking the broker down.
func UnaryInterceptor(a Authenticator, log *slog.Logger, opts ...InterceptorOption) grpc.UnaryServerInterceptor {
	i := &interceptor{auth: a, log: log}
	for _, o := range opts {
		o(i)
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer recoverPanic(log, info.FullMethod, &err)
		if !strings.HasPrefix(info.FullMethod, publicPrefix) {
			if ctx, err = i.admit(ctx, info.FullMethod); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streaming calls.
func StreamInterceptor(a Authenticator, log *slog.Logger, opts ...InterceptorOption) grpc.StreamServerInterceptor {
	i := &interceptor{auth: a, log: log}
	for _, o := range opts {
		o(i)
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer recoverPanic(log, info.FullMethod, &err)
		if strings.HasPrefix(info.FullMethod, publicPrefix) {
			return handler(srv, ss)
		}
		ctx, err := i.admit(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
	}
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

func recoverPanic(log *slog.Logger, method string, err *error) {
	if r := recover(); r != nil {
		log.Error("handler panicked; the call failed but the broker keeps running", "method", method, "panic", r, "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error")
	}
}
