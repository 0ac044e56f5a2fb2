package chaos

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// ttlPolicy: a standing grant and a requestable entitlement approved at
// once, both of the probe backend, whose maximum lifetime is 1h.
const ttlPolicy = `
version: 1
trust_domains: [mayfly.test]
admins: ["spiffe://mayfly.test/admin/*"]
entitlements:
  ttl-standing:
    description: standing grant
    owner: user:ops
    issuer: probe
    ttl: 10m
    max_ttl: 30m
    standing:
      - subject: spiffe://mayfly.test/workload/ttl
        purpose: TTL matrix
        until: 2099-12-31
  ttl-request:
    description: request grant, approved at once
    owner: user:ops
    issuer: probe
    ttl: 10m
    max_ttl: 30m
    requestable_by: ["spiffe://mayfly.test/workload/ttl"]
    approval: { approvals: 0, max_duration: 1h }
`

// TestAttackTTL: the effective TTL is always the least of what was asked,
// the entitlement's max_ttl, the grant's end and the backend's maximum,
// at issuance and across renewals, and nothing ever passes the hard end.
// The broker's clock is moved by hand, so every figure is exact.
func TestAttackTTL(t *testing.T) {
	e := startAttackEnv(t, attackOptions{policy: ttlPolicy, clock: true})
	cc := e.Dial(t, "spiffe://mayfly.test/workload/ttl")
	creds := mayflyv1.NewCredentialServiceClient(cc)
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return c
	}
	issue := func(t *testing.T, ent string, ttl time.Duration) *mayflyv1.IssueCredentialResponse {
		t.Helper()
		req := &mayflyv1.IssueCredentialRequest{Entitlement: ent}
		if ttl > 0 {
			req.Ttl = durationpb.New(ttl)
		}
		resp, err := creds.IssueCredential(ctx(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// check asserts the lease's lifetime and hard end after issuance and
	// that the backend was asked for exactly the lease's expiry.
	check := func(t *testing.T, resp *mayflyv1.IssueCredentialResponse, ttl, hard time.Duration, clamped bool) {
		t.Helper()
		l := resp.GetLease()
		issued := l.GetIssuedAt().AsTime()
		if got := resp.GetEffectiveTtl().AsDuration(); got != ttl {
			t.Errorf("effective ttl %v, want %v", got, ttl)
		}
		if got := l.GetExpiresAt().AsTime().Sub(issued); got != ttl {
			t.Errorf("lease lifetime %v, want %v", got, ttl)
		}
		if got := l.GetHardEnd().AsTime().Sub(issued); got != hard {
			t.Errorf("hard end %v after issue, want %v", got, hard)
		}
		if resp.GetTtlClamped() != clamped {
			t.Errorf("ttl_clamped %v, want %v", resp.GetTtlClamped(), clamped)
		}
		backendAsked(t, e, l.GetId(), l.GetExpiresAt().AsTime())
	}
	renew := func(t *testing.T, id string, ttl time.Duration) (*mayflyv1.RenewLeaseResponse, error) {
		req := &mayflyv1.RenewLeaseRequest{LeaseId: id}
		if ttl > 0 {
			req.Ttl = durationpb.New(ttl)
		}
		return creds.RenewLease(ctx(), req)
	}
	issuance := func(req, want time.Duration, clamped bool) func(t *testing.T) {
		return func(t *testing.T) { check(t, issue(t, "ttl-standing", req), want, 30*time.Minute, clamped) }
	}

	Matrix(t, Case{ID: "A3", Title: "TTL: requested vs max_ttl vs grant end vs backend maximum, across renewals"}, []Attack{
		{"issue: default ttl", issuance(0, 10*time.Minute, false)},
		{"issue: shorter than ttl", issuance(5*time.Minute, 5*time.Minute, false)},
		{"issue: between ttl and max_ttl", issuance(20*time.Minute, 20*time.Minute, false)},
		{"issue: over max_ttl is clamped", issuance(2*time.Hour, 30*time.Minute, true)},
		{"issue: a second over max_ttl is clamped", issuance(30*time.Minute+time.Second, 30*time.Minute, true)},
		{"renewals: each the least of asked, max_ttl and hard end; none past it", func(t *testing.T) {
			resp := issue(t, "ttl-standing", 10*time.Minute)
			id := resp.GetLease().GetId()
			hard := resp.GetLease().GetHardEnd().AsTime()
			steps := []struct {
				advance, ask time.Duration
				want         time.Duration // expiry from the clock after advancing; 0: the hard end
				code         codes.Code
			}{
				{5 * time.Minute, 15 * time.Minute, 15 * time.Minute, codes.OK}, // what was asked
				{time.Minute, 20 * time.Minute, 20 * time.Minute, codes.OK},     // what was asked
				{time.Minute, 2 * time.Hour, 0, codes.OK},                       // max_ttl from now is past the hard end: the hard end
				{time.Minute, time.Hour, -1, codes.FailedPrecondition},          // at the hard end already
				{30 * time.Minute, time.Minute, -1, codes.FailedPrecondition},   // past it: expired
			}
			for i, s := range steps {
				e.Clock.Advance(s.advance)
				r, err := renew(t, id, s.ask)
				now := e.Clock.Now()
				if s.code != codes.OK {
					wantStatus(t, err, s.code, "")
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				exp := r.GetLease().GetExpiresAt().AsTime()
				want := now.Add(s.want)
				if s.want == 0 {
					want = hard
				}
				if !exp.Equal(want) {
					t.Errorf("step %d: renewed to %v after now, want %v", i, exp.Sub(now), want.Sub(now))
				}
				if exp.After(hard) {
					t.Errorf("step %d: renewed past the hard end", i)
				}
				backendAsked(t, e, id, exp)
			}
		}},
		{"request grant: its end caps issuance and renewal", func(t *testing.T) {
			acc := mayflyv1.NewAccessServiceClient(cc)
			r, err := acc.CreateAccessRequest(ctx(), &mayflyv1.CreateAccessRequestRequest{Entitlement: "ttl-request",
				Reason: "matrix", Duration: durationpb.New(12 * time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			if r.GetRequest().GetState() != mayflyv1.AccessRequestState_ACCESS_REQUEST_STATE_APPROVED {
				t.Fatalf("request %v, want approved at once", r.GetRequest().GetState())
			}
			check(t, issue(t, "ttl-request", 2*time.Hour), 12*time.Minute, 12*time.Minute, true)
			resp := issue(t, "ttl-request", 5*time.Minute) // renewable up to the grant's end
			check(t, resp, 5*time.Minute, 12*time.Minute, false)
			e.Clock.Advance(3 * time.Minute)
			rr, err := renew(t, resp.GetLease().GetId(), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if got, end := rr.GetLease().GetExpiresAt().AsTime(), resp.GetLease().GetHardEnd().AsTime(); !got.Equal(end) || !rr.GetTtlClamped() {
				t.Errorf("renewed to %v (clamped %v), want the grant's end %v", got, rr.GetTtlClamped(), end)
			}
			_, err = renew(t, resp.GetLease().GetId(), time.Minute)
			wantStatus(t, err, codes.FailedPrecondition, "")
		}},
		{"backend maximum: a max_ttl over it never takes effect", func(t *testing.T) {
			bad := []byte(strings.Replace(ttlPolicy, "max_ttl: 30m", "max_ttl: 2h", 1))
			admin := mayflyv1.NewPolicyServiceClient(e.Dial(t, "spiffe://mayfly.test/admin/ops"))
			_, err := admin.WhatIf(ctx(), &mayflyv1.WhatIfRequest{Policy: bad})
			wantStatus(t, err, codes.InvalidArgument, "longer than the probe issuer allows")
			// And a reload of that file is refused: issuance keeps max_ttl 30m.
			if err := os.WriteFile(e.PolicyPath, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second) // the broker looks at its policy file every couple of seconds
			check(t, issue(t, "ttl-standing", 2*time.Hour), 30*time.Minute, 30*time.Minute, true)
		}},
	})
}

// backendAsked fails unless the probe backend's last call for lease id
// asked for expiry want (a credential never outlives its lease).
func backendAsked(t *testing.T, e *attackEnv, id string, want time.Time) {
	t.Helper()
	var last *ExpiryCall
	for _, c := range e.Probe.Expiries() {
		if c.LeaseID == id {
			c := c
			last = &c
		}
	}
	switch {
	case last == nil:
		t.Errorf("the backend was never asked for lease %s", id)
	case !last.ExpiresAt.Equal(want):
		t.Errorf("the backend was asked for expiry %v, the lease says %v", last.ExpiresAt, want)
	case last.ExpiresAt.After(last.HardEnd):
		t.Errorf("the backend was asked for expiry %v past the hard end %v", last.ExpiresAt, last.HardEnd)
	}
}
