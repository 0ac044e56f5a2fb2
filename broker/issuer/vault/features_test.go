package vault_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// issueDirect runs Issue for a fresh pending lease and returns the lease
// as the store would hold it once active, and the credential.
func issueDirect(t *testing.T, iss *vault.Issuer, p vault.Params, ent string, ttl time.Duration) (*lease.Lease, *issuer.Credential, error) {
	t.Helper()
	l := pendingLease(ent, ttl)
	var ref string
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := iss.Issue(ctx, issuer.Request{Lease: l.Clone(), Params: p, Bind: bindTo(&ref)})
	if err == nil {
		// As the store activates it: the credential's reference replaces
		// the bound one.
		l.State, l.ExternalRef, l.DueAt = lease.StateActive, ref, l.ExpiresAt
		if c.ExternalRef != "" {
			l.ExternalRef = c.ExternalRef
		}
	}
	return l, c, err
}

// TestPKI issues a certificate whose lease belongs to the per-lease token,
// refuses a PKI role without generate_lease, and revokes the certificate.
func TestPKI(t *testing.T) {
	f := newFixture(t)
	c := f.v.Client
	if err := c.Sys().Mount("pki", &vaultapi.MountInput{Type: "pki", Config: vaultapi.MountConfigInput{MaxLeaseTTL: "24h"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("pki/root/generate/internal", map[string]any{"common_name": "Mayfly test CA", "ttl": "24h"}); err != nil {
		t.Fatal(err)
	}
	for name, leased := range map[string]bool{"workload": true, "unleased": false} {
		if _, err := c.Logical().Write("pki/roles/"+name, map[string]any{
			"allow_any_name": true, "allowed_uri_sans": "spiffe://mayfly.test/*", "generate_lease": leased, "max_ttl": "2h",
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Sys().PutPolicy("pki-workload", `path "pki/issue/*" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{"mayfly-broker", "pki-workload"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	iss := f.issuer(t, f.cfg(tok.Auth.ClientToken, nil))

	p := params(t, `
pki:
  role: workload
  common_name: "{{lease_id}}.workloads.internal"
  uri_sans: ["{{subject}}"]
token_policies: [pki-workload]`)
	l, cred, err := issueDirect(t, iss, p, "orders-cert", 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Kind != issuer.KindCertificate || cred.KeyPEM == "" || !strings.Contains(cred.ChainPEM, "BEGIN CERTIFICATE") {
		t.Fatalf("credential = %v, chain %d bytes", cred, len(cred.ChainPEM))
	}
	block, _ := pem.Decode([]byte(cred.CertPEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != l.ID+".workloads.internal" || len(cert.URIs) != 1 || cert.URIs[0].String() != l.Subject {
		t.Errorf("certificate CN %q, URIs %v", cert.Subject.CommonName, cert.URIs)
	}
	if cert.NotAfter.After(l.ExpiresAt) || cert.NotAfter.Before(l.ExpiresAt.Add(-time.Minute)) ||
		cred.ExpiresAt.After(cert.NotAfter) || cred.ExpiresAt.Before(cert.NotAfter.Add(-3*time.Second)) {
		t.Errorf("NotAfter %v, credential expiry %v; want about the lease's %v", cert.NotAfter, cred.ExpiresAt, l.ExpiresAt)
	}
	if _, err := iss.Renew(context.Background(), l, p, l.ExpiresAt.Add(10*time.Minute)); !errors.Is(err, issuer.ErrRejected) {
		t.Errorf("Renew of a certificate = %v; want ErrRejected", err)
	}
	if err := iss.Revoke(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	serial := strings.ReplaceAll(strings.ToLower(fmtSerial(cert)), ":", "-")
	revoked, err := c.Logical().List("pki/certs/revoked")
	if err != nil || revoked == nil || !strings.Contains(strings.ToLower(strings.ReplaceAll(fmtAny(revoked.Data["keys"]), ":", "-")), serial) {
		t.Errorf("certificate %s not listed as revoked after Revoke (%v)", serial, err)
	}

	// A role without generate_lease issues certificates with no lease.
	pu := params(t, "pki: {role: unleased, common_name: x.internal}\ntoken_policies: [pki-workload]")
	if _, _, err := issueDirect(t, iss, pu, "orders-cert-unleased", 30*time.Minute); !errors.Is(err, vault.ErrNoLease) || !strings.Contains(err.Error(), "generate_lease") {
		t.Errorf("Issue from a role without generate_lease = %v; want ErrNoLease naming generate_lease", err)
	}
}

func fmtSerial(c *x509.Certificate) string {
	b := c.SerialNumber.Bytes()
	parts := make([]string, len(b))
	for k, x := range b {
		parts[k] = strings.ToLower(string("0123456789abcdef"[x>>4]) + string("0123456789abcdef"[x&15]))
	}
	return strings.Join(parts, ":")
}

func fmtAny(v any) string {
	xs, _ := v.([]any)
	var out []string
	for _, x := range xs {
		s, _ := x.(string)
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// TestAppRoleLogin: the issuer logs in with AppRole (secret_id from a
// file), and Run logs in again when the token reaches its max TTL.
func TestAppRoleLogin(t *testing.T) {
	f := newFixture(t)
	c := f.v.Client
	if err := c.Sys().EnableAuthWithOptions("approle", &vaultapi.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/approle/role/mayfly", map[string]any{
		"token_policies": "mayfly-broker,orders-ro", "token_ttl": "3s", "token_max_ttl": "5s",
	}); err != nil {
		t.Fatal(err)
	}
	rid, err := c.Logical().Read("auth/approle/role/mayfly/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := c.Logical().Write("auth/approle/role/mayfly/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	if err := os.WriteFile(secretFile, []byte(sid.Data["secret_id"].(string)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := f.cfg("", logs)
	cfg.Auth = vault.Auth{AppRole: &vault.AppRole{RoleID: rid.Data["role_id"].(string), SecretIDFile: secretFile}}
	iss := f.issuer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = iss.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	p := params(t, "path: database/creds/orders-ro\ntoken_policies: [orders-ro]")
	if _, c, err := issueDirect(t, iss, p, "orders-db-ro", 2*time.Second); err != nil {
		t.Fatal(err)
	} else {
		f.verify(t, c)
	}
	time.Sleep(7 * time.Second) // past the first token's max TTL
	if _, c, err := issueDirect(t, iss, p, "orders-db-ro", 2*time.Second); err != nil {
		t.Fatalf("Issue after the first token's max TTL: %v", err)
	} else {
		f.verify(t, c)
	}
	out := logs.String()
	if n := strings.Count(out, "logged in to Vault"); n < 2 {
		t.Errorf("logged in %d times in 7s with a 5s max TTL; want a second login:\n%s", n, out)
	}
	if !strings.Contains(out, "is not periodic") {
		t.Error("no warning that the broker's token is not periodic")
	}
	noSecrets(t, "the issuer log", out, sid.Data["secret_id"].(string))
	if strings.Contains(out, "hvs.") {
		t.Error("the issuer log contains a Vault token")
	}
}

// TestJWTLogin: the issuer logs in with a JWT (as the broker would with
// its JWT-SVID) and Run renews the periodic token it gets.
func TestJWTLogin(t *testing.T) {
	f := newFixture(t)
	c := f.v.Client
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err := c.Sys().EnableAuthWithOptions("jwt", &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/jwt/config", map[string]any{"jwt_validation_pubkeys": []string{pub}}); err != nil {
		t.Fatal(err)
	}
	const brokerID = "spiffe://mayfly.test/mayfly"
	if _, err := c.Logical().Write("auth/jwt/role/mayfly", map[string]any{
		"role_type": "jwt", "bound_audiences": "vault", "user_claim": "sub", "bound_subject": brokerID,
		"token_policies": "mayfly-broker,orders-ro", "token_period": "3s",
	}); err != nil {
		t.Fatal(err)
	}
	var minted atomic.Int32
	source := func(context.Context) (string, error) {
		minted.Add(1)
		now := time.Now()
		return gojwt.NewWithClaims(gojwt.SigningMethodES256, gojwt.MapClaims{
			"sub": brokerID, "aud": "vault", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		}).SignedString(key)
	}
	logs := &syncBuffer{}
	cfg := f.cfg("", logs)
	cfg.Auth = vault.Auth{JWT: &vault.JWTAuth{Role: "mayfly", TokenSource: source}}
	iss := f.issuer(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = iss.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	p := params(t, "path: database/creds/orders-ro\ntoken_policies: [orders-ro]")
	time.Sleep(5 * time.Second) // longer than the token period: Run renews it
	_, cred, err := issueDirect(t, iss, p, "orders-db-ro", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f.verify(t, cred)
	out := logs.String()
	if n := strings.Count(out, "logged in to Vault"); n != 1 || minted.Load() != 1 {
		t.Errorf("logged in %d times with %d JWTs; a periodic token is renewed, not replaced:\n%s", n, minted.Load(), out)
	}
	if !strings.Contains(out, "renewed the broker's Vault token") {
		t.Errorf("no renewal logged:\n%s", out)
	}
	if strings.Contains(out, "is not periodic") {
		t.Error("warned about a periodic token")
	}
}

// TestRevoke: Revoke returns once the database role is gone and the Vault
// lease with it; the per-lease token, which holds nothing then, is
// revoked right after in the background; revoking again is success. A
// lease revoked at its expiry finds its token ended by its TTL.
func TestRevoke(t *testing.T) {
	f := newFixture(t)
	cfg := f.cfg(f.roleToken, nil)
	cfg.TokenRole = "mayfly"
	iss := f.issuer(t, cfg)
	p := params(t, "path: database/creds/orders-ro\ntoken_policies: [orders-ro]")
	ctx := tctx(t, 30*time.Second)

	l, c, err := issueDirect(t, iss, p, "orders-db-ro", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := vault.ParseRef(l.ExternalRef)
	if err != nil || ref.LeaseID == "" {
		t.Fatalf("ExternalRef %q: %+v, %v", l.ExternalRef, ref, err)
	}
	if err := iss.Revoke(ctx, l); err != nil {
		t.Fatal(err)
	}
	if f.roleExists(t, c.Username) || f.vaultLease(t, ref.LeaseID) != nil {
		t.Fatal("Revoke returned while the role or the Vault lease still exists")
	}
	waitTokenGone(t, f, ref.Accessor, 5*time.Second)
	if err := iss.Revoke(ctx, l); err != nil {
		t.Errorf("revoking again = %v; want success", err)
	}

	// At its expiry: Vault ended the token (its TTL) and may be dropping
	// the role itself; Revoke confirms the role is gone.
	l, c, err = issueDirect(t, iss, p, "orders-db-ro", 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ = vault.ParseRef(l.ExternalRef)
	time.Sleep(time.Until(l.ExpiresAt))
	if err := iss.Revoke(ctx, l); err != nil {
		t.Fatal(err)
	}
	if f.roleExists(t, c.Username) || f.vaultLease(t, ref.LeaseID) != nil {
		t.Fatal("Revoke at expiry returned while the role or the Vault lease still exists")
	}
	waitTokenGone(t, f, ref.Accessor, 5*time.Second)
}
