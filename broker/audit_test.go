package broker_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/brokertest"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// switchSink is a real file sink that a test can take down: while down,
// writes fail as a full disk or a lost mount would.
type switchSink struct {
	*audit.FileSink
	down atomic.Bool
}

func (s *switchSink) Write(ctx context.Context, e audit.Event) error {
	if s.down.Load() {
		return errors.New("audit file unavailable (test)")
	}
	return s.FileSink.Write(ctx, e)
}

// newAuditLog is an audit trail in a JSONL file, one checkpoint every 4
// events, and the key that verifies it.
func newAuditLog(t *testing.T) (*audit.Log, *switchSink, string, ed25519.PublicKey) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	fs, err := audit.NewFileSink(audit.FileConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	sink := &switchSink{FileSink: fs}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.NewLog(context.Background(), audit.Config{
		Sinks: []audit.SinkConfig{{Sink: sink}}, Resume: audit.JSONLFile{Path: path},
		Signer: priv, CheckpointEvery: 4, Actor: brokertest.BrokerID.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, sink, path, pub
}

func eventsOf(t *testing.T, path string, f audit.Filter) []audit.Event {
	t.Helper()
	evs, err := audit.Query(context.Background(), audit.JSONLFile{Path: path}, f)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// waitEvents waits until the trail holds n events matching f.
func waitEvents(t *testing.T, path string, f audit.Filter, n int) []audit.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := eventsOf(t, path, f)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events match %+v, want %d", len(evs), f, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditTrailLinksRequestToRevocation: an access request, its refused
// and counted approvals, the grant, the issue under it and the revocation
// are all on record, the trail verifies with the broker's key, the
// lineage of the request shows the lease and how it ended, and no
// credential appears anywhere in the trail.
func TestAuditTrailLinksRequestToRevocation(t *testing.T) {
	al, _, path, pub := newAuditLog(t)
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(governancePolicy), Audit: al})
	agent := env.Dial(t, agentID)
	created, err := mayflyv1.NewAccessServiceClient(agent).CreateAccessRequest(ctx(t), &mayflyv1.CreateAccessRequestRequest{
		Entitlement: "orders-db-admin", Reason: "add index", Ticket: "CHG-7", Duration: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	r := created.GetRequest()
	review := func(who string) error {
		_, err := mayflyv1.NewAccessServiceClient(env.Dial(t, who)).ReviewAccessRequest(ctx(t), &mayflyv1.ReviewAccessRequestRequest{
			Id: r.GetId(), Decision: mayflyv1.ReviewDecision_REVIEW_DECISION_APPROVE, Comment: "ok", Digest: r.GetDigest()})
		return err
	}
	wantCode(t, review(agentID), codes.PermissionDenied, "") // self-approval: refused and recorded
	if err := review(leadA); err != nil {
		t.Fatal(err)
	}
	if err := review(secID); err != nil {
		t.Fatal(err)
	}
	creds := mayflyv1.NewCredentialServiceClient(agent)
	iss, err := creds.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-db-admin"})
	if err != nil {
		t.Fatal(err)
	}
	token := iss.GetCredential().GetJwt().GetToken()
	if token == "" {
		t.Fatalf("no token in %v", iss.GetCredential())
	}
	leaseID := iss.GetLease().GetId()
	if _, err := creds.RevokeLease(ctx(t), &mayflyv1.RevokeLeaseRequest{LeaseId: leaseID}); err != nil {
		t.Fatal(err)
	}
	waitState(t, creds, leaseID, mayflyv1.LeaseState_LEASE_STATE_REVOKED, 5*time.Second)
	// A denied issuance is on record too.
	_, err = mayflyv1.NewCredentialServiceClient(env.Dial(t, leadA)).IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "orders-db-admin"})
	wantCode(t, err, codes.PermissionDenied, "")

	revoked := waitEvents(t, path, audit.Filter{LeaseID: leaseID, Types: []audit.Type{audit.TypeLeaseRevoked}}, 1)
	if revoked[0].How != "explicit" || revoked[0].Fields["lag"] == "" {
		t.Fatalf("lease.revoked = %+v", revoked[0])
	}
	byType := map[audit.Type]int{}
	for _, e := range eventsOf(t, path, audit.Filter{}) {
		byType[e.Type]++
	}
	for typ, n := range map[audit.Type]int{
		audit.TypeRequestCreated: 1, audit.TypeRequestApproved: 2, audit.TypeGrantCreated: 1, audit.TypeLeaseIssued: 1,
		audit.TypeLeaseRevokeRequested: 1, audit.TypeLeaseRevoked: 1, audit.TypeCheckpoint: 1,
	} {
		if byType[typ] < n {
			t.Errorf("%d %s events, want at least %d (all: %v)", byType[typ], typ, n, byType)
		}
	}
	refusals := eventsOf(t, path, audit.Filter{Types: []audit.Type{audit.TypeDecision}, Actor: agentID, RequestID: r.GetId()})
	if len(refusals) != 1 || refusals[0].Outcome != "refused" || refusals[0].Fields["action"] != "review" {
		t.Errorf("self-approval record = %+v", refusals)
	}
	denials := eventsOf(t, path, audit.Filter{Types: []audit.Type{audit.TypeDecision}, Subject: leadA})
	if len(denials) != 1 || denials[0].Outcome != "deny" {
		t.Errorf("denied issuance record = %+v", denials)
	}

	rep, err := audit.Verify(context.Background(), audit.JSONLFile{Path: path}, pub)
	if err != nil || !rep.OK() || !rep.SignaturesChecked || rep.Checkpoints == 0 {
		t.Fatalf("verify = %v, %v", rep, err)
	}

	tree, err := audit.Lineage(context.Background(), audit.JSONLFile{Path: path}, audit.Root{RequestID: r.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	text := tree.Text()
	for _, want := range []string{r.GetId(), leaseID, "revoked", "explicit"} {
		if !strings.Contains(text, want) {
			t.Errorf("lineage does not show %q:\n%s", want, text)
		}
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sig := token[strings.LastIndexByte(token, '.')+1:]
	if strings.Contains(string(raw), token) || strings.Contains(string(raw), sig) {
		t.Fatal("the audit trail holds the credential")
	}
}

// TestAuditDownFailsClosed: while the audit trail cannot record, nothing
// is issued and no access request is made; revocation goes on, and its
// events reach the trail when it is back, in order, so the trail still
// verifies.
func TestAuditDownFailsClosed(t *testing.T) {
	al, sink, path, pub := newAuditLog(t)
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(testPolicy), Audit: al})
	creds := mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID))
	held, err := creds.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"})
	if err != nil {
		t.Fatal(err)
	}
	before := leaseCount(t, env)

	sink.down.Store(true)
	_, err = creds.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"})
	wantCode(t, err, codes.Unavailable, "audit trail")
	if n := leaseCount(t, env); n != before {
		t.Fatalf("%d leases after a refused issuance, want %d", n, before)
	}
	_, err = mayflyv1.NewAccessServiceClient(env.Dial(t, workloadID)).CreateAccessRequest(ctx(t), &mayflyv1.CreateAccessRequestRequest{
		Entitlement: "long-api", Reason: "x", Duration: durationpb.New(time.Hour)})
	wantCode(t, err, codes.Unavailable, "audit trail")
	// Ending access is never blocked.
	if _, err := creds.RevokeLease(ctx(t), &mayflyv1.RevokeLeaseRequest{LeaseId: held.GetLease().GetId()}); err != nil {
		t.Fatal(err)
	}
	waitState(t, creds, held.GetLease().GetId(), mayflyv1.LeaseState_LEASE_STATE_REVOKED, 5*time.Second)

	sink.down.Store(false)
	waitEvents(t, path, audit.Filter{LeaseID: held.GetLease().GetId(), Types: []audit.Type{audit.TypeLeaseRevoked}}, 1)
	if _, err := creds.IssueCredential(ctx(t), &mayflyv1.IssueCredentialRequest{Entitlement: "long-api"}); err != nil {
		t.Fatalf("issuance after the trail came back: %v", err)
	}
	rep, err := audit.Verify(context.Background(), audit.JSONLFile{Path: path}, pub)
	if err != nil || !rep.OK() {
		t.Fatalf("verify = %v, %v", rep, err)
	}
}

