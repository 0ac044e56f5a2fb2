package sdk

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fastRetry keeps the client's own retries quick in tests.
var fastRetry = withRetryPolicy(retryPolicy{attempts: 4, base: 10 * time.Millisecond, limit: 50 * time.Millisecond})

// dialTestClient dials addr as the test workload, with in-memory sources.
func dialTestClient(t *testing.T, pki *testPKI, addr string, opts ...DialOption) *Client {
	t.Helper()
	svid := pki.svid(t, testWorkloadID)
	opts = append([]DialOption{WithX509Source(svid, pki.bundle()), WithBrokerID(testBrokerID), fastRetry}, opts...)
	if os.Getenv("SDK_TEST_LOG") != "" {
		opts = append(opts, WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDialSVIDFiles(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, nil)
	certPath, keyPath, bundlePath := pki.writeFiles(t, pki.svid(t, testWorkloadID))

	// Default authorisation: any member of the client's trust domain.
	c, err := Dial(testContext(t), addr, WithSVIDFiles(certPath, keyPath, bundlePath))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cred, err := c.Issue(testContext(t), "orders-db-ro")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Lease.Subject != testWorkloadID {
		t.Errorf("subject = %q, want %q", cred.Lease.Subject, testWorkloadID)
	}
	if got := broker.callsOf("issue")[0].subject; got != testWorkloadID {
		t.Errorf("broker saw caller %q, want %q", got, testWorkloadID)
	}
}

func TestDialSVIDFilesRotation(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	_, addr := startFakeBroker(t, pki, testBrokerID, nil)
	certPath, keyPath, bundlePath := pki.writeFiles(t, pki.svid(t, testWorkloadID))

	src, err := newFileSource(certPath, keyPath, bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := src.GetX509SVID()

	// Rotate: a new SVID for another workload in the same files.
	rotated := pki.svid(t, "spiffe://example.org/workload/rotated")
	c2, k2, _ := pki.writeFiles(t, rotated)
	for from, to := range map[string]string{c2: certPath, k2: keyPath} {
		if err := copyFile(from, to); err != nil {
			t.Fatal(err)
		}
	}
	second, _ := src.GetX509SVID()
	if second.ID.String() != "spiffe://example.org/workload/rotated" || first.ID == second.ID {
		t.Fatalf("after rotation the source serves %s, want the rotated SVID", second.ID)
	}

	c, err := Dial(testContext(t), addr, WithSVIDFiles(certPath, keyPath, bundlePath))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cred, err := c.Issue(testContext(t), "orders-db-ro")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Lease.Subject != "spiffe://example.org/workload/rotated" {
		t.Errorf("subject = %q, want the rotated SVID's", cred.Lease.Subject)
	}
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o600)
}

func TestDialSVIDFilesMissing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, err := Dial(testContext(t), "127.0.0.1:1", WithSVIDFiles(filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")))
	if err == nil || !strings.HasPrefix(err.Error(), "sdk: SVID files: ") {
		t.Fatalf("err = %v, want an sdk: SVID files error", err)
	}
}

func TestDialX509Source(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	_, addr := startFakeBroker(t, pki, testBrokerID, nil)
	c := dialTestClient(t, pki, addr)
	if _, err := c.Issue(testContext(t), "orders-db-ro"); err != nil {
		t.Fatal(err)
	}
	if c.Raw() == nil {
		t.Fatal("Raw() = nil")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// fakeWorkloadAPI is a SPIFFE Workload API double serving one SVID.
type fakeWorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	resp *workload.X509SVIDResponse
}

func (f *fakeWorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := stream.Send(f.resp); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func TestDialWorkloadAPI(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	_, addr := startFakeBroker(t, pki, testBrokerID, nil)

	svid := pki.svid(t, testWorkloadID)
	certDER, keyDER, err := svid.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, &fakeWorkloadAPI{resp: &workload.X509SVIDResponse{
		Svids: []*workload.X509SVID{{SpiffeId: testWorkloadID, X509Svid: certDER, X509SvidKey: keyDER, Bundle: pki.caCert.Raw}},
	}})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	c, err := Dial(testContext(t), addr, WithWorkloadAPI("unix://"+socket), WithBrokerID(testBrokerID))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := c.Issue(testContext(t), "orders-db-ro")
	if err != nil {
		t.Fatal(err)
	}
	if cred.Lease.Subject != testWorkloadID {
		t.Errorf("subject = %q, want %q", cred.Lease.Subject, testWorkloadID)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestDialWorkloadAPIUnreachable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, "127.0.0.1:1", WithWorkloadAPI("unix://"+filepath.Join(t.TempDir(), "none.sock")))
	if err == nil || !strings.HasPrefix(err.Error(), "sdk: workload API: ") {
		t.Fatalf("err = %v, want an sdk: workload API error", err)
	}
}

func TestDialOptionErrors(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	svid := pki.svid(t, testWorkloadID)
	for _, tc := range []struct {
		name string
		opts []DialOption
		want string
	}{
		{"no identity", nil, "sdk: exactly one of WithWorkloadAPI, WithSVIDFiles or WithX509Source is required"},
		{"two identities", []DialOption{WithX509Source(svid, pki.bundle()), WithWorkloadAPI("")}, "sdk: exactly one of WithWorkloadAPI, WithSVIDFiles or WithX509Source is required"},
		{"nil sources", []DialOption{WithX509Source(nil, nil)}, "sdk: WithX509Source needs both an SVID source and a bundle source"},
		{"bad broker id", []DialOption{WithX509Source(svid, pki.bundle()), WithBrokerID("https://broker")}, `sdk: broker ID: scheme is missing or invalid`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(testContext(t), "127.0.0.1:1", tc.opts...)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWrongBrokerRefused(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	other := newTestPKI(t, "other.org")
	for _, tc := range []struct {
		name       string
		serverPKI  *testPKI
		serverID   string
		clientOpts []DialOption
		wantInMsg  string
	}{
		{"wrong broker ID", pki, "spiffe://example.org/not-the-broker", nil, "authentication handshake failed: unexpected ID"},
		{"broker of another trust domain", other, "spiffe://other.org/mayfly/broker", nil, "authentication handshake failed: x509svid: could not get X509 bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker, addr := startFakeBroker(t, tc.serverPKI, tc.serverID, nil)
			c := dialTestClient(t, pki, addr, tc.clientOpts...)
			_, err := c.Issue(testContext(t), "orders-db-ro")
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("code = %v (%v), want Unavailable", status.Code(err), err)
			}
			if !strings.Contains(err.Error(), tc.wantInMsg) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantInMsg)
			}
			if n := len(broker.callsOf("issue")); n != 0 {
				t.Errorf("broker served %d issue calls, want none", n)
			}
		})
	}
}

func TestIssueMapsEveryField(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	issued := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	expires := issued.Add(15 * time.Minute)
	native := issued.Add(10 * time.Minute)
	hardEnd := issued.Add(time.Hour)
	wantLease := Lease{
		ID: "lease001", Entitlement: "orders-db-ro", Subject: testWorkloadID, GrantID: "grant-1",
		Issuer: "jwt", State: StateActive, IssuedAt: issued, ExpiresAt: expires, HardEnd: hardEnd,
		Renewable: true, Revocable: false, RevocableReason: "bearer JWT: listed for introspection until exp",
	}

	for _, tc := range []struct {
		name string
		cred *mayflyv1.Credential
		want Credential
	}{
		{
			name: "jwt",
			cred: &mayflyv1.Credential{Kind: &mayflyv1.Credential_Jwt{Jwt: &mayflyv1.JWTCredential{Token: "eyJ.jwt", Scopes: []string{"a", "b"}}}, ExpiresAt: timestamppb.New(native)},
			want: Credential{Kind: KindJWT, Token: "eyJ.jwt", Scopes: []string{"a", "b"}, ExpiresAt: native},
		},
		{
			name: "username_password",
			cred: &mayflyv1.Credential{Kind: &mayflyv1.Credential_UsernamePassword{UsernamePassword: &mayflyv1.UsernamePasswordCredential{Username: "v-orders", Password: "hunter2"}}, ExpiresAt: timestamppb.New(native)},
			want: Credential{Kind: KindUsernamePassword, Username: "v-orders", Password: "hunter2", ExpiresAt: native},
		},
		{
			name: "certificate",
			cred: &mayflyv1.Credential{Kind: &mayflyv1.Credential_Certificate{Certificate: &mayflyv1.CertificateCredential{CertPem: "CERT", KeyPem: "KEY", ChainPem: "CHAIN"}}, ExpiresAt: timestamppb.New(native)},
			want: Credential{Kind: KindCertificate, CertPEM: "CERT", KeyPEM: "KEY", ChainPEM: "CHAIN", ExpiresAt: native},
		},
		{
			name: "aws",
			cred: &mayflyv1.Credential{Kind: &mayflyv1.Credential_Aws{Aws: &mayflyv1.AWSCredential{AccessKeyId: "AKIA", SecretAccessKey: "SECRET", SessionToken: "SESSION"}}, ExpiresAt: timestamppb.New(native)},
			want: Credential{Kind: KindAWS, AccessKeyID: "AKIA", SecretAccessKey: "SECRET", SessionToken: "SESSION", ExpiresAt: native},
		},
		{
			name: "oauth_token",
			cred: &mayflyv1.Credential{Kind: &mayflyv1.Credential_OauthToken{OauthToken: &mayflyv1.OAuthTokenCredential{Token: "ya29", Scopes: []string{"cloud-platform"}}}, ExpiresAt: timestamppb.New(native)},
			want: Credential{Kind: KindOAuthToken, Token: "ya29", Scopes: []string{"cloud-platform"}, ExpiresAt: native},
		},
		{
			name: "raw without native expiry takes the lease's",
			cred: &mayflyv1.Credential{Kind: &mayflyv1.Credential_Raw{Raw: &mayflyv1.RawCredential{Fields: map[string]string{"api_key": "k", "region": "eu"}}}},
			want: Credential{Kind: KindRaw, Fields: map[string]string{"api_key": "k", "region": "eu"}, ExpiresAt: expires},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
				b.now = func() time.Time { return issued }
				b.defaultTTL = 15 * time.Minute
				b.maxTTL = time.Hour
				b.credential = func(string, int) *mayflyv1.Credential { return tc.cred }
				b.mint = func(l *mayflyv1.Lease) {
					l.Revocable = false
					l.RevocableReason = wantLease.RevocableReason
				}
			})
			c := dialTestClient(t, pki, addr)
			got, err := c.Issue(testContext(t), "orders-db-ro",
				WithTTL(15*time.Minute), WithReason("nightly export"), WithTicket("INC-1234"), WithRequestID("req-fixed"))
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Lease = wantLease
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("Issue differs in %v:\n got %#v\nwant %#v", diffFields(*got, want), *got, want)
			}

			req := broker.callsOf("issue")[0].req.(*mayflyv1.IssueCredentialRequest)
			if req.GetEntitlement() != "orders-db-ro" || req.GetTtl().AsDuration() != 15*time.Minute ||
				req.GetReason() != "nightly export" || req.GetTicket() != "INC-1234" || req.GetRequestId() != "req-fixed" {
				t.Errorf("request = %v", req)
			}
		})
	}
}

