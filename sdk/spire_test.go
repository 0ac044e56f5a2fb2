package sdk_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/deploy/testenv"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/mayflyhq/mayfly/sdk"
)

// These tests run the SDK and a real broker against a real SPIRE server
// and agent (deploy/testenv): every X.509-SVID, trust bundle and JWT-SVID
// comes from the SPIFFE Workload API. They skip where SPIRE cannot be
// built or run, and fail then under CI=true.
//
// Identities: the Workload API attests a process by its uid, so the test
// process has two entries for its own uid. The workload's entry ID sorts
// first, which makes it the default SVID (the one sdk.WithWorkloadAPI
// uses); the broker picks its own SVID by SPIFFE ID. Workloads with other
// identities run as helper processes under other uids.

const (
	spireBrokerID   = "spiffe://mayfly.test/mayfly"
	spireWorkloadID = "spiffe://mayfly.test/workload/demo"
	// Entry IDs: the Workload API orders a workload's SVIDs by entry ID.
	spireWorkloadEntry = "mayfly-a-workload-demo"
	spireBrokerEntry   = "mayfly-b-broker"
)

// Uids with no account: helper workloads run under them.
const (
	spireOtherUID        = 64601 // registered as spiffe://mayfly.test/workload/other
	spireUnregisteredUID = 64602 // no entry
)

const spirePolicy = `version: 1
trust_domains: [mayfly.test]
entitlements:
  demo-api-read:
    description: Token for the demo API
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://demo-api.mayfly.test
    ttl: 1m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: SPIRE tests
        until: 2099-12-31
  short-lived:
    description: Token that expires while the broker is down
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://demo-api.mayfly.test
    ttl: 3s
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/*
        purpose: SPIRE tests
        until: 2099-12-31
`

// spireBroker is a real broker whose own X.509-SVID and trust bundles come
// from the Workload API; it can be stopped and started again on the same
// port with the same lease store and JWT keys.
type spireBroker struct {
	t       *testing.T
	spire   *testenv.SPIREEnv
	addr    string
	dir     string
	store   lease.Store
	svids   *workloadapi.X509Source
	bundles *workloadapi.BundleSource

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

// startSPIRE starts SPIRE with the given X.509-SVID TTL, registers the
// in-process workload and the broker, and starts the broker.
func startSPIRE(t *testing.T, svidTTL time.Duration) *spireBroker {
	t.Helper()
	spire := testenv.SPIRE(t, testenv.SPIREOptions{X509SVIDTTL: svidTTL, JWTSVIDTTL: 2 * time.Minute})
	uid := os.Getuid()
	spire.RegisterEntry(t, testenv.SPIREEntry{EntryID: spireWorkloadEntry, SPIFFEID: spireWorkloadID, Selectors: []string{"unix:uid:" + strconv.Itoa(uid)}})
	spire.RegisterEntry(t, testenv.SPIREEntry{EntryID: spireBrokerEntry, SPIFFEID: spireBrokerID, Selectors: []string{"unix:uid:" + strconv.Itoa(uid)}})
	spire.WaitX509SVID(t, spireWorkloadID)
	spire.WaitX509SVID(t, spireBrokerID)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := workloadapi.WithClientOptions(workloadapi.WithAddr(spire.SocketAddr()))
	brokerID := spiffeid.RequireFromString(spireBrokerID)
	svids, err := workloadapi.NewX509Source(ctx, client, workloadapi.WithDefaultX509SVIDPicker(func(s []*x509svid.SVID) *x509svid.SVID {
		for _, svid := range s {
			if svid.ID == brokerID {
				return svid
			}
		}
		return s[0] // never served: the broker then refuses to be anyone else
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svids.Close() })
	if svid, err := svids.GetX509SVID(); err != nil || svid.ID != brokerID {
		t.Fatalf("broker SVID: %v, %v", svid, err)
	}
	bundles, err := workloadapi.NewBundleSource(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bundles.Close() })

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(spirePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &spireBroker{t: t, spire: spire, addr: ln.Addr().String(), dir: dir, store: memory.New(), svids: svids, bundles: bundles}
	b.start(ln)
	t.Cleanup(b.stop)
	return b
}

// start runs a broker on ln, or on b.addr again when ln is nil.
func (b *spireBroker) start(ln net.Listener) {
	b.t.Helper()
	var err error
	if ln == nil {
		// The port was ours a moment ago; retry briefly if the kernel has
		// not released it yet.
		for i := 0; ; i++ {
			if ln, err = net.Listen("tcp", b.addr); err == nil || i == 50 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			b.t.Fatal(err)
		}
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("MAYFLY_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	br, err := broker.New(broker.Config{
		GRPCListener: ln,
		TrustDomains: []spiffeid.TrustDomain{b.spire.TrustDomain},
		SVIDs:        b.svids,   // rotates as the agent rotates it
		Bundles:      b.bundles, // follows the server's bundle
		JWTBundles:   b.bundles,
		Audience:     spireBrokerID,
		PolicyPath:   filepath.Join(b.dir, "policy.yaml"),
		Store:        b.store,
		JWT:          jwt.Config{IssuerURL: "https://mayfly.test", KeyDir: filepath.Join(b.dir, "jwt-keys")},
		Logger:       logger,
	})
	if err != nil {
		_ = ln.Close()
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- br.Run(ctx) }()
	b.mu.Lock()
	b.cancel, b.done = cancel, done
	b.mu.Unlock()
}

// stop stops the broker and waits for it.
func (b *spireBroker) stop() {
	b.mu.Lock()
	cancel, done := b.cancel, b.done
	b.cancel, b.done = nil, nil
	b.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			b.t.Errorf("broker: %v", err)
		}
	case <-time.After(20 * time.Second):
		b.t.Error("broker did not stop within 20s")
	}
}

