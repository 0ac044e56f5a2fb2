package authn_test

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/mayflyhq/mayfly/broker/authn"
)

func TestLoadSVIDFiles(t *testing.T) {
	s := newTestServer(t, authn.Config{})
	svid, err := s.ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := s.ca.WriteSVID("demo", svid)
	if err != nil {
		t.Fatal(err)
	}
	svids, bundles, err := authn.LoadSVIDFiles(certPath, keyPath, s.ca.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.GetX509BundleForTrustDomain(td); err != nil {
		t.Fatalf("bundle for %s: %v", td, err)
	}
	cfg := authn.ClientTLSConfig(svids, bundles, tlsconfig.AuthorizeID(brokerID))
	if err := s.call(t, cfg, ""); err != nil {
		t.Fatalf("call with SVID from files: %v", err)
	}
	if got := s.principal().ID; got != workload.String() {
		t.Errorf("principal ID = %s", got)
	}

	_, _, err = authn.LoadSVIDFiles(certPath, keyPath, certPath+".missing")
	if err == nil || !strings.HasPrefix(err.Error(), "authn: load trust bundle from ") {
		t.Errorf("missing bundle: error = %v", err)
	}
}

func TestFileSourceFollowsRenewal(t *testing.T) {
	ca := newCA(t)
	first, err := ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := ca.WriteSVID("demo", first)
	if err != nil {
		t.Fatal(err)
	}
	src, err := authn.NewFileSource(certPath, keyPath, ca.BundlePath(), authn.WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := src.GetX509SVID(); !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("FileSource does not hold the SVID in the files")
	}
	if _, err := src.GetX509BundleForTrustDomain(evilTD); err == nil || err.Error() != `authn: no X.509 bundle for trust domain "evil.test" (the bundle file is for "mayfly.test")` {
		t.Errorf("bundle for another trust domain: error = %v", err)
	}

	// Nothing changed: Reload is a no-op.
	if changed, err := src.Reload(); changed || err != nil {
		t.Fatalf("Reload of unchanged files = %v, %v", changed, err)
	}

	// A half-written renewal is refused and the previous SVID stays.
	if err := os.WriteFile(certPath, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := src.Reload(); changed || err == nil {
		t.Fatalf("Reload of a broken file = %v, %v; want an error", changed, err)
	}
	if got, _ := src.GetX509SVID(); !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("a broken file replaced the SVID")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()

	updated := src.Updated()
	second, err := ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.WriteSVID("demo", second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-updated:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not pick up the renewed SVID")
	}
	if got, _ := src.GetX509SVID(); !got.Certificates[0].Equal(second.Certificates[0]) {
		t.Error("FileSource does not hold the renewed SVID")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v", err)
	}
}

func TestServerServesRotatedSVID(t *testing.T) {
	ca := newCA(t)
	first, err := ca.MintX509SVIDWithDNS(brokerID, time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := ca.WriteSVID("broker", first)
	if err != nil {
		t.Fatal(err)
	}
	src, err := authn.NewFileSource(certPath, keyPath, ca.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(authn.ServerCredentials(src, src)))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	serverCert := func() []byte {
		t.Helper()
		cfg := authn.ClientTLSConfig(nil, x509bundle.NewSet(ca.X509Bundle()), tlsconfig.AuthorizeID(brokerID))
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var p peer.Peer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].Raw
	}

	if string(serverCert()) != string(first.Certificates[0].Raw) {
		t.Fatal("server does not serve its SVID")
	}
	second, err := ca.MintX509SVIDWithDNS(brokerID, time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.WriteSVID("broker", second); err != nil {
		t.Fatal(err)
	}
	if changed, err := src.Reload(); !changed || err != nil {
		t.Fatalf("Reload = %v, %v", changed, err)
	}
	if string(serverCert()) != string(second.Certificates[0].Raw) {
		t.Fatal("server does not serve its renewed SVID on a new connection")
	}
}