// diffFields names the fields that differ, since Credential's %v redacts.
func diffFields(a, b Credential) []string {
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, va.Type().Field(i).Name)
		}
	}
	return out
}

func TestIssueRetriesWithSameRequestID(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
		b.loseIssue = 2 // the lease is minted, but the first two responses are lost
	})
	c := dialTestClient(t, pki, addr)

	cred, err := c.Issue(testContext(t), "orders-db-ro")
	if err != nil {
		t.Fatal(err)
	}
	calls := broker.callsOf("issue")
	if len(calls) != 3 {
		t.Fatalf("broker saw %d issue calls, want 3", len(calls))
	}
	for _, call := range calls {
		if call.requestID != calls[0].requestID || call.requestID == "" {
			t.Fatalf("request ids differ across retries: %q vs %q", call.requestID, calls[0].requestID)
		}
	}
	if n := broker.leaseCount(); n != 1 {
		t.Fatalf("broker minted %d leases, want 1", n)
	}
	if cred.Lease.ID != calls[0].leaseID {
		t.Errorf("lease = %s, want the one minted first (%s)", cred.Lease.ID, calls[0].leaseID)
	}

	// A new Issue call is a new issuance with a new key.
	if _, err := c.Issue(testContext(t), "orders-db-ro"); err != nil {
		t.Fatal(err)
	}
	if calls := broker.callsOf("issue"); calls[3].requestID == calls[0].requestID {
		t.Error("a second Issue call reused the first call's request id")
	}
}

