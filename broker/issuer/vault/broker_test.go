package vault_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/revoker"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

const workloadID = "spiffe://mayfly.test/workload/orders"

// brokerPolicyYAML grants the orders workload the database entitlement and
// three broken ones (bad input through the API).
const brokerPolicyYAML = `
version: 1
trust_domains: [mayfly.test]
entitlements:
  orders-db-ro:
    description: Read-only access to the orders database
    owner: user:alice
    issuer: vault
    vault:
      path: database/creds/orders-ro
      token_policies: [orders-ro]
    ttl: 15m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: the orders service reads orders
        until: 2099-12-31
  orders-db-ro-15m:
    description: Read-only access through a role whose default TTL is the entitlement's ttl
    owner: user:alice
    issuer: vault
    vault:
      path: database/creds/orders-15m
      token_policies: [orders-15m]
    ttl: 15m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: the orders service reads orders
        until: 2099-12-31
  orders-db-missing-role:
    description: A role that does not exist in Vault
    owner: user:alice
    issuer: vault
    vault:
      path: database/creds/orders-rw
      token_policies: [orders-any]
    ttl: 15m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: tests a missing role
        until: 2099-12-31
  orders-db-no-permission:
    description: Token policies that do not allow the path
    owner: user:alice
    issuer: vault
    vault:
      path: database/creds/orders-ro
      token_policies: [unrelated]
    ttl: 15m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: tests a permission error
        until: 2099-12-31
  app-config-kv:
    description: A KV secret, which has no lease
    owner: user:alice
    issuer: vault
    vault:
      path: secret/data/app
      token_policies: [kv-read]
    ttl: 15m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/orders
        purpose: tests a path without a lease
        until: 2099-12-31
`

// brokerEnv is a real broker with the Vault issuer in front of a fixture.
type brokerEnv struct {
	f    *fixture
	env  *brokertest.Env
	iss  *vault.Issuer
	cc   mayflyv1.CredentialServiceClient
	logs *syncBuffer
}

type brokerOpts struct {
	vaultAddr      string // default: the fixture's Vault
	requestTimeout time.Duration
	pendingTimeout time.Duration
	revoker        revoker.Config
}

// startBroker runs a broker whose vault issuer uses the token role
// "mayfly" with a non-root broker token; the broker's and the issuer's
// logs go to logs.
func startBroker(t *testing.T, f *fixture, o brokerOpts) *brokerEnv {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := f.cfg(f.roleToken, logs)
	cfg.Logger = logger
	cfg.TokenRole = "mayfly"
	if o.vaultAddr != "" {
		cfg.Address = o.vaultAddr
	}
	if o.requestTimeout > 0 {
		cfg.RequestTimeout = o.requestTimeout
	}
	iss := f.issuer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = iss.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(func() {
		if t.Failed() { // the broker's side of the story
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
					t.Log(line)
				}
			}
		}
	})
	env := brokertest.Start(t, brokertest.Options{
		Policy:         []byte(brokerPolicyYAML),
		Issuers:        []issuer.Issuer{iss},
		Logger:         logger,
		PendingTimeout: o.pendingTimeout,
		Revoker:        o.revoker,
	})
	return &brokerEnv{f: f, env: env, iss: iss, logs: logs,
		cc: mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))}
}

func tctx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// issue asks the broker for ent with ttl (0: the entitlement's).
func (b *brokerEnv) issue(t *testing.T, ent string, ttl time.Duration) (*mayflyv1.IssueCredentialResponse, error) {
	t.Helper()
	req := &mayflyv1.IssueCredentialRequest{Entitlement: ent}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	return b.cc.IssueCredential(tctx(t, 30*time.Second), req)
}