// dial connects the in-process workload through the Workload API.
func (b *spireBroker) dial(t *testing.T) *sdk.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, b.addr, sdk.WithWorkloadAPI(b.spire.SocketAddr()), sdk.WithBrokerID(spireBrokerID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// envDuration reads a duration from the environment, with a default.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a duration such as 30s", name, v)
	}
	return d
}

// svidWatch records the distinct X.509-SVIDs a source has served.
type svidWatch struct {
	src   x509svid.Source
	mu    sync.Mutex
	seen  map[string]bool
	first *x509svid.SVID
}

func (w *svidWatch) poll() {
	svid, err := w.src.GetX509SVID()
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen == nil {
		w.seen, w.first = map[string]bool{}, svid
	}
	w.seen[svid.Certificates[0].SerialNumber.String()] = true
}

// rotations is how many times the SVID changed.
func (w *svidWatch) rotations() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(len(w.seen)-1, 0)
}

// The broker serves its SPIRE SVID and verifies callers against the SPIRE
// bundle, both from the Workload API; a workload dials with
// sdk.WithWorkloadAPI. With short-lived SVIDs, IssueCredential every 100ms
// keeps succeeding across several rotations of both sides' SVIDs, past the
// end of the SVIDs that were current when the connection was made, and a
// renewing CredentialSource never hands out an expired credential.
//
// MAYFLY_SPIRE_SVID_TTL (default 30s) and MAYFLY_SPIRE_ROTATIONS (default
// 3) set the SVID lifetime and how many rotations of each side to wait for;
// the agent rotates at about half the lifetime, so the defaults take about
// a minute.
func TestSPIRERotationNoFailedCalls(t *testing.T) {
	t.Parallel()
	ttl := envDuration(t, "MAYFLY_SPIRE_SVID_TTL", 30*time.Second)
	want := 3
	if v := os.Getenv("MAYFLY_SPIRE_ROTATIONS"); v != "" {
		var err error
		if want, err = strconv.Atoi(v); err != nil || want < 1 {
			t.Fatalf("MAYFLY_SPIRE_ROTATIONS=%q: want a positive number", v)
		}
	}
	b := startSPIRE(t, ttl)
	client := b.dial(t)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := client.Credential(ctx, "short-lived")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	// The workload's view of its own SVID: the same agent cache as the
	// SDK's source, so the same rotations.
	own, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(b.spire.SocketAddr())))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	clientSVIDs, brokerSVIDs := &svidWatch{src: own}, &svidWatch{src: b.svids}
	clientSVIDs.poll()
	brokerSVIDs.poll()
	if id := clientSVIDs.first.ID.String(); id != spireWorkloadID {
		t.Fatalf("the workload's default SVID is %s, want %s (entries are ordered by entry ID)", id, spireWorkloadID)
	}
	// Past the end of the SVIDs in use when the connection was made.
	mustPass := clientSVIDs.first.Certificates[0].NotAfter
	if na := brokerSVIDs.first.Certificates[0].NotAfter; na.After(mustPass) {
		mustPass = na
	}

	deadline := time.Now().Add(time.Duration(want+2)*ttl*3/4 + 30*time.Second)
	var calls, failures int
	var lastErr error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		<-tick.C
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		cred, err := client.Issue(cctx, "demo-api-read", sdk.WithTTL(time.Minute))
		ccancel()
		calls++
		if err != nil {
			failures++
			lastErr = err
			t.Logf("call %d at +%v failed: %v", calls, time.Since(start).Round(time.Millisecond), err)
		} else if cred.Lease.Subject != spireWorkloadID {
			t.Fatalf("lease subject %s, want %s", cred.Lease.Subject, spireWorkloadID)
		}
		if c := src.Current(); c == nil {
			t.Errorf("at +%v the source has no valid credential", time.Since(start).Round(time.Millisecond))
		} else if !time.Now().Before(c.ExpiresAt) {
			t.Errorf("the source returned a credential that expired at %v", c.ExpiresAt)
		}
		clientSVIDs.poll()
		brokerSVIDs.poll()
		if clientSVIDs.rotations() >= want && brokerSVIDs.rotations() >= want && time.Now().After(mustPass) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d client and %d broker SVID rotations, want %d each (SVID TTL %v)",
				time.Since(start).Round(time.Second), clientSVIDs.rotations(), brokerSVIDs.rotations(), want, ttl)
		}
	}
	t.Logf("%d calls over %v; SVID rotations: client %d, broker %d; SVID TTL %v",
		calls, time.Since(start).Round(time.Second), clientSVIDs.rotations(), brokerSVIDs.rotations(), ttl)
	if failures > 0 {
		t.Fatalf("%d of %d calls failed across SVID rotations; last: %v%s", failures, calls, lastErr, staleConnHint(lastErr))
	}
}