func TestIssueErrorsKeepStatus(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
		b.failIssue = []codes.Code{codes.PermissionDenied}
	})
	c := dialTestClient(t, pki, addr)

	_, err := c.Issue(testContext(t), "orders-db-rw")
	const want = `sdk: issue "orders-db-rw": rpc error: code = PermissionDenied desc = test broker: injected failure`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("status.Code = %v, want PermissionDenied", status.Code(err))
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		t.Errorf("status.FromError = %v, %v", st, ok)
	}
	if n := len(broker.callsOf("issue")); n != 1 {
		t.Errorf("a permanent error was tried %d times, want 1", n)
	}

	// Unavailable is retried, but not forever.
	broker.set(func(b *fakeBroker) {
		b.failIssue = []codes.Code{codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable}
	})
	_, err = c.Issue(testContext(t), "orders-db-ro")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if n := len(broker.callsOf("issue")); n != 1+4 {
		t.Errorf("issue calls = %d, want 1 + 4 attempts", n)
	}

	_, err = c.Issue(testContext(t), "")
	if status.Code(err) != codes.InvalidArgument || err.Error() != "sdk: issue: rpc error: code = InvalidArgument desc = entitlement is required" {
		t.Errorf("empty entitlement: err = %v", err)
	}
	for name, err := range map[string]error{
		"Renew":  func() error { _, err := c.Renew(testContext(t), "", 0); return err }(),
		"Revoke": func() error { _, err := c.Revoke(testContext(t), ""); return err }(),
		"Lease":  func() error { _, err := c.Lease(testContext(t), ""); return err }(),
	} {
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(err.Error(), "sdk: ") {
			t.Errorf("%s with an empty id: err = %v", name, err)
		}
	}
}

