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

// UnaryInterceptor authenticates every call except health checks, puts the
// Principal into the context, and turns a handler panic into Internal
// without taking the broker down.
func UnaryInterceptor(a Authenticator, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer recoverPanic(log, info.FullMethod, &err)
		if !strings.HasPrefix(info.FullMethod, publicPrefix) {
			p, aerr := a.Authenticate(ctx)
			if aerr != nil {
				log.Info("unauthenticated call refused", "method", info.FullMethod, "error", aerr)
				return nil, authnStatus(aerr)
			}
			ctx = authn.WithPrincipal(ctx, p)
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streaming calls.
func StreamInterceptor(a Authenticator, log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer recoverPanic(log, info.FullMethod, &err)
		if strings.HasPrefix(info.FullMethod, publicPrefix) {
			return handler(srv, ss)
		}
		p, aerr := a.Authenticate(ss.Context())
		if aerr != nil {
			log.Info("unauthenticated call refused", "method", info.FullMethod, "error", aerr)
			return authnStatus(aerr)
		}
		return handler(srv, &principalStream{ServerStream: ss, ctx: authn.WithPrincipal(ss.Context(), p)})
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