// A JWT-SVID minted by SPIRE for the broker's audience authenticates a
// workload that presents no client certificate; one for another audience
// is refused.
func TestSPIREJWTSVID(t *testing.T) {
	t.Parallel()
	b := startSPIRE(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Server-authenticated TLS only: the broker's SVID checked against the
	// SPIRE bundle; no client certificate.
	tc := tlsconfig.TLSClientConfig(b.bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString(spireBrokerID)))
	tc.MinVersion = tls.VersionTLS13
	cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := mayflyv1.NewCredentialServiceClient(cc)

	issue := func(audience string) (*mayflyv1.IssueCredentialResponse, error) {
		svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience}, workloadapi.WithAddr(b.spire.SocketAddr()))
		if err != nil {
			t.Fatal(err)
		}
		if svid.ID.String() != spireWorkloadID {
			t.Fatalf("JWT-SVID for %s, want %s", svid.ID, spireWorkloadID)
		}
		mctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+svid.Marshal())
		return api.IssueCredential(mctx, &mayflyv1.IssueCredentialRequest{Entitlement: "demo-api-read"})
	}
	resp, err := issue(spireBrokerID)
	if err != nil {
		t.Fatalf("JWT-SVID for the broker's audience: %v", err)
	}
	if got := resp.GetLease().GetSubject(); got != spireWorkloadID {
		t.Errorf("lease subject %s, want %s", got, spireWorkloadID)
	}
	_, err = issue("https://someone-else.example")
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), `audience "https://someone-else.example" is not this broker's audience`) {
		t.Fatalf("JWT-SVID for another audience: %v", err)
	}
	_, err = api.IssueCredential(ctx, &mayflyv1.IssueCredentialRequest{Entitlement: "demo-api-read"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no credentials at all: %v", err)
	}
}

// TestSPIREWorkloadHelper is not a test: other tests run the test binary
// under other uids with MAYFLY_SPIRE_HELPER set, and this acts as the
// workload of that uid, printing one RESULT line.
func TestSPIREWorkloadHelper(t *testing.T) {
	mode := os.Getenv("MAYFLY_SPIRE_HELPER")
	if mode == "" {
		return
	}
	socket, addr := os.Getenv("MAYFLY_SPIRE_SOCKET"), os.Getenv("MAYFLY_SPIRE_BROKER")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch mode {
	case "fetch":
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(socket))
		if err != nil {
			fmt.Printf("RESULT %s %s\n", status.Code(err), err)
			return
		}
		fmt.Printf("RESULT OK %s\n", svid.ID)
	case "issue":
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		client, err := sdk.Dial(dctx, addr, sdk.WithWorkloadAPI(socket), sdk.WithBrokerID(spireBrokerID))
		if err != nil {
			fmt.Printf("RESULT dial-error %v\n", err)
			return
		}
		defer client.Close()
		cred, err := client.Issue(ctx, "demo-api-read")
		if err != nil {
			fmt.Printf("RESULT %s %v\n", status.Code(err), err)
			return
		}
		fmt.Printf("RESULT OK %s\n", cred.Lease.Subject)
	}
}

