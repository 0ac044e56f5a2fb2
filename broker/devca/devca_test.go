package devca_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mayflyhq/mayfly/broker/devca"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("mayfly.test")
	workload = spiffeid.RequireFromPath(td, "/demo")
)

func open(t *testing.T) (*devca.CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := devca.Open(dir, td)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return ca, dir
}

func TestOpenCreatesPrivateFilesAndReopenKeepsCA(t *testing.T) {
	ca, dir := open(t)

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("dir mode = %o, want 700", got)
	}
	for _, name := range []string{devca.CAFile, devca.JWTKeyFile, devca.BundleFile, devca.JWTBundleFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode = %o, want 600", name, got)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("dir holds %d entries, want 4 (no temporary files left)", len(entries))
	}

	again, err := devca.Open(dir, td)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if !again.Certificate().Equal(ca.Certificate()) {
		t.Error("reopen made a new CA certificate")
	}
	if again.JWTKeyID() != ca.JWTKeyID() || !again.JWTBundle().Equal(ca.JWTBundle()) {
		t.Error("reopen made a new JWT key")
	}

	// An SVID minted before the restart verifies against the bundle after it.
	svid, err := ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, again.X509Bundle()); err != nil {
		t.Errorf("verify across restart: %v", err)
	}
}

func TestCAProperties(t *testing.T) {
	ca, _ := open(t)
	c := ca.Certificate()
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate cannot sign certificates")
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://mayfly.test" {
		t.Errorf("CA URI SANs = %v, want [spiffe://mayfly.test]", c.URIs)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < devca.CALifetime || life > devca.CALifetime+time.Minute {
		t.Errorf("CA lifetime = %s, want about a year", life)
	}
	if c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("CA key = %s, want ECDSA", c.PublicKeyAlgorithm)
	}
}

func TestBundleFilesLoad(t *testing.T) {
	ca, _ := open(t)
	xb, err := x509bundle.Load(td, ca.BundlePath())
	if err != nil {
		t.Fatal(err)
	}
	if !xb.Equal(ca.X509Bundle()) {
		t.Error("bundle.pem differs from X509Bundle()")
	}
	jb, err := jwtbundle.Load(td, ca.JWTBundlePath())
	if err != nil {
		t.Fatal(err)
	}
	if !jb.Equal(ca.JWTBundle()) {
		t.Error("jwt-bundle.json differs from JWTBundle()")
	}
}

func TestOpenRefusesOtherTrustDomain(t *testing.T) {
	_, dir := open(t)
	_, err := devca.Open(dir, spiffeid.RequireTrustDomainFromString("other.test"))
	if err == nil || !strings.Contains(err.Error(), `CA is not for trust domain "other.test"`) {
		t.Fatalf("Open with another trust domain: err = %v", err)
	}
}

func TestConcurrentOpenAgrees(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	const n = 8
	cas := make([]*devca.CA, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ca, err := devca.Open(dir, td)
			if err != nil {
				t.Error(err)
				return
			}
			cas[i] = ca
		})
	}
	wg.Wait()
	for _, ca := range cas[1:] {
		if ca == nil || cas[0] == nil {
			t.FailNow()
		}
		if !ca.Certificate().Equal(cas[0].Certificate()) || ca.JWTKeyID() != cas[0].JWTKeyID() {
			t.Fatal("concurrent Open made different CAs")
		}
	}
}

func TestMintX509SVID(t *testing.T) {
	ca, _ := open(t)
	before := time.Now()
	svid, err := ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify(svid.Certificates, ca.X509Bundle())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id != workload || svid.ID != workload {
		t.Errorf("ID = %v / %v, want %v", id, svid.ID, workload)
	}
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 {
		t.Errorf("URI SANs = %v, want one", leaf.URIs)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IsCA = %v, KeyUsage = %v; want leaf with digitalSignature only", leaf.IsCA, leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("ExtKeyUsage = %v, want clientAuth and serverAuth", leaf.ExtKeyUsage)
	}
	if d := before.Sub(leaf.NotBefore); d < 29*time.Second || d > 31*time.Second {
		t.Errorf("NotBefore is %s before now, want 30s", d)
	}
	if d := leaf.NotAfter.Sub(before); d < time.Hour-time.Second || d > time.Hour+time.Second {
		t.Errorf("NotAfter is %s after now, want 1h", d)
	}
	// x509svid.Parse (used by Load) accepts it as an SVID.
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.Parse(certPEM, keyPEM); err != nil {
		t.Errorf("x509svid.Parse: %v", err)
	}

	if _, err := ca.MintX509SVID(spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("other.test"), "/x"), time.Hour); err == nil {
		t.Error("minted an SVID for another trust domain")
	}
	if _, err := ca.MintX509SVID(workload, 0); err == nil {
		t.Error("minted an SVID with TTL 0")
	}
}