// TestQuotaPerIdentity: one identity past its quota gets
// ResourceExhausted; another identity is not affected.
func TestQuotaPerIdentity(t *testing.T) {
	al, _, path, _ := newAuditLog(t)
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(testPolicy), QuotaRate: 2, QuotaBurst: 5, Audit: al})
	noisy := mayflyv1.NewPolicyServiceClient(env.Dial(t, workloadID))
	refused := 0
	for range 20 {
		_, err := noisy.ListEntitlements(ctx(t), &mayflyv1.ListEntitlementsRequest{})
		switch {
		case err == nil:
		case strings.Contains(err.Error(), "quota"):
			wantCode(t, err, codes.ResourceExhausted, workloadID)
			refused++
		default:
			t.Fatal(err)
		}
	}
	if refused < 14 {
		t.Fatalf("%d of 20 calls refused at 2/s with bursts of 5, want at least 14", refused)
	}
	quiet := mayflyv1.NewPolicyServiceClient(env.Dial(t, "spiffe://mayfly.test/workload/other"))
	if _, err := quiet.ListEntitlements(ctx(t), &mayflyv1.ListEntitlementsRequest{}); err != nil {
		t.Fatalf("another identity: %v", err)
	}
	evs := waitEvents(t, path, audit.Filter{Types: []audit.Type{audit.TypeCallRefused}, Actor: workloadID}, refused)
	if evs[0].Outcome != "resource_exhausted" {
		t.Fatalf("refusal record = %+v", evs[0])
	}
}
