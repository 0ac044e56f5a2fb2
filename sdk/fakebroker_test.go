package sdk

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// This file holds the test doubles: a tiny SPIFFE CA (testPKI) and a fake
// broker (fakeBroker) that implements CredentialService over real mTLS. The
// real broker lives in broker/, which the SDK must not import.

const (
	testTrustDomain = "example.org"
	testBrokerID    = "spiffe://example.org/mayfly/broker"
	testWorkloadID  = "spiffe://example.org/workload/orders"
)

// testPKI is a throwaway certificate authority for one trust domain.
type testPKI struct {
	td     spiffeid.TrustDomain
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newTestPKI(t *testing.T, trustDomain string) *testPKI {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: "test CA " + trustDomain},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{td: td, caCert: cert, caKey: key}
}

func randomSerial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// bundle is the trust bundle of the PKI's trust domain.
func (p *testPKI) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(p.td, []*x509.Certificate{p.caCert})
}

// svid mints an X.509-SVID for id.
func (p *testPKI) svid(t *testing.T, id string) *x509svid.SVID {
	t.Helper()
	sid := spiffeid.RequireFromString(id)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{sid.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// writeFiles writes an SVID and the bundle as PEM files and returns their paths.
func (p *testPKI) writeFiles(t *testing.T, svid *x509svid.SVID) (certPath, keyPath, bundlePath string) {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, err := p.bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	certPath = filepath.Join(dir, "svid.pem")
	keyPath = filepath.Join(dir, "svid_key.pem")
	bundlePath = filepath.Join(dir, "bundle.pem")
	for path, data := range map[string][]byte{certPath: certPEM, keyPath: keyPEM, bundlePath: bundlePEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath, bundlePath
}

// brokerCall is one RPC seen by the fakeBroker.
type brokerCall struct {
	method    string // "issue", "renew", "revoke", "get", "list"
	at        time.Time
	leaseID   string // the lease asked about, or minted
	requestID string
	req       any
	subject   string
}

// fakeBroker is a fake CredentialService with controllable behaviour. It
// keeps leases in memory and hands out JWT-shaped tokens
// "token-<lease>-<version>" unless credential is set.
type fakeBroker struct {
	mayflyv1.UnimplementedCredentialServiceServer

	now func() time.Time // the broker's clock

	mu sync.Mutex
	// Behaviour, set before or during a test under mu.
	defaultTTL    time.Duration                                          // TTL when the request has none
	maxTTL        time.Duration                                          // hard end = issued + maxTTL; 0 = no hard end
	notRenewable  bool                                                   // mint leases with renewable=false
	renewNewValue bool                                                   // RenewLease returns a new credential value
	credential    func(leaseID string, version int) *mayflyv1.Credential // overrides the token credential
	failIssue     []codes.Code                                           // each IssueCredential pops one; OK means no failure
	failRenew     []codes.Code                                           // each RenewLease pops one
	mint          func(*mayflyv1.Lease)                                  // changes each lease as it is minted
	loseIssue     int                                                    // mint, then answer Unavailable this many times
	gate          chan struct{}                                          // when set, IssueCredential and RenewLease wait for it to be closed

	leases    map[string]*testLease
	order     []string          // lease ids in creation order
	byRequest map[string]string // subject/request id → lease id
	calls     []brokerCall
	seq       int
}

type testLease struct {
	lease   *mayflyv1.Lease
	version int // credential value version, bumped by renewals with a new value
}

// startFakeBroker serves a fakeBroker over mTLS with the SVID brokerID,
// accepting clients of pki's trust domain. configure runs before serving.
func startFakeBroker(t *testing.T, pki *testPKI, brokerID string, configure func(*fakeBroker)) (*fakeBroker, string) {
	t.Helper()
	b := &fakeBroker{
		now:        time.Now,
		defaultTTL: time.Minute,
		leases:     map[string]*testLease{},
		byRequest:  map[string]string{},
	}
	if configure != nil {
		configure(b)
	}
	tlsConfig := tlsconfig.MTLSServerConfig(pki.svid(t, brokerID), pki.bundle(), tlsconfig.AuthorizeMemberOf(pki.td))
	tlsConfig.MinVersion = tls.VersionTLS13
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConfig)))
	mayflyv1.RegisterCredentialServiceServer(srv, b)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return b, lis.Addr().String()
}

// peerSubject is the caller's SPIFFE ID from its client certificate.
func peerSubject(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "test broker: no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "", status.Error(codes.Unauthenticated, "test broker: no client certificate")
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return "", status.Error(codes.Unauthenticated, "test broker: "+err.Error())
	}
	return id.String(), nil
}

// pop takes the next injected failure off a queue; OK when it is empty.
func pop(queue *[]codes.Code) codes.Code {
	if len(*queue) == 0 {
		return codes.OK
	}
	c := (*queue)[0]
	*queue = (*queue)[1:]
	return c
}

