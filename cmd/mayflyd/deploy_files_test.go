package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"gopkg.in/yaml.v3"

	accessredis "github.com/mayflyhq/mayfly/broker/access/redis"
	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/policy"
)

// TestDeployFilesLoad loads the broker configs the deployment examples
// ship, with the config loader `mayflyd serve` uses: the compose stack's
// deploy/compose/mayflyd.yaml and the mayflyd.yaml of the ConfigMap in
// deploy/k8s/mayflyd.yaml. Then it builds from each what serve builds
// before it contacts a service (logger, trust domains, lease and access
// stores, the audit stream, the JWT issuer, the Vault issuer) and loads
// the policy file the deployment puts at the config's policy path with
// the decoders of those issuers, as broker.New does. Files that exist
// only in a running deployment (Vault's CA, the JWT key directory) are
// replaced by stand-ins; which ones is said below.
func TestDeployFilesLoad(t *testing.T) {
	k8sConfig, k8sPolicy := k8sConfigMapFiles(t)
	for name, tc := range map[string]struct{ config, policy string }{
		"compose": {"../../deploy/compose/mayflyd.yaml", "../../deploy/compose/policy.yaml"},
		"k8s":     {k8sConfig, k8sPolicy},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := loadConfig(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			checkServable(t, c, tc.policy)
		})
	}
}

// k8sConfigMapFiles writes the ConfigMap mayflyd-config's mayflyd.yaml
// and policy.yaml to files.
func k8sConfigMapFiles(t *testing.T) (config, policyFile string) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/k8s/mayflyd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("deploy/k8s/mayflyd.yaml: %v", err)
		}
		if doc.Kind != "ConfigMap" || doc.Metadata.Name != "mayflyd-config" {
			continue
		}
		if doc.Data["mayflyd.yaml"] == "" || doc.Data["policy.yaml"] == "" {
			t.Fatal("ConfigMap mayflyd-config: mayflyd.yaml or policy.yaml is missing")
		}
		dir := t.TempDir()
		return writeFile(t, dir, "mayflyd.yaml", doc.Data["mayflyd.yaml"]), writeFile(t, dir, "policy.yaml", doc.Data["policy.yaml"])
	}
	t.Fatal("deploy/k8s/mayflyd.yaml has no ConfigMap mayflyd-config")
	return "", ""
}

// checkServable builds what serve builds from c without a network.
func checkServable(t *testing.T, c *fileConfig, policyFile string) {
	t.Helper()
	if _, err := newLogger(c.Log.Level, c.Log.Format); err != nil {
		t.Error(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, s := range c.TrustDomains {
		if _, err := spiffeid.TrustDomainFromString(s); err != nil {
			t.Errorf("trust_domains: %q: %v", s, err)
		}
	}
	for _, a := range []string{c.Listen, c.HTTPListen, c.MetricsListen} {
		if a == "" {
			t.Errorf("listen, http_listen and metrics_listen must all be set (probes and Prometheus use metrics): %q, %q, %q", c.Listen, c.HTTPListen, c.MetricsListen)
			break
		}
	}

	// A deployment of several replicas: identity from the SPIRE agent,
	// leases and the audit chain in the shared Redis.
	if err := workloadapi.ValidateAddress(c.Identity.WorkloadAPI); err != nil {
		t.Errorf("identity.workload_api: %v", err)
	}
	if c.Leases.Store != "redis" || !c.Audit.Redis || c.Audit.SigningKey == "" {
		t.Errorf("leases.store %q, audit.redis %v, audit.signing_key %q: replicas share leases and one signed audit chain in Redis",
			c.Leases.Store, c.Audit.Redis, c.Audit.SigningKey)
	}
	// A cancelled context: openStore pings without waiting for an answer,
	// and the stores are built as serve builds them.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, client, closeStore, err := openStore(ctx, c, log, func(string) {})
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	defer closeStore()
	if _, err := accessredis.New(client, accessredis.Options{
		WaitReplicas: c.Leases.Redis.WaitReplicas, WaitTimeout: time.Duration(c.Leases.Redis.WaitTimeout),
	}); err != nil {
		t.Errorf("leases.redis (access store): %v", err)
	}
	if _, err := audit.NewRedisStreamSink(client, audit.RedisConfig{MaxLen: c.Audit.RedisMaxLen}); err != nil {
		t.Errorf("audit.redis: %v", err)
	}

	// The JWT issuer, with a temporary key directory for the volume.
	iss, err := jwt.New(jwt.Config{
		IssuerURL: c.JWT.IssuerURL, Algorithm: c.JWT.Algorithm, KeyDir: filepath.Join(t.TempDir(), "jwt-keys"),
		RotateEvery: time.Duration(c.JWT.RotateEvery), Retain: time.Duration(c.JWT.Retain), Logger: log,
	})
	if err != nil {
		t.Fatalf("jwt: %v", err)
	}

	// The other issuers. Vault's CA file is made at run time (by Vault's
	// dev TLS mode, or cert-manager): a stand-in CA takes its place.
	issuers := c.Issuers
	if v := issuers.Vault; v != nil && v.CAFile != "" {
		vc := *v
		vc.CAFile = writeTestCA(t)
		issuers.Vault = &vc
	}
	others, err := cloudIssuers(issuers, &jwtSource{iss: iss}, log)
	if err != nil {
		t.Fatal(err)
	}

	// The policy, with the decoders of exactly these issuers.
	decoders := map[string]func(*yaml.Node) (any, error){iss.Name(): iss.DecodeParams}
	for _, o := range others {
		decoders[o.Name()] = o.DecodeParams
	}
	if filepath.Base(c.Policy) != "policy.yaml" {
		t.Errorf("policy %s: the deployment mounts policy.yaml there", c.Policy)
	}
	p, err := policy.LoadFile(policyFile, policy.Options{Issuers: decoders})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Entitlements {
		if e.Issuer == iss.Name() && time.Duration(c.JWT.Retain) < e.MaxTTL {
			t.Errorf("jwt.retain %s is shorter than max_ttl %s of %s: its tokens would outlive their key in the JWKS",
				time.Duration(c.JWT.Retain), e.MaxTTL, e.Name)
		}
	}
}

// writeTestCA writes a self-signed CA certificate (PEM) and returns its path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "deploy files test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, t.TempDir(), "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}
