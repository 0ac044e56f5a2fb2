package api

import (
	"context"
	"errors"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// fakeSessionIssuer is a test double for an issuer whose sessions can only
// be cut off all at once (like AWS STS); it records KillSwitch calls.
type fakeSessionIssuer struct {
	calls  []time.Time
	result error
}

func (f *fakeSessionIssuer) Name() string                               { return "sessions" }
func (f *fakeSessionIssuer) DecodeParams(*yaml.Node) (any, error)       { return "params", nil }
func (f *fakeSessionIssuer) Revocability(any) (bool, string)            { return false, "sessions run to expiry" }
func (f *fakeSessionIssuer) Revoke(context.Context, *lease.Lease) error { return nil }
func (f *fakeSessionIssuer) Issue(context.Context, issuer.Request) (*issuer.Credential, error) {
	return nil, errors.New("not used")
}
func (f *fakeSessionIssuer) Renew(context.Context, *lease.Lease, any, time.Time) (*issuer.Credential, error) {
	return nil, nil
}
func (f *fakeSessionIssuer) KillSwitch(_ context.Context, params any, before time.Time) error {
	if params != "params" {
		return errors.New("wrong params")
	}
	f.calls = append(f.calls, before)
	return f.result
}

func TestKillSwitchCutsOffSessions(t *testing.T) {
	fake := &fakeSessionIssuer{}
	pol, err := policy.Parse([]byte(`
version: 1
admins: ["user:ops"]
entitlements:
  s3-read:
    description: d
    owner: user:ops
    issuer: sessions
    ttl: 20m
    max_ttl: 1h
`), policy.Options{Issuers: map[string]func(*yaml.Node) (any, error){"sessions": fake.DecodeParams}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := New(Config{Policy: func() *policy.Policy { return pol }, Store: memory.New(),
		Issuers: map[string]issuer.Issuer{"sessions": fake}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := authn.WithPrincipal(context.Background(), authn.Principal{Kind: authn.KindHuman, ID: "user:ops"})
	byEnt := &mayflyv1.RevokeBySelectorRequest{Selector: &mayflyv1.RevokeBySelectorRequest_Entitlement{Entitlement: "s3-read"}}
	resp, err := s.RevokeBySelector(ctx, byEnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.calls) != 1 || !fake.calls[0].Equal(now) || len(resp.GetNotes()) != 1 || resp.GetNotes()[0].GetCode() != "sessions_cut_off" {
		t.Fatalf("calls %v, notes %v", fake.calls, resp.GetNotes())
	}
	fake.result = issuer.ErrNotSupported
	if resp, _ = s.RevokeBySelector(ctx, byEnt); resp.GetNotes()[0].GetCode() != "sessions_run_out" {
		t.Fatalf("not enabled: notes %v", resp.GetNotes())
	}
	fake.result = errors.New("AccessDenied secret-ish backend text")
	resp, _ = s.RevokeBySelector(ctx, byEnt)
	if n := resp.GetNotes()[0]; n.GetCode() != "sessions_not_cut_off" || len(n.GetMessage()) == 0 {
		t.Fatalf("failure: notes %v", resp.GetNotes())
	}
	// By subject: never cuts off a whole role.
	calls := len(fake.calls)
	if _, err := s.RevokeBySelector(ctx, &mayflyv1.RevokeBySelectorRequest{Selector: &mayflyv1.RevokeBySelectorRequest_Subject{Subject: "user:bob"}}); err != nil {
		t.Fatal(err)
	}
	if len(fake.calls) != calls {
		t.Fatal("a kill switch by subject cut off the role's sessions")
	}
}