func (b *fakeBroker) record(c brokerCall) {
	c.at = time.Now()
	b.calls = append(b.calls, c)
}

// callsOf returns the recorded calls of one method.
func (b *fakeBroker) callsOf(method string) []brokerCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []brokerCall
	for _, c := range b.calls {
		if c.method == method {
			out = append(out, c)
		}
	}
	return out
}

// lease returns a copy of a lease as the broker sees it.
func (b *fakeBroker) lease(id string) *mayflyv1.Lease {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l, ok := b.leases[id]; ok {
		return cloneLease(l.lease)
	}
	return nil
}

// leaseCount is how many leases were minted.
func (b *fakeBroker) leaseCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.order)
}

// revokeBehindBack revokes a lease as an operator's kill switch would.
func (b *fakeBroker) revokeBehindBack(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.leases[id].lease
	l.State = mayflyv1.LeaseState_LEASE_STATE_REVOKED
	l.RevokeReason = "kill_switch"
	l.RevokedAt = timestamppb.New(b.now())
}

// set changes behaviour under the lock.
func (b *fakeBroker) set(f func(b *fakeBroker)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

func cloneLease(l *mayflyv1.Lease) *mayflyv1.Lease {
	return proto.Clone(l).(*mayflyv1.Lease)
}

func (b *fakeBroker) credentialFor(l *testLease) *mayflyv1.Credential {
	if b.credential != nil {
		return b.credential(l.lease.Id, l.version)
	}
	return &mayflyv1.Credential{
		Kind: &mayflyv1.Credential_Jwt{Jwt: &mayflyv1.JWTCredential{
			Token:  fmt.Sprintf("token-%s-%d", l.lease.Id, l.version),
			Scopes: []string{"orders:read"},
		}},
		ExpiresAt: l.lease.ExpiresAt,
	}
}

// waitGate holds a call while the gate is set and not yet closed.
func (b *fakeBroker) waitGate(ctx context.Context) error {
	b.mu.Lock()
	gate := b.gate
	b.mu.Unlock()
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (b *fakeBroker) IssueCredential(ctx context.Context, req *mayflyv1.IssueCredentialRequest) (*mayflyv1.IssueCredentialResponse, error) {
	subject, err := peerSubject(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.waitGate(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	call := brokerCall{method: "issue", requestID: req.GetRequestId(), req: req, subject: subject}
	if code := pop(&b.failIssue); code != codes.OK {
		b.record(call)
		return nil, status.Error(code, "test broker: injected failure")
	}

	key := subject + "/" + req.GetRequestId()
	id, seen := b.byRequest[key]
	if !seen {
		now := b.now()
		ttl := b.defaultTTL
		if req.GetTtl() != nil {
			ttl = req.GetTtl().AsDuration()
		}
		b.seq++
		id = fmt.Sprintf("lease%03d", b.seq)
		l := &mayflyv1.Lease{
			Id:          id,
			Entitlement: req.GetEntitlement(),
			Subject:     subject,
			GrantId:     "grant-1",
			Issuer:      "jwt",
			State:       mayflyv1.LeaseState_LEASE_STATE_ACTIVE,
			IssuedAt:    timestamppb.New(now),
			ExpiresAt:   timestamppb.New(now.Add(ttl)),
			Renewable:   !b.notRenewable,
			Revocable:   true,
		}
		if b.maxTTL > 0 {
			hardEnd := now.Add(b.maxTTL)
			l.HardEnd = timestamppb.New(hardEnd)
			if ttl > b.maxTTL {
				l.ExpiresAt = l.HardEnd
			}
		}
		if b.mint != nil {
			b.mint(l)
		}
		b.leases[id] = &testLease{lease: l}
		b.order = append(b.order, id)
		if req.GetRequestId() != "" {
			b.byRequest[key] = id
		}
	}
	call.leaseID = id
	b.record(call)
	if b.loseIssue > 0 {
		b.loseIssue--
		return nil, status.Error(codes.Unavailable, "test broker: response lost")
	}
	tl := b.leases[id]
	return &mayflyv1.IssueCredentialResponse{
		Lease:        cloneLease(tl.lease),
		Credential:   b.credentialFor(tl),
		EffectiveTtl: durationpb.New(tl.lease.ExpiresAt.AsTime().Sub(tl.lease.IssuedAt.AsTime())),
	}, nil
}

func (b *fakeBroker) RenewLease(ctx context.Context, req *mayflyv1.RenewLeaseRequest) (*mayflyv1.RenewLeaseResponse, error) {
	subject, err := peerSubject(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.waitGate(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record(brokerCall{method: "renew", leaseID: req.GetLeaseId(), req: req, subject: subject})
	if code := pop(&b.failRenew); code != codes.OK {
		return nil, status.Error(code, "test broker: injected failure")
	}
	tl, ok := b.leases[req.GetLeaseId()]
	if !ok || tl.lease.Subject != subject {
		return nil, status.Error(codes.NotFound, "lease not found")
	}
	l := tl.lease
	now := b.now()
	switch {
	case l.State != mayflyv1.LeaseState_LEASE_STATE_ACTIVE:
		return nil, status.Error(codes.FailedPrecondition, "lease is not active")
	case !now.Before(l.ExpiresAt.AsTime()):
		return nil, status.Error(codes.FailedPrecondition, "lease has expired")
	case !l.Renewable:
		return nil, status.Error(codes.FailedPrecondition, "lease is not renewable")
	}
	ttl := b.defaultTTL
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	expires, clamped := now.Add(ttl), false
	if l.HardEnd != nil && expires.After(l.HardEnd.AsTime()) {
		expires, clamped = l.HardEnd.AsTime(), true
	}
	l.ExpiresAt = timestamppb.New(expires)
	resp := &mayflyv1.RenewLeaseResponse{Lease: cloneLease(l), TtlClamped: clamped}
	if b.renewNewValue {
		tl.version++
		resp.Credential = b.credentialFor(tl)
	}
	return resp, nil
}

func (b *fakeBroker) RevokeLease(ctx context.Context, req *mayflyv1.RevokeLeaseRequest) (*mayflyv1.RevokeLeaseResponse, error) {
	subject, err := peerSubject(ctx)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record(brokerCall{method: "revoke", leaseID: req.GetLeaseId(), req: req, subject: subject})
	tl, ok := b.leases[req.GetLeaseId()]
	if !ok || tl.lease.Subject != subject {
		return nil, status.Error(codes.NotFound, "lease not found")
	}
	if tl.lease.State == mayflyv1.LeaseState_LEASE_STATE_ACTIVE {
		tl.lease.State = mayflyv1.LeaseState_LEASE_STATE_REVOKED
		tl.lease.RevokeReason = "explicit"
		tl.lease.RevokedAt = timestamppb.New(b.now())
	}
	return &mayflyv1.RevokeLeaseResponse{Lease: cloneLease(tl.lease)}, nil
}

func (b *fakeBroker) GetLease(ctx context.Context, req *mayflyv1.GetLeaseRequest) (*mayflyv1.GetLeaseResponse, error) {
	subject, err := peerSubject(ctx)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record(brokerCall{method: "get", leaseID: req.GetLeaseId(), req: req, subject: subject})
	tl, ok := b.leases[req.GetLeaseId()]
	if !ok || tl.lease.Subject != subject {
		return nil, status.Error(codes.NotFound, "lease not found")
	}
	return &mayflyv1.GetLeaseResponse{Lease: cloneLease(tl.lease)}, nil
}

func (b *fakeBroker) ListLeases(ctx context.Context, req *mayflyv1.ListLeasesRequest) (*mayflyv1.ListLeasesResponse, error) {
	subject, err := peerSubject(ctx)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record(brokerCall{method: "list", req: req, subject: subject})
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	start := 0
	if tok := req.GetPageToken(); tok != "" {
		if start, err = strconv.Atoi(tok); err != nil {
			return nil, status.Error(codes.InvalidArgument, "page_token is malformed")
		}
	}
	var matching []*mayflyv1.Lease
	for _, id := range b.order {
		l := b.leases[id].lease
		if l.Subject != subject || (req.GetEntitlement() != "" && l.Entitlement != req.GetEntitlement()) {
			continue
		}
		if len(req.GetStates()) > 0 && !containsState(req.GetStates(), l.State) {
			continue
		}
		matching = append(matching, l)
	}
	resp := &mayflyv1.ListLeasesResponse{}
	for i := start; i < len(matching) && i < start+size; i++ {
		resp.Leases = append(resp.Leases, cloneLease(matching[i]))
	}
	if start+size < len(matching) {
		resp.NextPageToken = strconv.Itoa(start + size)
	}
	return resp, nil
}

func containsState(states []mayflyv1.LeaseState, s mayflyv1.LeaseState) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

// fakeClock is a clock moved by hand. Every timer it creates is announced on
// timers, so a test knows when the source has gone to sleep and for how long.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []*fakeTimer
	timers  chan time.Duration
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, timers: make(chan time.Duration, 100)}
}

type fakeTimer struct {
	clk *fakeClock
	at  time.Time
	c   chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		t.c <- c.now
	} else {
		c.pending = append(c.pending, t)
	}
	c.timers <- d
	return t
}

// Advance moves time forward and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.pending[:0]
	for _, t := range c.pending {
		if !t.at.After(c.now) {
			t.c <- c.now
		} else {
			kept = append(kept, t)
		}
	}
	c.pending = kept
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	for i, p := range t.clk.pending {
		if p == t {
			t.clk.pending = append(t.clk.pending[:i], t.clk.pending[i+1:]...)
			return true
		}
	}
	return false
}
