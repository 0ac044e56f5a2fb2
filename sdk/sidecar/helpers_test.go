package sidecar_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/mayflyhq/mayfly/sdk/sidecar"
)

// testPolicy grants the demo workload a token with a 3s TTL (renewed about
// every 2s, so rotations happen quickly), one with a longer TTL, and names
// an entitlement it holds no grant for.
const testPolicy = `version: 1
trust_domains: [mayfly.test]
admins: ["spiffe://mayfly.test/cli/**"]
entitlements:
  fast-token:
    description: Short-lived token for rotation tests
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://fast.mayfly.test
      scopes: [fast:read]
    ttl: 3s
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/demo
        purpose: sidecar tests
        until: 2099-12-31
  slow-token:
    description: Token that lives long enough not to rotate during a test
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://slow.mayfly.test
    ttl: 10m
    max_ttl: 1h
    standing:
      - subject: spiffe://mayfly.test/workload/demo
        purpose: sidecar tests
        until: 2099-12-31
  not-granted:
    description: Nobody holds a grant for this one
    owner: user:alice
    issuer: jwt
    jwt:
      audience: https://nobody.mayfly.test
    ttl: 5m
    max_ttl: 1h
`

const workloadID = "spiffe://mayfly.test/workload/demo"

// testBroker starts a real broker with testPolicy and writes the demo
// workload's SVID files.
type testBroker struct {
	env                *brokertest.Env
	cert, key, bundle  string
	credentialsAsAdmin mayflyv1.AdminServiceClient
	credentialsAsDemo  mayflyv1.CredentialServiceClient
}

func startBroker(t *testing.T) *testBroker {
	t.Helper()
	env := brokertest.Start(t, brokertest.Options{Policy: []byte(testPolicy)})
	cert, key, bundle := env.WriteSVID(t, "demo", workloadID)
	return &testBroker{
		env: env, cert: cert, key: key, bundle: bundle,
		credentialsAsAdmin: mayflyv1.NewAdminServiceClient(env.Dial(t, "spiffe://mayfly.test/cli/dev")),
		credentialsAsDemo:  mayflyv1.NewCredentialServiceClient(env.Dial(t, workloadID)),
	}
}

// config returns a sidecar configuration for the demo workload; the
// entitlements and everything else are the test's to fill in.
func (b *testBroker) config(ents ...sidecar.EntitlementConfig) *sidecar.Config {
	return &sidecar.Config{
		Broker: sidecar.BrokerConfig{Addr: b.env.GRPCAddr, ID: brokertest.BrokerID.String()},
		Identity: sidecar.IdentityConfig{Files: &sidecar.SVIDFilesConfig{
			Cert: b.cert, Key: b.key, Bundle: b.bundle,
		}},
		Entitlements:       ents,
		LeaseCheckInterval: sidecar.Duration(200 * time.Millisecond),
		StartTimeout:       sidecar.Duration(20 * time.Second),
	}
}

// leaseState reads a lease through the workload's own identity.
func (b *testBroker) leaseState(t *testing.T, id string) *mayflyv1.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := b.credentialsAsDemo.GetLease(ctx, &mayflyv1.GetLeaseRequest{LeaseId: id})
	if err != nil {
		t.Fatalf("GetLease %s: %v", id, err)
	}
	return resp.GetLease()
}

// waitRevoked waits until the lease is revoked.
func (b *testBroker) waitRevoked(t *testing.T, id string) *mayflyv1.Lease {
	t.Helper()
	var l *mayflyv1.Lease
	eventually(t, 10*time.Second, "lease "+id+" revoked", func() bool {
		l = b.leaseState(t, id)
		return l.GetState() == mayflyv1.LeaseState_LEASE_STATE_REVOKED
	})
	return l
}

// testLogger discards logs unless MAYFLY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("MAYFLY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sharedTempDir is a temporary directory that other uids can traverse
// (t.TempDir's parents are 0700), removed when the test ends.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mayfly-sidecar-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readEnvFile parses KEY='value' lines written by the env template.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY=value", path, line)
		}
		out[k] = strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(v, "'"), "'"), `'\''`, "'")
	}
	return out
}

// fileMode returns the permission bits of path.
func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func noFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s still exists (err %v)", path, err)
	}
}

func join(dir string, elem ...string) string { return filepath.Join(append([]string{dir}, elem...)...) }