// runHelper runs TestSPIREWorkloadHelper as uid and returns its RESULT.
func runHelper(t *testing.T, b *spireBroker, uid uint32, mode string) string {
	t.Helper()
	cmd := testenv.TestBinaryCommand(t, &syscall.Credential{Uid: uid, Gid: uid}, "^TestSPIREWorkloadHelper$",
		"MAYFLY_SPIRE_HELPER="+mode, "MAYFLY_SPIRE_SOCKET="+b.spire.SocketAddr(), "MAYFLY_SPIRE_BROKER="+b.addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			return r
		}
	}
	t.Fatalf("helper as uid %d printed no result:\n%s", uid, out)
	return ""
}

// Identity is per uid: a process of a registered uid gets its own SVID and
// the broker sees that identity; a process of an unregistered uid gets no
// SVID at all, so it cannot even dial.
func TestSPIREIdentityPerUID(t *testing.T) {
	t.Parallel()
	b := startSPIRE(t, time.Hour)
	b.spire.Register(t, "spiffe://mayfly.test/workload/other", spireOtherUID)

	var got string
	deadline := time.Now().Add(20 * time.Second) // the agent syncs the new entry within about a second
	for {
		if got = runHelper(t, b, spireOtherUID, "issue"); strings.HasPrefix(got, "OK ") || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got != "OK spiffe://mayfly.test/workload/other" {
		t.Errorf("registered uid %d: %q", spireOtherUID, got)
	}

	if got := runHelper(t, b, spireUnregisteredUID, "fetch"); !strings.HasPrefix(got, "PermissionDenied") || !strings.Contains(got, "no identity issued") {
		t.Errorf("unregistered uid %d fetching an SVID: %q", spireUnregisteredUID, got)
	}
	if got := runHelper(t, b, spireUnregisteredUID, "issue"); !strings.HasPrefix(got, "dial-error sdk: workload API:") {
		t.Errorf("unregistered uid %d dialing: %q", spireUnregisteredUID, got)
	}
}

// SVIDs from another SPIRE are refused with Unauthenticated: one from a
// trust domain the broker does not accept, and one from a rogue server
// that claims the broker's own trust domain name with its own CA.
func TestSPIREForeignSVIDs(t *testing.T) {
	t.Parallel()
	b := startSPIRE(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokerBundle, err := b.bundles.GetX509BundleForTrustDomain(b.spire.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, trustDomain, want string
	}{
		{"other trust domain", "other.test", `trust domain "other.test" is not accepted`},
		{"rogue CA for the same trust domain", "mayfly.test", `X.509-SVID "spiffe://mayfly.test/workload/demo" is not signed by an authority in the trust bundle of "mayfly.test"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other := testenv.SPIRE(t, testenv.SPIREOptions{TrustDomain: tc.trustDomain})
			id := "spiffe://" + tc.trustDomain + "/workload/demo"
			other.Register(t, id, os.Getuid())
			svid := other.WaitX509SVID(t, id)
			// The workload trusts the real broker (its bundle is in the
			// set), so the refusal comes from the broker, not from TLS.
			trust := x509bundle.NewSet(brokerBundle)
			if tc.trustDomain != "mayfly.test" {
				trust.Add(other.Bundle(t))
			}
			client, err := sdk.Dial(ctx, b.addr, sdk.WithX509Source(svid, trust), sdk.WithBrokerID(spireBrokerID))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			_, err = client.Issue(ctx, "demo-api-read")
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Issue = %v; want Unauthenticated: %s", err, tc.want)
			}
		})
	}
}

// A new X.509 authority is picked up live: once prepared it is in the
// broker's bundle; once active, the old one tainted and revoked, SVIDs are
// signed by the new one, the broker accepts them and refuses an SVID signed
// by the revoked authority, and its own new SVID is accepted by the
// workload.
func TestSPIREBundleRotation(t *testing.T) {
	t.Parallel()
	b := startSPIRE(t, time.Hour)
	client := b.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	issue := func() error {
		_, err := client.Issue(ctx, "demo-api-read")
		return err
	}
	if err := issue(); err != nil {
		t.Fatal(err)
	}
	oldSVID := b.spire.WaitX509SVID(t, spireWorkloadID)
	td := b.spire.TrustDomain
	authorities := func() int {
		bundle, err := b.bundles.GetX509BundleForTrustDomain(td)
		if err != nil {
			return 0
		}
		return len(bundle.X509Authorities())
	}
	if n := authorities(); n != 1 {
		t.Fatalf("%d authorities in the broker's bundle at start, want 1", n)
	}

	prepared := b.spire.PrepareX509Authority(t)
	eventually(t, 30*time.Second, "the prepared authority in the broker's bundle", func() bool { return authorities() == 2 })
	if err := issue(); err != nil {
		t.Fatalf("after prepare: %v", err)
	}

	active, _, _ := b.spire.X509Authorities(t)
	b.spire.ActivateX509Authority(t, prepared)
	b.spire.TaintX509Authority(t, active.AuthorityID)
	// Tainting makes the agent rotate every SVID the old authority signed.
	eventually(t, 60*time.Second, "SVIDs signed by the new authority", func() bool {
		w := b.spire.WaitX509SVID(t, spireWorkloadID)
		svid, err := b.svids.GetX509SVID()
		return err == nil && !sameIssuer(w, oldSVID) && !sameIssuer(svid, oldSVID)
	})
	b.spire.RevokeX509Authority(t, active.AuthorityID)
	eventually(t, 30*time.Second, "the revoked authority gone from the broker's bundle", func() bool { return authorities() == 1 })

	if err := issue(); err != nil {
		t.Fatalf("after the authority rotation: %v%s", err, staleConnHint(err))
	}
	stale, err := sdk.Dial(ctx, b.addr, sdk.WithX509Source(oldSVID, b.bundles), sdk.WithBrokerID(spireBrokerID))
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	_, err = stale.Issue(ctx, "demo-api-read")
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "is not signed by an authority in the trust bundle") {
		t.Fatalf("SVID of the revoked authority: %v", err)
	}
}

// staleConnHint explains the failure of a call made on a connection whose
// handshake SVID has since expired or lost its authority: the broker checks
// that SVID again on every call, so a client must open a new connection
// when its SVID rotates.
func staleConnHint(err error) string {
	if status.Code(err) != codes.Unauthenticated {
		return ""
	}
	if msg := err.Error(); strings.Contains(msg, "expired at") || strings.Contains(msg, "is not signed by an authority") {
		return "\n(the SDK kept using a gRPC connection made with an SVID that has since expired or lost its authority;" +
			" sdk.Client must open a new connection when its X.509-SVID rotates)"
	}
	return ""
}

// sameIssuer says whether two SVIDs were signed by the same authority.
func sameIssuer(a, b *x509svid.SVID) bool {
	return string(a.Certificates[0].AuthorityKeyId) == string(b.Certificates[0].AuthorityKeyId)
}

// A renewing CredentialSource with the Workload API as identity rides out
// a broker restart on the same port: while the broker is down it reports
// Unavailable on Errors, Current returns nil once the credential has
// expired (never the expired credential), and after the restart it gets a
// valid credential again.
func TestSPIRESourceAcrossBrokerRestart(t *testing.T) {
	t.Parallel()
	b := startSPIRE(t, time.Hour)
	client := b.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	src, err := client.Credential(ctx, "short-lived")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	before := src.Current()

	b.stop()
	var gotErr error
	eventually(t, 20*time.Second, "an error on Errors while the broker is down", func() bool {
		select {
		case gotErr = <-src.Errors():
			return true
		default:
			return false
		}
	})
	if status.Code(gotErr) != codes.Unavailable {
		t.Errorf("error while the broker is down: %v, want Unavailable", gotErr)
	}
	// The 3s credential runs out during the outage.
	eventually(t, 10*time.Second, "Current nil after expiry", func() bool { return src.Current() == nil })
	if !time.Now().After(before.ExpiresAt) {
		t.Errorf("Current was nil before the credential expired at %v", before.ExpiresAt)
	}

	b.start(nil)
	eventually(t, 40*time.Second, "a valid credential after the restart", func() bool {
		c := src.Current()
		return c != nil && time.Now().Before(c.ExpiresAt)
	})
	for i := 0; i < 20; i++ { // and it stays valid
		if c := src.Current(); c == nil || !time.Now().Before(c.ExpiresAt) {
			t.Fatalf("after the restart the source returned %v", c)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
