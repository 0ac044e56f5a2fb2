// Package brokertest starts a real Mayfly broker for tests: a dev trust
// domain with a real CA, mTLS on loopback, the JWT issuer with its HTTPS
// endpoints, the revoker, and a lease store (memory unless given). Nothing
// in it is a fake; only the authority is local.
package brokertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/mayflyhq/mayfly/broker"
	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/broker/revoker"
)

// TrustDomain is the test trust domain.
const TrustDomain = "mayfly.test"

// BrokerID is the broker's SPIFFE ID in tests.
var BrokerID = spiffeid.RequireFromString("spiffe://" + TrustDomain + "/mayfly")

// Options changes the broker a test gets.
type Options struct {
	// Policy is the policy YAML (default: policy.ExamplePolicy).
	Policy []byte
	// Store is the lease store (default: a new memory store).
	Store lease.Store
	// Revoker tunes the revoker (defaults are fine for most tests).
	Revoker revoker.Config
	// Issuers are backends besides the JWT issuer (vault, ...).
	Issuers []issuer.Issuer
	// PendingTimeout of leases (default 30s).
	PendingTimeout time.Duration
	// Logger (default: discard; set MAYFLY_TEST_LOG=1 to see broker logs).
	Logger *slog.Logger
	// Now is the broker's clock (default time.Now): a skewed or stepped
	// clock for tests of time.
	Now func() time.Time
	// Bearer are bearer-token verifiers besides the JWT-SVID one (an
	// authn.OIDCVerifier for people).
	Bearer []authn.BearerVerifier
	// AccessStore holds access requests, grants and decision records
	// (default: in memory), so a test can read what the broker recorded.
	AccessStore access.Store
	// Audit is the broker's audit trail (default: none).
	Audit *audit.Log
	// Registry receives the broker's metrics (default: a new one), so a
	// test can read its gauges; StatsInterval is how often the counted
	// gauges refresh (default 15s).
	Registry      *prometheus.Registry
	StatsInterval time.Duration
	// QuotaRate and QuotaBurst are the per-identity quota (default: none).
	QuotaRate  float64
	QuotaBurst int
	// ExtraBundles are X.509 bundles of other trust domains the broker
	// knows (federation) but does not accept callers from.
	ExtraBundles []*x509bundle.Bundle
}

// Env is a running broker and the means to talk to it.
type Env struct {
	// Broker is the running broker.
	Broker *broker.Broker
	// CA is the dev CA of the test trust domain.
	CA *devca.CA
	// Dir holds the CA, the policy file and the JWT keys.
	Dir string
	// PolicyPath is the policy file the broker watches.
	PolicyPath string
	// GRPCAddr is the broker's gRPC address.
	GRPCAddr string
	// HTTPURL is the broker's HTTPS base URL (the JWT issuer URL).
	HTTPURL string
	// Store is the broker's lease store.
	Store lease.Store
	// Bundles is the live set of X.509 bundles the broker verifies callers
	// with; a test may change it (a rotated trust bundle).
	Bundles *x509bundle.Set

	stop func()
	done chan error
}

// Start runs a broker until the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	env, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Error(err)
		}
	})
	return env
}

// New runs a broker until Close; for callers without a testing.TB (a
// TestMain, a runnable Example).
func New(opts Options) (env *Env, err error) {
	dir, err := os.MkdirTemp("", "mayfly-brokertest-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	td := spiffeid.RequireTrustDomainFromString(TrustDomain)
	ca, err := devca.Open(filepath.Join(dir, "ca"), td)
	if err != nil {
		return nil, err
	}
	if opts.Policy == nil {
		opts.Policy = policy.ExamplePolicy
	}
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, opts.Policy, 0o600); err != nil {
		return nil, err
	}
	if opts.Store == nil {
		opts.Store = memory.New()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		if os.Getenv("MAYFLY_TEST_LOG") != "" {
			opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	svid, err := ca.MintX509SVIDWithDNS(BrokerID, time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	grpcLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = grpcLn.Close()
		return nil, err
	}
	httpURL := "https://" + httpLn.Addr().String()
	bundles := x509bundle.NewSet(append([]*x509bundle.Bundle{ca.X509Bundle()}, opts.ExtraBundles...)...)
	b, err := broker.New(broker.Config{
		GRPCListener:   grpcLn,
		HTTPListener:   httpLn,
		TrustDomains:   []spiffeid.TrustDomain{td},
		SVIDs:          svid,
		Bundles:        bundles,
		JWTBundles:     ca.JWTBundle(),
		Audience:       BrokerID.String(),
		Bearer:         opts.Bearer,
		PolicyPath:     policyPath,
		Store:          opts.Store,
		AccessStore:    opts.AccessStore,
		JWT:            jwt.Config{IssuerURL: httpURL, KeyDir: filepath.Join(dir, "jwt-keys")},
		Issuers:        opts.Issuers,
		PendingTimeout: opts.PendingTimeout,
		Revoker:        opts.Revoker,
		Logger:         opts.Logger,
		Now:            opts.Now,
		Audit:          opts.Audit,
		QuotaRate:      opts.QuotaRate,
		Registry:       opts.Registry,
		StatsInterval:  opts.StatsInterval,
		QuotaBurst:     opts.QuotaBurst,
	})
	if err != nil {
		_ = grpcLn.Close()
		_ = httpLn.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	return &Env{Broker: b, CA: ca, Dir: dir, PolicyPath: policyPath,
		GRPCAddr: grpcLn.Addr().String(), HTTPURL: httpURL, Store: opts.Store,
		Bundles: bundles, stop: cancel, done: done}, nil
}

// Close stops the broker and removes its files.
func (e *Env) Close() error {
	e.stop()
	var err error
	select {
	case err = <-e.done:
	case <-time.After(15 * time.Second):
		err = errors.New("brokertest: broker did not stop within 15s")
	}
	if rerr := os.RemoveAll(e.Dir); err == nil {
		err = rerr
	}
	return err
}

// ClientTLS returns an mTLS config presenting an X.509-SVID for id (e.g.
// "spiffe://mayfly.test/workload/demo") that authorises the broker by ID.
func (e *Env) ClientTLS(t testing.TB, id string) *tls.Config {
	t.Helper()
	svid, err := e.CA.MintX509SVID(spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := tlsconfig.MTLSClientConfig(svid, e.CA.X509Bundle(), tlsconfig.AuthorizeID(BrokerID))
	tc.MinVersion = tls.VersionTLS13
	return tc
}

// Dial connects to the broker as id over mTLS.
func (e *Env) Dial(t testing.TB, id string) *grpc.ClientConn {
	t.Helper()
	// The windows as the SDK sets them (sdk.Dial), so that benchmarks see
	// the traffic of a real workload.
	cc, err := grpc.NewClient(e.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(e.ClientTLS(t, id))),
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// WriteSVID mints an SVID for id and writes it with the bundle, returning
// the file paths (for SDK and CLI tests).
func (e *Env) WriteSVID(t testing.TB, name, id string) (cert, key, bundle string) {
	t.Helper()
	svid, err := e.CA.MintX509SVID(spiffeid.RequireFromString(id), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err = e.CA.WriteSVID(name, svid)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, e.CA.BundlePath()
}

// HTTPClient trusts the broker's HTTPS endpoints; with id set, it presents
// an X.509-SVID for it (needed for /introspect).
func (e *Env) HTTPClient(t testing.TB, id string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range e.CA.X509Bundle().X509Authorities() {
		pool.AddCert(c)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if id != "" {
		svid, err := e.CA.MintX509SVID(spiffeid.RequireFromString(id), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
		for _, c := range svid.Certificates {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
}
