package broker_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// gateIssuer is an issuer whose Issue waits for the test: it stands for a
// slow backend, so a test can stop the broker with an issuance in flight.
type gateIssuer struct {
	started chan struct{}
	release chan struct{}
}

func (g *gateIssuer) Name() string                               { return "gate" }
func (g *gateIssuer) DecodeParams(*yaml.Node) (any, error)       { return nil, nil }
func (g *gateIssuer) Revocability(any) (bool, string)            { return true, "" }
func (g *gateIssuer) Revoke(context.Context, *lease.Lease) error { return nil }
func (g *gateIssuer) Renew(context.Context, *lease.Lease, any, time.Time) (*issuer.Credential, error) {
	return nil, nil
}
func (g *gateIssuer) Issue(ctx context.Context, req issuer.Request) (*issuer.Credential, error) {
	close(g.started)
	<-g.release
	return &issuer.Credential{Kind: issuer.KindRaw, ExpiresAt: req.Lease.ExpiresAt, Fields: map[string]string{"value": "x"}}, nil
}

const gatePolicy = `
version: 1
trust_domains: [mayfly.test]
entitlements:
  slow-secret:
    description: a secret from a slow backend
    owner: user:alice
    issuer: gate
    ttl: 1m
    max_ttl: 1m
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: tests
        until: 2099-12-31
`

// TestGracefulShutdown: stopping the broker with an issuance in flight
// lets it complete (the caller gets its credential under an active lease);
// health never reports SERVING again and new calls are refused meanwhile;
// and reflection answers
// authenticated callers while the broker runs.
func TestGracefulShutdown(t *testing.T) {
	gate := &gateIssuer{started: make(chan struct{}), release: make(chan struct{})}
	env, err := brokertest.New(brokertest.Options{Policy: []byte(gatePolicy), Issuers: []issuer.Issuer{gate}})
	if err != nil {
		t.Fatal(err)
	}
	conn := env.Dial(t, workloadID)

	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	listed, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range listed.GetListServicesResponse().GetService() {
		found = found || s.GetName() == "mayfly.v1.CredentialService"
	}
	if !found {
		t.Fatalf("reflection lists %v", listed.GetListServicesResponse().GetService())
	}
	_ = refl.CloseSend()

	type result struct {
		resp *mayflyv1.IssueCredentialResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := mayflyv1.NewCredentialServiceClient(conn).IssueCredential(context.Background(), &mayflyv1.IssueCredentialRequest{Entitlement: "slow-secret"})
		done <- result{resp, err}
	}()
	<-gate.started
	closed := make(chan error, 1)
	go func() { closed <- env.Close() }()

	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(5 * time.Second)
	for {
		// NOT_SERVING, or Unavailable once the server has stopped taking
		// calls (GOAWAY follows NOT_SERVING closely): never SERVING again.
		h, err := health.Check(ctx(t), &healthpb.HealthCheckRequest{})
		if (err == nil && h.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING) || status.Code(err) == codes.Unavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health during shutdown: %v, %v", h, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// New calls are refused while the in-flight one is still held. Health
	// turns NOT_SERVING a moment before the server stops taking calls, so
	// a call on a new connection may still be taken in that moment; it
	// must be refused soon after.
	deadline = time.Now().Add(2 * time.Second)
	for {
		_, err = mayflyv1.NewPolicyServiceClient(env.Dial(t, workloadID)).ListEntitlements(ctx(t), &mayflyv1.ListEntitlementsRequest{})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new calls were still accepted 2s into shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}

	close(gate.release)
	r := <-done
	if r.err != nil {
		t.Fatalf("in-flight issuance: %v", r.err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	l, err := env.Store.Get(context.Background(), r.resp.GetLease().GetId())
	if err != nil || l.State != lease.StateActive {
		t.Fatalf("lease after shutdown = %+v, %v", l, err)
	}
}