// storeLease reads the lease as the broker's store holds it.
func (b *brokerEnv) storeLease(t *testing.T, id string) *lease.Lease {
	t.Helper()
	l, err := b.env.Store.Get(tctx(t, 5*time.Second), id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitState waits until the lease reaches state (or fails t).
func (b *brokerEnv) waitState(t *testing.T, id string, state lease.State, within time.Duration) *lease.Lease {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l := b.storeLease(t, id)
		if l.State == state {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease %s is %s after %v (attempts %d, last error %q); want %s", id, l.State, within, l.Attempts, l.LastError, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitGone waits until the role left pg_roles and a login fails.
func waitGone(t *testing.T, f *fixture, user, password string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for !f.revoked(t, user, password) {
		if time.Now().After(deadline) {
			t.Fatalf("role %s still exists %v later", user, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Now()
}

// waitTokenGone waits until the per-lease token no longer exists (or
// fails t).
func waitTokenGone(t *testing.T, f *fixture, accessor string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for f.tokenAlive(t, accessor) {
		if time.Now().After(deadline) {
			t.Fatalf("the per-lease token is still alive %v after revocation", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBroker is the Vault issuer end to end through a real broker: a
// workload gets database credentials over mTLS, reads the orders table
// with them, renews, and revokes; a short lease expires and the revoker
// drops the role.
func TestBroker(t *testing.T) {
	f := newFixture(t)
	b := startBroker(t, f, brokerOpts{revoker: revoker.Config{MaxIdle: 200 * time.Millisecond}})

	t.Run("IssueConnectRenewRevoke", func(t *testing.T) {
		resp, err := b.issue(t, "orders-db-ro", 0)
		if err != nil {
			t.Fatal(err)
		}
		up := resp.GetCredential().GetUsernamePassword()
		if up.GetUsername() == "" || up.GetPassword() == "" {
			t.Fatalf("credential = %v; want a username and password", resp.GetCredential().GetKind())
		}
		l := resp.GetLease()
		if l.GetState() != mayflyv1.LeaseState_LEASE_STATE_ACTIVE || !l.GetRevocable() || l.GetIssuer() != "vault" {
			t.Fatalf("lease = %v", l)
		}
		if exp := resp.GetCredential().GetExpiresAt().AsTime(); exp.After(l.GetExpiresAt().AsTime()) {
			t.Fatalf("credential expires %v, after its lease %v", exp, l.GetExpiresAt().AsTime())
		}
		if err := f.canSelect(tctx(t, 10*time.Second), up.GetUsername(), up.GetPassword()); err != nil {
			t.Fatalf("SELECT with the issued credential: %v", err)
		}

		// The store holds ACCESSOR|LEASE_ID; Vault's lease ends with ours.
		sl := b.storeLease(t, l.GetId())
		ref, err := vault.ParseRef(sl.ExternalRef)
		if err != nil || ref.LeaseID == "" || !strings.HasPrefix(ref.LeaseID, "database/creds/orders-ro/") {
			t.Fatalf("ExternalRef %q: %+v, %v", sl.ExternalRef, ref, err)
		}
		vl := f.vaultLease(t, ref.LeaseID)
		if vl == nil {
			t.Fatal("the Vault lease does not exist")
		}
		if got := time.Duration(jsonInt(vl.Data["ttl"])) * time.Second; got > 15*time.Minute || got < 14*time.Minute {
			t.Errorf("Vault lease ttl %v; want about the lease's 15m (not the role's default 1h)", got)
		}
		if !f.tokenAlive(t, ref.Accessor) {
			t.Fatal("the per-lease token does not exist")
		}

		// Renew to 30m: Vault's lease and the token follow.
		rr, err := b.cc.RenewLease(tctx(t, 20*time.Second), &mayflyv1.RenewLeaseRequest{LeaseId: l.GetId(), Ttl: durationpb.New(30 * time.Minute)})
		if err != nil {
			t.Fatalf("RenewLease: %v", err)
		}
		if rr.GetCredential() != nil {
			t.Error("RenewLease returned a new credential; the database credential stays the same")
		}
		vl = f.vaultLease(t, ref.LeaseID)
		if got := time.Duration(jsonInt(vl.Data["ttl"])) * time.Second; got > 30*time.Minute || got < 29*time.Minute {
			t.Errorf("after renewal the Vault lease ttl is %v; want about 30m", got)
		}
		tok, err := f.v.Client.Auth().Token().LookupAccessor(ref.Accessor)
		if err != nil {
			t.Fatal(err)
		}
		if ttl, _ := tok.TokenTTL(); ttl > 30*time.Minute || ttl < 29*time.Minute {
			t.Errorf("after renewal the per-lease token ttl is %v; want about 30m", ttl)
		}

		// Explicit revocation: the role disappears and a new login fails.
		if _, err := b.cc.RevokeLease(tctx(t, 10*time.Second), &mayflyv1.RevokeLeaseRequest{LeaseId: l.GetId()}); err != nil {
			t.Fatal(err)
		}
		b.waitState(t, l.GetId(), lease.StateRevoked, 10*time.Second)
		if f.roleExists(t, up.GetUsername()) {
			t.Fatal("the lease is revoked but the role is still in pg_roles")
		}
		waitGone(t, f, up.GetUsername(), up.GetPassword(), time.Second)
		if f.vaultLease(t, ref.LeaseID) != nil {
			t.Error("the Vault lease survived revocation")
		}
		// The token, which holds nothing now, is revoked in the background.
		waitTokenGone(t, f, ref.Accessor, 5*time.Second)
		logs := b.logs.String()
		if strings.Contains(logs, "hvs.") {
			t.Error("the broker log contains a Vault token (hvs.)")
		}
		noSecrets(t, "the broker log", logs, up.GetPassword(), f.roleToken, f.pg.Password)
	})

	t.Run("ShortLeaseExpires", func(t *testing.T) {
		resp, err := b.issue(t, "orders-db-ro", 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		up := resp.GetCredential().GetUsernamePassword()
		if err := f.canSelect(tctx(t, 10*time.Second), up.GetUsername(), up.GetPassword()); err != nil {
			t.Fatalf("SELECT with the issued credential: %v", err)
		}
		exp := resp.GetLease().GetExpiresAt().AsTime()
		gone := waitGone(t, f, up.GetUsername(), up.GetPassword(), 15*time.Second)
		l := b.waitState(t, resp.GetLease().GetId(), lease.StateRevoked, 5*time.Second)
		if l.RevokeReason != lease.ReasonExpired {
			t.Errorf("revoke reason %q, want %q", l.RevokeReason, lease.ReasonExpired)
		}
		t.Logf("3s lease: role gone %v after expiry (revoker lag %v)", gone.Sub(exp).Round(time.Millisecond), l.RevokedAt.Sub(exp).Round(time.Millisecond))
	})

	t.Run("ReplayedRequestID", func(t *testing.T) {
		req := &mayflyv1.IssueCredentialRequest{Entitlement: "orders-db-ro", RequestId: "replay-" + fmt.Sprint(time.Now().UnixNano())}
		first, err := b.cc.IssueCredential(tctx(t, 20*time.Second), req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := b.cc.IssueCredential(tctx(t, 20*time.Second), req)
		if err != nil {
			t.Fatalf("replayed request: %v", err)
		}
		if again.GetLease().GetId() != first.GetLease().GetId() ||
			again.GetCredential().GetUsernamePassword().GetUsername() != first.GetCredential().GetUsernamePassword().GetUsername() {
			t.Fatal("a replayed request_id got another lease or another database role")
		}
	})
}

// TestBrokerBadInput: a missing role, a permission error and a path that
// returns no lease each answer FailedPrecondition naming the entitlement,
// leave no active lease and no live per-lease token, and put no token,
// password or secret in the error or the logs.
func TestBrokerBadInput(t *testing.T) {
	f := newFixture(t)
	b := startBroker(t, f, brokerOpts{revoker: revoker.Config{MaxIdle: 200 * time.Millisecond}})

	for _, c := range []struct{ ent, logWant string }{
		{"orders-db-missing-role", "role not found or the broker's token lacks permission for database/creds/orders-rw"},
		{"orders-db-no-permission", "token_policies [unrelated] do not allow read on database/creds/orders-ro"},
		{"app-config-kv", "secret/data/app returns no lease; Mayfly only brokers leased secrets"},
	} {
		t.Run(c.ent, func(t *testing.T) {
			_, err := b.issue(t, c.ent, 0)
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("IssueCredential(%s) = %v; want FailedPrecondition", c.ent, err)
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, `"`+c.ent+`"`) {
				t.Errorf("message %q does not name the entitlement", msg)
			}
			if strings.Contains(msg, "hvs.") {
				t.Errorf("message %q contains a Vault token", msg)
			}
			noSecrets(t, "the error message", msg, f.roleToken, f.brokerToken, f.v.RootToken, "kv-secret-value", f.pg.Password)
			if !strings.Contains(b.logs.String(), c.logWant) {
				t.Errorf("the broker log does not say %q:\n%s", c.logWant, b.logs.String())
			}
			// No lease stays active.
			ls, _, err := b.env.Store.List(tctx(t, 5*time.Second), lease.Query{Entitlement: c.ent})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range ls {
				if l.State == lease.StateActive {
					t.Errorf("lease %s of a failed issuance is active", l.ID)
				}
			}
			// The per-lease token was revoked at once.
			if n := liveTokensFor(t, f, "entitlement", c.ent); n != 0 {
				t.Errorf("%d per-lease tokens for %s are still alive", n, c.ent)
			}
		})
	}

	// Nothing secret anywhere: no Vault token (they start with hvs.), not
	// the broker's or the root token, not the KV secret, not the database
	// superuser's password.
	logs := b.logs.String()
	if strings.Contains(logs, "hvs.") {
		t.Error("the broker log contains a Vault token (hvs.)")
	}
	noSecrets(t, "the broker log", logs, f.roleToken, f.brokerToken, f.v.RootToken, "kv-secret-value", f.pg.Password)
}

// liveTokensFor counts live tokens whose metadata has key = value.
func liveTokensFor(t *testing.T, f *fixture, key, value string) int {
	t.Helper()
	s, err := f.v.Client.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	keys, _ := s.Data["keys"].([]any)
	for _, k := range keys {
		acc, _ := k.(string)
		info, err := f.v.Client.Auth().Token().LookupAccessor(acc)
		if err != nil {
			continue // gone meanwhile
		}
		if meta, ok := info.Data["meta"].(map[string]any); ok && meta[key] == value {
			n++
		}
	}
	return n
}

// jsonInt reads a number Vault returned (json.Number).
func jsonInt(v any) int64 {
	switch x := v.(type) {
	case interface{ Int64() (int64, error) }:
		n, _ := x.Int64()
		return n
	case float64:
		return int64(x)
	}
	return 0
}
