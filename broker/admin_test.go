package broker_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

const adminID = "spiffe://mayfly.test/admin/ops"

// TestKillSwitch revokes every lease of one subject, then of one
// entitlement, in one call each, and only those.
func TestKillSwitch(t *testing.T) {
	env := start(t)
	orders := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	other := mayflyv1.NewCredentialServiceClient(env.Dial(t, otherID))
	issue := func(c mayflyv1.CredentialServiceClient, ent string) string {
		t.Helper()
		r, err := c.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: ent})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetLease().GetId()
	}
	o1, o2 := issue(orders, "long-api"), issue(orders, "orders-api")
	x1 := issue(other, "long-api")

	// Not an admin: refused, nothing revoked.
	_, err := mayflyv1.NewAdminServiceClient(env.Dial(t, otherID)).RevokeBySelector(ctx(t),
		&mayflyv1.RevokeBySelectorRequest{Selector: &mayflyv1.RevokeBySelectorRequest_Subject{Subject: workloadID}})
	wantCode(t, err, codes.PermissionDenied, "policy admins")

	admin := mayflyv1.NewAdminServiceClient(env.Dial(t, adminID))
	_, err = admin.RevokeBySelector(ctx(t), &mayflyv1.RevokeBySelectorRequest{})
	wantCode(t, err, codes.InvalidArgument, "selector")
	resp, err := admin.RevokeBySelector(ctx(t), &mayflyv1.RevokeBySelectorRequest{
		Selector: &mayflyv1.RevokeBySelectorRequest_Subject{Subject: workloadID}, Reason: "INC-42"})
	if err != nil || resp.GetRevoked() != 2 {
		t.Fatalf("kill switch by subject = %v, %v; want 2", resp, err)
	}
	waitState(t, orders, o1, mayflyv1.LeaseState_LEASE_STATE_REVOKED, 2*time.Second)
	waitState(t, orders, o2, mayflyv1.LeaseState_LEASE_STATE_REVOKED, 2*time.Second)
	if g, _ := other.GetLease(ctx(t), &mayflyv1.GetLeaseRequest{LeaseId: x1}); g.GetLease().GetState() != mayflyv1.LeaseState_LEASE_STATE_ACTIVE {
		t.Fatalf("another subject's lease was touched: %v", g.GetLease())
	}
	// Again: nothing left to revoke.
	resp, err = admin.RevokeBySelector(ctx(t), &mayflyv1.RevokeBySelectorRequest{
		Selector: &mayflyv1.RevokeBySelectorRequest_Subject{Subject: workloadID}})
	if err != nil || resp.GetRevoked() != 0 {
		t.Fatalf("repeat = %v, %v; want 0", resp, err)
	}
	resp, err = admin.RevokeBySelector(ctx(t), &mayflyv1.RevokeBySelectorRequest{
		Selector: &mayflyv1.RevokeBySelectorRequest_Entitlement{Entitlement: "long-api"}})
	if err != nil || resp.GetRevoked() != 1 {
		t.Fatalf("kill switch by entitlement = %v, %v; want 1", resp, err)
	}
	waitState(t, other, x1, mayflyv1.LeaseState_LEASE_STATE_REVOKED, 2*time.Second)
	g, _ := other.GetLease(ctx(t), &mayflyv1.GetLeaseRequest{LeaseId: x1})
	if g.GetLease().GetRevokeReason() != "kill_switch" {
		t.Fatalf("revoke reason %q", g.GetLease().GetRevokeReason())
	}

	// The admin sees every subject's leases; others may not.
	all, err := admin.ListAllLeases(ctx(t), &mayflyv1.ListAllLeasesRequest{States: []mayflyv1.LeaseState{mayflyv1.LeaseState_LEASE_STATE_REVOKED}})
	if err != nil || len(all.GetLeases()) != 3 {
		t.Fatalf("ListAllLeases = %d leases, %v; want 3", len(all.GetLeases()), err)
	}
	_, err = mayflyv1.NewAdminServiceClient(env.Dial(t, otherID)).ListAllLeases(ctx(t), &mayflyv1.ListAllLeasesRequest{})
	wantCode(t, err, codes.PermissionDenied, "")
}
