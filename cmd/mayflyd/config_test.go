package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/issuer/awssts"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	base := "trust_domains: [mayfly.test]\npolicy: p.yaml\njwt: {issuer_url: https://127.0.0.1:7444}\n"
	cases := map[string]struct{ yaml, want string }{
		"unknown key":        {base + "identity: {cert: a, key: b, bundle: c}\nlisten_addr: x\n", "line 5: field listen_addr not found"},
		"bad duration":       {base + "identity: {cert: a, key: b, bundle: c}\nleases: {pending_timeout: soon}\n", `line 5: "soon" is not a duration`},
		"missing":            {"identity: {cert: a, key: b, bundle: c}\n", "missing [trust_domains policy jwt.issuer_url]"},
		"no identity":        {base, "identity: set workload_api (SPIRE agent socket) or cert, key and bundle"},
		"both identities":    {base + "identity: {workload_api: unix:///x, cert: a, key: b, bundle: c}\n", "not both"},
		"partial files":      {base + "identity: {cert: a}\n", "cert, key and bundle go together"},
		"jwt bundle, no aud": {base + "identity: {cert: a, key: b, bundle: c, jwt_bundle: d}\n", "jwt_svid_audience is required"},
		"unsupported store":  {base + "identity: {cert: a, key: b, bundle: c}\nleases: {store: etcd}\n", `leases.store: "etcd" is not a lease store`},
		"redis, no addrs":    {base + "identity: {cert: a, key: b, bundle: c}\nleases: {store: redis}\n", "leases.redis.addrs: at least one address"},
		"not a mapping file": {"- a\n", "cannot unmarshal"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(writeFile(t, dir, "c.yaml", tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestServeFromConfig starts `mayflyd serve` on SVID files from a CA and
// checks it listens, then stops cleanly.
func TestServeFromConfig(t *testing.T) {
	dir := t.TempDir()
	ca, err := devca.Open(filepath.Join(dir, "ca"), spiffeid.RequireTrustDomainFromString("mayfly.test"))
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.MintX509SVIDWithDNS(spiffeid.RequireFromString("spiffe://mayfly.test/mayfly"), time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.WriteSVID("broker", svid)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pol := writeFile(t, dir, "policy.yaml", string(policy.ExamplePolicy))
	cfg := writeFile(t, dir, "mayflyd.yaml", `
listen: `+addr+`
trust_domains: [mayfly.test]
policy: `+pol+`
identity: {cert: `+cert+`, key: `+key+`, bundle: `+ca.BundlePath()+`, jwt_bundle: `+ca.JWTBundlePath()+`}
jwt: {issuer_url: "https://127.0.0.1:7444", key_dir: `+filepath.Join(dir, "keys")+`}
jwt_svid_audience: spiffe://mayfly.test/mayfly
log: {level: warn}
`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newRoot(io.Discard, "serve", "--config", cfg).ExecuteContext(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestExampleConfigLoads keeps the documented example config valid.
func TestExampleConfigLoads(t *testing.T) {
	c, err := loadConfig("../../deploy/mayflyd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity.WorkloadAPI == "" || c.JWT.Algorithm != "ES256" || c.Revoker.MaxAttempts != 10 {
		t.Fatalf("example config read as %+v", c)
	}
}

// TestAWSWebIdentityTokenCarriesSourceIdentity checks the token the broker
// hands AWS: its own JWT with the caller as source identity and the lease
// as a session tag, so CloudTrail shows who held the session.
func TestAWSWebIdentityTokenCarriesSourceIdentity(t *testing.T) {
	iss, err := jwt.New(jwt.Config{IssuerURL: "https://mayfly.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	src := &jwtSource{iss: iss}
	now := time.Now()
	l := &lease.Lease{ID: lease.NewID(now), Subject: "spiffe://prod.example.org/ns/orders/sa/api", Entitlement: "s3-read",
		IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute)}
	tok, err := src.awsToken(context.Background(), l, "sts.amazonaws.com")
	if err != nil {
		t.Fatal(err)
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims["https://aws.amazon.com/source_identity"] != awssts.SourceIdentity(l.Subject) || claims["aud"] != "sts.amazonaws.com" {
		t.Fatalf("claims = %v", claims)
	}
	tags, _ := claims["https://aws.amazon.com/tags"].(map[string]any)
	pt, _ := tags["principal_tags"].(map[string]any)
	if lid, _ := pt["mayfly:lease"].([]any); len(lid) != 1 || lid[0] != l.ID {
		t.Fatalf("session tags = %v", tags)
	}
	if _, err := iss.Verify(tok); err != nil {
		t.Fatalf("the token does not verify: %v", err)
	}
}
