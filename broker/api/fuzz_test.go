package api

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

const fuzzPolicy = `
version: 1
trust_domains: [mayfly.test]
entitlements:
  orders-api:
    description: fuzz target
    owner: user:alice
    issuer: jwt
    jwt: { audience: https://orders.mayfly.test }
    ttl: 1m
    max_ttl: 5m
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: fuzzing
        until: 2099-12-31
`

func fuzzServer(f *testing.F) *Server {
	iss, err := jwt.New(jwt.Config{IssuerURL: "https://127.0.0.1:7444"})
	if err != nil {
		f.Fatal(err)
	}
	pol, err := policy.Parse([]byte(fuzzPolicy), policy.Options{Issuers: map[string]func(*yaml.Node) (any, error){"jwt": iss.DecodeParams}})
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(Config{
		Policy:  func() *policy.Policy { return pol },
		Store:   memory.New(),
		Issuers: map[string]issuer.Issuer{"jwt": iss},
		JWT:     iss,
	})
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// allowed lists the codes request handling may answer with for bad input;
// anything else (Internal, Unknown, a panic) is a bug.
var allowed = map[codes.Code]bool{
	codes.OK: true, codes.InvalidArgument: true, codes.PermissionDenied: true,
	codes.NotFound: true, codes.FailedPrecondition: true, codes.Aborted: true,
}

// FuzzRequestValidation feeds arbitrary wire bytes, decoded as each request
// message, to the handlers as an authenticated workload. No input may
// panic or produce an unexpected code, and an issued lease never exceeds
// the policy's max_ttl.
func FuzzRequestValidation(f *testing.F) {
	s := fuzzServer(f)
	seed := func(m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&mayflyv1.IssueCredentialRequest{Entitlement: "orders-api", Ttl: durationpb.New(time.Hour), Reason: "r", Ticket: "INC-1", RequestId: "x"})
	seed(&mayflyv1.IssueCredentialRequest{Entitlement: "Orders-API\u00e9", Ttl: &durationpb.Duration{Seconds: -1, Nanos: 5}})
	seed(&mayflyv1.RenewLeaseRequest{LeaseId: "01m8k14j7m5sy75306dz11vya2", Ttl: durationpb.New(time.Minute)})
	seed(&mayflyv1.ListLeasesRequest{PageSize: 7, States: []mayflyv1.LeaseState{1, 99}, PageToken: "\x00"})
	seed(&mayflyv1.ExplainRequest{Entitlement: "orders-api", Subject: "spiffe://mayfly.test/x"})

	ctx := authn.WithPrincipal(context.Background(), authn.Principal{
		Kind: authn.KindWorkload, ID: "spiffe://mayfly.test/workload/orders", TrustDomain: "mayfly.test", Method: authn.MethodX509SVID,
	})
	check := func(t *testing.T, what string, err error) {
		if c := status.Code(err); !allowed[c] {
			t.Fatalf("%s: unexpected code %v: %v", what, c, err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var issue mayflyv1.IssueCredentialRequest
		if proto.Unmarshal(data, &issue) == nil {
			resp, err := s.IssueCredential(ctx, &issue)
			check(t, "IssueCredential", err)
			if err == nil {
				l := resp.GetLease()
				if life := l.GetExpiresAt().AsTime().Sub(l.GetIssuedAt().AsTime()); life > 5*time.Minute || life <= 0 {
					t.Fatalf("issued a lease of %v, policy max_ttl is 5m", life)
				}
			}
		}
		var renew mayflyv1.RenewLeaseRequest
		if proto.Unmarshal(data, &renew) == nil {
			_, err := s.RenewLease(ctx, &renew)
			check(t, "RenewLease", err)
			_, err = s.GetLease(ctx, &mayflyv1.GetLeaseRequest{LeaseId: renew.GetLeaseId()})
			check(t, "GetLease", err)
		}
		var list mayflyv1.ListLeasesRequest
		if proto.Unmarshal(data, &list) == nil {
			_, err := s.ListLeases(ctx, &list)
			check(t, "ListLeases", err)
		}
		var explain mayflyv1.ExplainRequest
		if proto.Unmarshal(data, &explain) == nil {
			_, err := s.Explain(ctx, &explain)
			check(t, "Explain", err)
		}
		var in mayflyv1.IntrospectRequest
		if proto.Unmarshal(data, &in) == nil {
			_, err := s.Introspect(ctx, &in)
			check(t, "Introspect", err)
		}
	})
}
