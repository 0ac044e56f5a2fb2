package chaos

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/metrics"
	"github.com/mayflyhq/mayfly/broker/revoker"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// vaultOutage is how long Vault stays down at expiry time: 10 minutes with
// -chaos.full, 20 s in CI.
func vaultOutage() time.Duration {
	if Full() {
		return 10 * time.Minute
	}
	return 20 * time.Second
}

const vaultPolicy = `
version: 1
trust_domains: [mayfly.test]
entitlements:
  chaos-cert:
    description: short-lived certificates from Vault PKI
    owner: user:ops
    issuer: vault
    vault:
      pki: { role: chaos, common_name: "{{lease_id}}.chaos.internal" }
      token_policies: [chaos-pki]
    ttl: 8s
    max_ttl: 30s
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: fault cases
        until: 2099-12-31
`

// TestCase4VaultDownAtExpiry: 24 certificates from a real Vault's PKI
// engine (8-second leases) fall due while Vault is frozen (SIGSTOP: every request hangs
// until it times out) for the outage. The revoker must keep retrying and
// never give a lease up as irrevocable while Vault is only down; the
// overdue-revocations gauge must show the late leases; and once Vault is
// back every lease must be revoked within 30 s, its Vault lease and
// per-lease token gone.
func TestCase4VaultDownAtExpiry(t *testing.T) {
	Repeat(t, Case{ID: "4", Title: "Vault down " + vaultOutage().String() + " at expiry time"}, func(r *Run) {
		v := testenv.Vault(r.T)
		c := v.Client
		must := func(what string, err error) {
			if err != nil {
				r.Fatalf("%s: %v", what, err)
			}
		}
		must("mount pki", c.Sys().Mount("pki", &vaultapi.MountInput{Type: "pki", Config: vaultapi.MountConfigInput{MaxLeaseTTL: "24h"}}))
		_, err := c.Logical().Write("pki/root/generate/internal", map[string]any{"common_name": "Mayfly chaos CA", "ttl": "24h"})
		must("pki root", err)
		_, err = c.Logical().Write("pki/roles/chaos", map[string]any{"allow_any_name": true, "generate_lease": true, "max_ttl": "1h"})
		must("pki role", err)
		must("policy", c.Sys().PutPolicy("chaos-pki", `path "pki/issue/chaos" { capabilities = ["update"] }`))

		iss, err := vault.New(vault.Config{Address: v.Addr, Auth: vault.Auth{Token: v.RootToken}, RequestTimeout: 3 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		must("vault issuer", err)
		reg := prometheus.NewRegistry()
		env := brokertest.Start(r.T, brokertest.Options{Policy: []byte(vaultPolicy), Issuers: []issuer.Issuer{iss},
			Registry: reg, StatsInterval: 500 * time.Millisecond,
			Revoker: revoker.Config{MaxAttempts: 3, BackoffBase: 500 * time.Millisecond, UnavailableBackoffMax: 10 * time.Second, Hold: 10 * time.Second}})
		client := mayflyv1.NewCredentialServiceClient(env.Dial(r.T, "spiffe://mayfly.test/workload/certs"))
		ctx := context.Background()
		const n = 24
		for range n {
			resp, err := client.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "chaos-cert"})
			must("issue", err)
			r.Ledger.Add(resp, "broker", "")
		}

		// The check at the end can fail: a live lease and token are found.
		live, err := AllLeases(ctx, env.Store)
		must("leases", err)
		ref, err := vault.ParseRef(live[len(live)-1].ExternalRef)
		must("lease reference", err)
		if sec, err := c.Sys().Lookup(ref.LeaseID); err != nil || sec == nil {
			r.Fatalf("the Vault lease of an active lease is not found: %v", err)
		}
		if sec, err := c.Auth().Token().LookupAccessor(ref.Accessor); err != nil || sec == nil {
			r.Fatalf("the per-lease token of an active lease is not found: %v", err)
		}

		// Vault freezes before the first certificate falls due.
		if first := live[0].ExpiresAt; time.Until(first) < time.Second {
			r.Fatalf("issuing %d certificates took so long that the first is due in %v: the machine is too slow for this case", n, time.Until(first))
		}
		v.Pause()
		frozen := time.Now()
		maxOverdue := 0.0
		for time.Since(frozen) < vaultOutage() {
			time.Sleep(500 * time.Millisecond)
			maxOverdue = max(maxOverdue, readMetric(r.T, reg, metrics.NameRevocationsOverdue))
			ls, err := AllLeases(ctx, env.Store)
			must("leases", err)
			for _, l := range ls {
				if l.State == lease.StateIrrevocable {
					r.Fatalf("lease %s given up as irrevocable %v into the outage (attempts %d)", l.ID, time.Since(frozen).Round(time.Second), l.Attempts)
				}
				if l.State == lease.StateRevoked {
					r.Fatalf("lease %s recorded revoked while Vault was frozen", l.ID)
				}
			}
		}
		r.Figure("overdue revocations gauge during the outage (max)", maxOverdue, "")
		if maxOverdue < n {
			r.Errorf("the overdue gauge showed at most %v of the %d late leases", maxOverdue, n)
		}
		ls, err := AllLeases(ctx, env.Store)
		must("leases", err)
		attempts := 0
		for _, l := range ls {
			attempts = max(attempts, l.Attempts)
		}
		r.Count("most attempts on one lease during the outage", attempts)

		v.Resume()
		back := time.Now()
		ended, err := WaitTerminal(ctx, env.Store, back.Add(30*time.Second))
		must("wait", err)
		var worst time.Duration
		for _, l := range ended {
			if l.State != lease.StateRevoked {
				r.Errorf("lease %s ended %s, want revoked", l.ID, l.State)
				continue
			}
			worst = max(worst, l.RevokedAt.Sub(back))
		}
		r.Duration("revoked after Vault's return (worst)", worst)
		if worst > 30*time.Second {
			r.Errorf("the last lease was revoked %v after Vault returned, want within 30s", worst)
		}
		// Vault no longer holds the certificates' leases nor the per-lease
		// tokens. (Expired certificates do not go on the CRL: Vault skips
		// them, as they are invalid already.)
		left := 0
		for _, l := range ended {
			ref, err := vault.ParseRef(l.ExternalRef)
			must("lease reference", err)
			if sec, err := c.Sys().Lookup(ref.LeaseID); err == nil && sec != nil {
				left++
			}
			if sec, err := c.Auth().Token().LookupAccessor(ref.Accessor); err == nil && sec != nil {
				left++
			}
		}
		r.Count("Vault leases or tokens left", left)
		if left != 0 {
			r.Errorf("%d Vault leases or per-lease tokens outlived the revocation", left)
		}
		time.Sleep(time.Second) // the gauge refreshes every 500ms
		if g := readMetric(r.T, reg, metrics.NameRevocationsOverdue); g != 0 {
			r.Errorf("the overdue gauge still reads %v after every lease was revoked", g)
		}
	})
}

// readMetric reads a gauge or counter without labels from reg; 0 when
// the broker has not exported it yet (a counter never incremented).
func readMetric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		if g := mf.GetMetric()[0].GetGauge(); g != nil {
			return g.GetValue()
		}
		return mf.GetMetric()[0].GetCounter().GetValue()
	}
	return 0
}