func TestRenewRevokeAndList(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, testTrustDomain)
	broker, addr := startFakeBroker(t, pki, testBrokerID, func(b *fakeBroker) {
		b.maxTTL = 2 * time.Minute
	})
	c := dialTestClient(t, pki, addr)
	ctx := testContext(t)

	cred, err := c.Issue(ctx, "orders-db-ro", WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Renew(ctx, cred.Lease.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r.Credential != nil || !r.TTLClamped || !r.Lease.ExpiresAt.Equal(cred.Lease.HardEnd) {
		t.Errorf("Renew = %+v, want the lease clamped to its hard end %v and no new value", r, cred.Lease.HardEnd)
	}
	if got := broker.callsOf("renew")[0].req.(*mayflyv1.RenewLeaseRequest).GetTtl().AsDuration(); got != time.Hour {
		t.Errorf("renew asked for %v, want 1h", got)
	}

	broker.set(func(b *fakeBroker) { b.renewNewValue = true })
	r, err = c.Renew(ctx, cred.Lease.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Credential == nil || r.Credential.Token == cred.Token || r.Credential.Lease.ID != cred.Lease.ID {
		t.Errorf("Renew with a new value = %+v", r)
	}

	revoked, err := c.Revoke(ctx, cred.Lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if revoked.State != StateRevoked || revoked.RevokeReason != "explicit" || revoked.RevokedAt.IsZero() {
		t.Errorf("Revoke = %+v", revoked)
	}
	if _, err := c.Revoke(ctx, cred.Lease.ID); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	_, err = c.Renew(ctx, cred.Lease.ID, 0)
	if status.Code(err) != codes.FailedPrecondition || !strings.HasPrefix(err.Error(), "sdk: renew lease "+cred.Lease.ID+": ") {
		t.Errorf("renewing a revoked lease: %v", err)
	}
	_, err = c.Lease(ctx, "nope")
	if status.Code(err) != codes.NotFound || err.Error() != "sdk: get lease nope: rpc error: code = NotFound desc = lease not found" {
		t.Errorf("Lease(nope): %v", err)
	}

	for range 4 {
		if _, err := c.Issue(ctx, "reports-ro"); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for l, err := range c.Leases(ctx, WithPageSize(2)) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
	}
	if want := []string{"lease001", "lease002", "lease003", "lease004", "lease005"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("Leases = %v, want %v", ids, want)
	}
	if n := len(broker.callsOf("list")); n != 3 {
		t.Errorf("list calls = %d, want 3 pages", n)
	}

	ids = nil
	for l, err := range c.Leases(ctx, WithStates(StateActive), WithEntitlement("reports-ro"), WithPageSize(3)) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, l.ID)
		if len(ids) == 2 {
			break // stopping early must not fetch more pages
		}
	}
	if want := []string{"lease002", "lease003"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("filtered Leases = %v, want %v", ids, want)
	}
	if n := len(broker.callsOf("list")); n != 4 {
		t.Errorf("list calls = %d, want 4", n)
	}

	for _, err := range c.Leases(ctx, WithStates("sleeping")) {
		if err == nil || err.Error() != `sdk: unknown lease state "sleeping"` {
			t.Errorf("unknown state: %v", err)
		}
	}
}

func TestStateConversion(t *testing.T) {
	t.Parallel()
	for _, s := range []string{StatePending, StateActive, StateRevoking, StateRevoked, StateIrrevocable} {
		p, err := stateToProto(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := stateFromProto(p); got != s {
			t.Errorf("round trip of %q = %q", s, got)
		}
	}
	if got := stateFromProto(mayflyv1.LeaseState(99)); got != "unknown(99)" {
		t.Errorf("unknown state = %q", got)
	}
	if got := leaseFromProto(nil); !reflect.DeepEqual(got, Lease{}) {
		t.Errorf("nil lease = %+v", got)
	}
	if _, err := credentialFromProto(nil, &mayflyv1.Credential{}); err == nil || !strings.HasPrefix(err.Error(), "sdk: broker returned a credential of unknown kind") {
		t.Errorf("credential without kind: %v", err)
	}
}