func TestMintX509SVIDWithDNS(t *testing.T) {
	ca, _ := open(t)
	svid, err := ca.MintX509SVIDWithDNS(spiffeid.RequireFromPath(td, "/broker"), time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, ca.X509Bundle()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	leaf := svid.Certificates[0]
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, host := range []string{"localhost", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("web PKI verification for %s: %v", host, err)
		}
	}
	if len(leaf.URIs) != 1 {
		t.Errorf("URI SANs = %v, want one", leaf.URIs)
	}
}

func TestInvalidMaterialIsRefused(t *testing.T) {
	ca, _ := open(t)
	foreign, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	if foreign.Certificate().Subject.String() != ca.Certificate().Subject.String() {
		t.Error("foreign CA subject differs")
	}
	now := time.Now()
	cases := []struct {
		name string
		ca   *devca.CA
		opts devca.MintOptions
		want string
	}{
		{"expired", ca, devca.MintOptions{ID: workload, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, "expired"},
		{"not yet valid", ca, devca.MintOptions{ID: workload, NotBefore: now.Add(time.Hour), TTL: 2 * time.Hour}, "not yet valid"},
		{"two URI SANs", ca, devca.MintOptions{ID: workload, TTL: time.Hour, ExtraURIs: []string{"spiffe://mayfly.test/other"}}, "more than one URI SAN"},
		{"no URI SAN", ca, devca.MintOptions{TTL: time.Hour, DNS: []string{"example.com"}}, "no URI SAN"},
		{"leaf is a CA", ca, devca.MintOptions{ID: workload, TTL: time.Hour, IsCA: true}, "CA flag"},
		{"foreign CA", foreign, devca.MintOptions{ID: workload, TTL: time.Hour}, "unknown authority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			svid, err := tc.ca.MintX509SVIDOpts(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = x509svid.Verify(svid.Certificates, ca.X509Bundle())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestWriteSVID(t *testing.T) {
	ca, dir := open(t)
	svid, err := ca.MintX509SVID(workload, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, err := ca.WriteSVID("demo", svid)
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, "demo.crt.pem") || keyPath != filepath.Join(dir, "demo.key.pem") {
		t.Errorf("paths = %s, %s", certPath, keyPath)
	}
	for _, p := range []string{certPath, keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode = %o, want 600", p, got)
		}
	}
	loaded, err := x509svid.Load(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ID != workload || !loaded.Certificates[0].Equal(svid.Certificates[0]) {
		t.Error("loaded SVID differs")
	}
	for _, bad := range []string{"", "..", "a/b"} {
		if _, _, err := ca.WriteSVID(bad, svid); err == nil {
			t.Errorf("WriteSVID(%q) succeeded", bad)
		}
	}
	foreign, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := foreign.WriteSVID("demo", svid); err == nil {
		t.Error("foreign CA wrote files")
	}
}

func TestMintJWTSVID(t *testing.T) {
	ca, _ := open(t)
	token, err := ca.MintJWTSVID(workload, []string{"mayfly"}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := jwtbundle.Load(td, ca.JWTBundlePath())
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{"mayfly"})
	if err != nil {
		t.Fatalf("ParseAndValidate: %v", err)
	}
	if svid.ID != workload || len(svid.Audience) != 1 || svid.Audience[0] != "mayfly" {
		t.Errorf("svid = %v %v", svid.ID, svid.Audience)
	}
	if d := time.Until(svid.Expiry); d < 4*time.Minute || d > 5*time.Minute {
		t.Errorf("expires in %s, want 5m", d)
	}
}

func TestForgedJWTsAreRefused(t *testing.T) {
	ca, _ := open(t)
	foreign, err := devca.NewForeignCA(td)
	if err != nil {
		t.Fatal(err)
	}
	base := devca.JWTOptions{ID: workload, Audience: []string{"mayfly"}, TTL: time.Minute}
	with := func(f func(*devca.JWTOptions)) devca.JWTOptions { o := base; f(&o); return o }
	cases := []struct {
		name string
		ca   *devca.CA
		opts devca.JWTOptions
		want string
	}{
		{"alg none", ca, with(func(o *devca.JWTOptions) { o.Forgery = devca.ForgeAlgNone }), "unable to parse"},
		{"HS256 with public key", ca, with(func(o *devca.JWTOptions) { o.Forgery = devca.ForgeHS256PublicKey }), "unable to parse"},
		{"foreign key, same kid", foreign, with(func(o *devca.JWTOptions) { o.KeyID = ca.JWTKeyID() }), "unable to get claims"},
		{"expired", ca, with(func(o *devca.JWTOptions) { o.IssuedAt = time.Now().Add(-time.Hour) }), "expired"},
		{"wrong audience", ca, with(func(o *devca.JWTOptions) { o.Audience = []string{"other"} }), "audience"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token, err := tc.ca.MintJWTSVIDOpts(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = jwtsvid.ParseAndValidate(token, ca.JWTBundle(), []string{"mayfly"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
