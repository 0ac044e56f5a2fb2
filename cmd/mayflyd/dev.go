package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mayflyhq/mayfly/broker"
	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/broker/devca"
	"github.com/mayflyhq/mayfly/broker/devoidc"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease/memory"
	"github.com/mayflyhq/mayfly/broker/policy"
	"github.com/mayflyhq/mayfly/cmd/internal/devenv"
)

// devSVIDTTL is the lifetime of dev SVIDs; they are minted again at half-life.
const devSVIDTTL = 24 * time.Hour

func newDev() *cobra.Command {
	var dir, listen, httpListen, metricsListen, logLevel string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a self-contained local broker: dev trust domain, JWT issuer, example policy, in-memory leases",
		Long: `dev runs the broker with everything it needs on this machine:
  - a local SPIFFE trust domain (` + devenv.TrustDomain + `) whose CA mints real X.509-SVIDs
    for the broker, a demo workload and the CLI into the state directory;
  - the broker's own JWT issuer, with discovery and JWKS over HTTPS;
  - the example policy, written to the state directory (edit it: it reloads);
  - in-memory leases (they are lost when the broker stops).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel, "text")
			if err != nil {
				return err
			}
			if dir == "" {
				if dir, err = devenv.DefaultDir(); err != nil {
					return err
				}
			}
			if dir, err = filepath.Abs(dir); err != nil {
				return err
			}
			// Listen first, so the client file and the JWT issuer URL carry
			// the real ports (":0" picks free ones).
			grpcLn, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("dev: --listen: %w", err)
			}
			httpLn, err := net.Listen("tcp", httpListen)
			if err != nil {
				grpcLn.Close()
				return fmt.Errorf("dev: --http-listen: %w", err)
			}
			env, err := prepareDev(dir, grpcLn.Addr().String(), httpLn.Addr().String(), log)
			if err != nil {
				grpcLn.Close()
				httpLn.Close()
				return err
			}
			roots := x509.NewCertPool()
			for _, c := range env.ca.X509Bundle().X509Authorities() {
				roots.AddCert(c)
			}
			devUsers, err := authn.NewOIDCVerifier(cmd.Context(), []authn.OIDCProvider{env.oidc.OIDCProvider()},
				authn.WithOIDCHTTPClient(devoidc.HTTPClientWithRoots(roots)), authn.WithOIDCLogger(log))
			if err != nil {
				return err
			}
			// The audit trail: a JSONL file in the state directory, its
			// checkpoints signed with a key beside it.
			auditLog, err := openAudit(cmd.Context(), auditConfig{File: env.client.Audit, Fsync: "periodic",
				SigningKey: strings.TrimSuffix(env.client.AuditKey, ".pub")}, nil, devenv.BrokerID, log)
			if err != nil {
				grpcLn.Close()
				httpLn.Close()
				return err
			}
			b, err := broker.New(broker.Config{
				Audit:        auditLog,
				Bearer:       []authn.BearerVerifier{devUsers},
				HTTPHandlers: map[string]http.Handler{env.oidc.Path() + "/": env.oidc},
				GRPCListener: grpcLn,
				HTTPListener: httpLn,
				MetricsAddr:  metricsListen,
				TrustDomains: []spiffeid.TrustDomain{env.td},
				SVIDs:        env.brokerSVID,
				Bundles:      env.ca.X509Bundle(),
				JWTBundles:   env.ca.JWTBundle(),
				Audience:     devenv.BrokerID,
				PolicyPath:   env.client.Policy,
				Store:        memory.New(),
				JWT: jwt.Config{
					IssuerURL:   env.client.HTTPURL,
					KeyDir:      filepath.Join(dir, "jwt-keys"),
					RotateEvery: 24 * time.Hour,
				},
				Logger: log,
			})
			if err != nil {
				return err
			}
			printNextSteps(cmd.OutOrStdout(), dir, env.client, addrString(b.MetricsAddr()))
			return b.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "state-dir", "", "where the dev CA, SVIDs, keys and policy live (default $MAYFLY_DEV_DIR or ~/.local/state/mayfly/dev)")
	f.StringVar(&listen, "listen", "127.0.0.1:7443", "gRPC address")
	f.StringVar(&httpListen, "http-listen", "127.0.0.1:7444", "HTTPS address (discovery, JWKS, introspection)")
	f.StringVar(&metricsListen, "metrics-listen", "127.0.0.1:9464", "metrics address (plain HTTP; empty disables)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

type devEnv struct {
	td         spiffeid.TrustDomain
	ca         *devca.CA
	brokerSVID *rotatingSVID
	client     *devenv.Client
	oidc       *devoidc.Provider
}

// prepareDev opens the dev CA, mints the SVIDs, writes the example policy
// if there is none yet, and writes the client file.
func prepareDev(dir, listen, httpListen string, log *slog.Logger) (*devEnv, error) {
	td := spiffeid.RequireTrustDomainFromString(devenv.TrustDomain)
	ca, err := devca.Open(dir, td)
	if err != nil {
		return nil, err
	}
	env := &devEnv{td: td, ca: ca}
	env.brokerSVID = &rotatingSVID{mint: func() (*x509svid.SVID, error) {
		// DNS and IP SANs let plain HTTPS clients (JOSE libraries, curl)
		// reach the discovery and JWKS endpoints by address.
		return ca.MintX509SVIDWithDNS(spiffeid.RequireFromString(devenv.BrokerID), devSVIDTTL, "localhost", "127.0.0.1", "::1")
	}}
	if _, err := env.brokerSVID.GetX509SVID(); err != nil {
		return nil, err
	}
	c := &devenv.Client{
		Addr:     listen,
		HTTPURL:  "https://" + httpListen,
		BrokerID: devenv.BrokerID,
		Policy:   filepath.Join(dir, "policy.yaml"),
		Audit:    filepath.Join(dir, "audit.jsonl"),
		AuditKey: filepath.Join(dir, "audit-key.pem.pub"),
	}
	c.Bundle = ca.BundlePath()
	// The dev OIDC provider for named dev users (alice, bob, carol), served
	// on the broker's HTTPS listener. Dev only: it asks for no password.
	op, err := devoidc.New(devoidc.Config{
		Issuer: c.HTTPURL + devoidc.DefaultPath,
		KeyDir: filepath.Join(dir, "dev-oidc"),
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	env.oidc = op
	c.OIDCIssuer, c.OIDCClientID = op.Issuer(), op.ClientID()
	for _, id := range []struct {
		name, spiffeID string
		dst            *devenv.Identity
	}{{"cli", devenv.CLIID, &c.CLI}, {"workload", devenv.WorkloadID, &c.Workload}} {
		svid, err := ca.MintX509SVID(spiffeid.RequireFromString(id.spiffeID), devSVIDTTL)
		if err != nil {
			return nil, err
		}
		cert, key, err := ca.WriteSVID(id.name, svid)
		if err != nil {
			return nil, err
		}
		*id.dst = devenv.Identity{SPIFFEID: id.spiffeID, Cert: cert, Key: key}
	}
	if _, err := os.Stat(c.Policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(c.Policy, policy.ExamplePolicy, 0o600); err != nil {
			return nil, fmt.Errorf("dev: writing the example policy: %w", err)
		}
	}
	if err := devenv.Save(dir, c); err != nil {
		return nil, err
	}
	env.client = c
	return env, nil
}

// rotatingSVID is the dev broker's own X.509-SVID source: it mints a new
// SVID when the current one is past half its life.
type rotatingSVID struct {
	mint func() (*x509svid.SVID, error)
	mu   sync.Mutex
	svid *x509svid.SVID
}

func (r *rotatingSVID) GetX509SVID() (*x509svid.SVID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.svid != nil {
		leaf := r.svid.Certificates[0]
		half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		if time.Now().Before(half) {
			return r.svid, nil
		}
	}
	svid, err := r.mint()
	if err != nil {
		if r.svid != nil && time.Now().Before(r.svid.Certificates[0].NotAfter) {
			return r.svid, nil // keep serving the still-valid one
		}
		return nil, err
	}
	r.svid = svid
	return svid, nil
}

func printNextSteps(w io.Writer, dir string, c *devenv.Client, metrics string) {
	fmt.Fprintf(w, `
Mayfly dev broker
  gRPC (mTLS)      %s   as %s
  HTTPS            %s/.well-known/openid-configuration
  metrics          %s
  trust domain     %s (CA and SVIDs in %s)
  policy           %s (edit it: the broker reloads it)

Next, in another terminal:
  go run ./cmd/mayfly --dev entitlements
  go run ./cmd/mayfly --dev issue demo-api-write
  go run ./cmd/mayfly --dev --user bob request demo-api-admin --reason "try it" --ticket DEMO-1 --for 30m --wait
  go run ./cmd/mayfly --dev --user alice approve REQUEST_ID      (in a third terminal)
  go run ./cmd/mayfly --dev leases
  go run ./cmd/mayfly --dev explain demo-api-read --as %s
  go run ./cmd/mayfly --dev audit verify          (the audit trail: %s)
  go run ./cmd/mayfly --dev lineage --subject %s
  curl --cacert %s %s/.well-known/jwks.json

`, c.Addr, c.BrokerID, c.HTTPURL, metrics, devenv.TrustDomain, dir, c.Policy, devenv.WorkloadID, c.Audit, devenv.CLIID, c.Bundle, c.HTTPURL)
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return "http://" + a.String() + "/metrics"
}
