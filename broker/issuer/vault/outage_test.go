package vault_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/revoker"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// TestOutages takes Vault away while the broker works: during issuance
// (the process frozen with SIGSTOP: requests hang until they time out), at
// expiry and at renewal (connections refused by a proxy the broker goes
// through), and revokes a Vault lease behind the broker's back.
func TestOutages(t *testing.T) {
	f := newFixture(t)
	px := newProxy(t, strings.TrimPrefix(f.v.Addr, "http://"))
	b := startBroker(t, f, brokerOpts{
		vaultAddr:      px.URL(),
		requestTimeout: 2 * time.Second,
		pendingTimeout: 8 * time.Second,
		revoker: revoker.Config{
			MaxIdle: 200 * time.Millisecond, BackoffBase: 300 * time.Millisecond, BackoffMax: time.Second,
			Hold: 8 * time.Second, MaxAttempts: 30,
		},
	})

	t.Run("VaultFrozenDuringIssuance", func(t *testing.T) {
		rolesBefore := len(f.vaultRoles(t))
		f.v.Pause()
		start := time.Now()
		_, err := b.issue(t, "orders-db-ro", 0)
		f.v.Resume()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("IssueCredential with Vault frozen = %v; want Unavailable", err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, `"orders-db-ro"`) {
			t.Errorf("message %q does not name the entitlement", msg)
		}
		t.Logf("Unavailable after %v", time.Since(start).Round(time.Millisecond))
		// The pending lease is revoked, never active.
		ls, _, err := b.env.Store.List(tctx(t, 5*time.Second), lease.Query{Entitlement: "orders-db-ro"})
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != 1 {
			t.Fatalf("%d leases; want the one pending lease", len(ls))
		}
		l := b.waitState(t, ls[0].ID, lease.StateRevoked, 10*time.Second)
		if l.RevokeReason != lease.ReasonIssueFailed {
			t.Errorf("revoke reason %q; want %q", l.RevokeReason, lease.ReasonIssueFailed)
		}
		// Vault may still act on the frozen request once it resumes: a
		// token it creates then reached no one and holds no secret. No
		// database role exists for the lease.
		if n := len(f.vaultRoles(t)); n != rolesBefore {
			t.Fatalf("%d database roles after the failed issuance, want %d", n, rolesBefore)
		}
	})

	t.Run("VaultUnreachableAtExpiry", func(t *testing.T) {
		resp, err := b.issue(t, "orders-db-ro", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		up := resp.GetCredential().GetUsernamePassword()
		id := resp.GetLease().GetId()
		px.cut()
		// The revoker tries, fails, and backs off.
		deadline := time.Now().Add(20 * time.Second)
		for {
			l := b.storeLease(t, id)
			if l.Attempts >= 2 {
				if l.State == lease.StateRevoked || l.State == lease.StateIrrevocable {
					t.Fatalf("lease is %s with Vault unreachable", l.State)
				}
				if !strings.Contains(l.LastError, "Vault unreachable") || !strings.Contains(l.LastError, `"orders-db-ro"`) {
					t.Errorf("last error %q; want it to say Vault is unreachable and name the entitlement", l.LastError)
				}
				noSecrets(t, "the lease's last error", l.LastError, up.GetPassword(), f.roleToken)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no failed revocation attempts recorded (attempts %d, state %s)", l.Attempts, l.State)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Vault itself runs, unreachable only for the broker: it ends the
		// per-lease token at the lease's expiry (its TTL) and drops the
		// role on its own, so the credential does not outlive its lease.
		waitGone(t, f, up.GetUsername(), up.GetPassword(), 15*time.Second)
		px.restore(t)
		l := b.waitState(t, id, lease.StateRevoked, 15*time.Second)
		t.Logf("revoked after %d failed attempts, %v after expiry", l.Attempts, l.RevokedAt.Sub(l.ExpiresAt).Round(time.Millisecond))
	})

	t.Run("VaultLeaseRevokedBehindTheBrokersBack", func(t *testing.T) {
		resp, err := b.issue(t, "orders-db-ro", 0)
		if err != nil {
			t.Fatal(err)
		}
		up := resp.GetCredential().GetUsernamePassword()
		sl := b.storeLease(t, resp.GetLease().GetId())
		ref, err := vault.ParseRef(sl.ExternalRef)
		if err != nil {
			t.Fatal(err)
		}
		// An operator revokes the Vault lease and the token directly.
		if err := f.v.Client.Sys().Revoke(ref.LeaseID); err != nil {
			t.Fatal(err)
		}
		if err := f.v.Client.Auth().Token().RevokeAccessor(ref.Accessor); err != nil {
			t.Fatal(err)
		}
		waitGone(t, f, up.GetUsername(), up.GetPassword(), 10*time.Second)
		if _, err := b.cc.RevokeLease(tctx(t, 10*time.Second), &mayflyv1.RevokeLeaseRequest{LeaseId: sl.ID}); err != nil {
			t.Fatal(err)
		}
		l := b.waitState(t, sl.ID, lease.StateRevoked, 10*time.Second)
		if l.Attempts != 0 {
			t.Errorf("revocation took %d failed attempts (%s); already gone is success", l.Attempts, l.LastError)
		}
	})

	t.Run("RenewWithVaultDown", func(t *testing.T) {
		resp, err := b.issue(t, "orders-db-ro", 0)
		if err != nil {
			t.Fatal(err)
		}
		px.cut()
		defer px.restore(t)
		_, err = b.cc.RenewLease(tctx(t, 20*time.Second), &mayflyv1.RenewLeaseRequest{LeaseId: resp.GetLease().GetId(), Ttl: durationpb.New(20 * time.Minute)})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("RenewLease with Vault unreachable = %v; want Unavailable", err)
		}
	})
}

// TestBindBeforeRead: the per-lease token's accessor is recorded in the
// lease before the secret exists. A broker that dies at Bind (the lease
// store down, the process killed) leaves no secret behind: no database
// role was created, and the token is revoked when Bind fails.
func TestBindBeforeRead(t *testing.T) {
	f := newFixture(t)
	iss := f.issuer(t, f.cfg(f.brokerToken, nil))
	p := params(t, "path: database/creds/orders-ro\ntoken_policies: [orders-ro]")
	before := f.vaultRoles(t)

	l := pendingLease("orders-db-ro", 15*time.Minute)
	atBind := make(chan string)
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := iss.Issue(context.Background(), issuer.Request{Lease: l, Params: p,
			Bind: func(_ context.Context, ref string) error {
				atBind <- ref // the broker "dies" here: nothing runs any more
				<-release
				return errors.New("the broker is gone")
			}})
		done <- err
	}()
	var ref string
	select {
	case ref = <-atBind:
	case err := <-done:
		t.Fatalf("Issue returned before Bind: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Issue did not reach Bind")
	}
	if strings.Contains(ref, "|") {
		t.Fatalf("bound %q: a Vault lease exists before the accessor was recorded", ref)
	}
	for r := range f.vaultRoles(t) {
		if !before[r] {
			t.Fatalf("database role %s exists before the lease recorded the token", r)
		}
	}
	if liveTokensFor(t, f, "lease_id", l.ID) != 1 {
		t.Fatal("no per-lease token exists at Bind")
	}
	close(release)
	if err := <-done; err == nil {
		t.Fatal("Issue with a failed Bind returned no error")
	}
	deadline := time.Now().Add(10 * time.Second)
	for liveTokensFor(t, f, "lease_id", l.ID) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the per-lease token of a failed Bind is still alive")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for r := range f.vaultRoles(t) {
		if !before[r] {
			t.Fatalf("database role %s created after a failed Bind", r)
		}
	}
}
