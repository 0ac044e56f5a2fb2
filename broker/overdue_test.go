package broker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/broker/metrics"
	"github.com/mayflyhq/mayfly/broker/revoker"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// downIssuer mints raw secrets and fails every revocation with
// ErrUnavailable while down is set: a backend that is unreachable.
type downIssuer struct{ down atomic.Bool }

func (d *downIssuer) Name() string                         { return "gate" }
func (d *downIssuer) DecodeParams(*yaml.Node) (any, error) { return nil, nil }
func (d *downIssuer) Revocability(any) (bool, string)      { return true, "" }
func (d *downIssuer) Renew(context.Context, *lease.Lease, any, time.Time) (*issuer.Credential, error) {
	return nil, nil
}
func (d *downIssuer) Issue(_ context.Context, req issuer.Request) (*issuer.Credential, error) {
	return &issuer.Credential{Kind: issuer.KindRaw, ExpiresAt: req.Lease.ExpiresAt, Fields: map[string]string{"v": "x"}}, nil
}
func (d *downIssuer) Revoke(context.Context, *lease.Lease) error {
	if d.down.Load() {
		return fmt.Errorf("backend: %w: connection refused", issuer.ErrUnavailable)
	}
	return nil
}

// storeOnly hides a store's Count, as the Redis store has none.
type storeOnly struct{ lease.Store }

// TestOverdueGaugeWithoutCounter: with a lease store that cannot count
// (Redis), the overdue-revocations gauge still shows leases whose
// revocation keeps failing past their end, and drops to 0 once they are
// revoked.
func TestOverdueGaugeWithoutCounter(t *testing.T) {
	iss := &downIssuer{}
	iss.down.Store(true)
	reg := prometheus.NewRegistry()
	pol := `
version: 1
trust_domains: [mayfly.test]
entitlements:
  slow-secret:
    description: a secret from a backend that goes down
    owner: user:alice
    issuer: gate
    ttl: 1s
    max_ttl: 1s
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: tests
        until: 2099-12-31
`
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(pol), Issuers: []issuer.Issuer{iss},
		Store: storeOnly{memory.New()}, Registry: reg, StatsInterval: 100 * time.Millisecond,
		Revoker: revoker.Config{BackoffBase: 100 * time.Millisecond, UnavailableBackoffMax: 300 * time.Millisecond, MaxIdle: 50 * time.Millisecond}})
	c := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	for range 3 {
		if _, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "slow-secret"}); err != nil {
			t.Fatal(err)
		}
	}
	overdue := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == metrics.NameRevocationsOverdue {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	waitFor := func(what string, ok func(float64) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(overdue()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the gauge reads %v", what, overdue())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("backend down past the leases' end", func(v float64) bool { return v == 3 })
	iss.down.Store(false)
	waitFor("backend back", func(v float64) bool { return v == 0 })
}
