package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/mayflyhq/mayfly/broker/authn"
	"github.com/mayflyhq/mayfly/cmd/internal/devenv"
)

// globals are the flags every command shares.
type globals struct {
	addr, brokerID    string
	cert, key, bundle string
	socket            string
	dev               bool
	devDir            string
	user              string // --dev --user: a dev user of the dev OIDC provider
	tokenFile         string // --token-file: an OIDC login cached by mayfly login
	output            string
	timeout           time.Duration
	stdout, stderr    io.Writer
	closers           []func() error
}

func run(args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	for _, c := range g.closers {
		_ = c()
	}
	if err != nil {
		fmt.Fprintln(stderr, "mayfly: "+describe(err))
		return 1
	}
	return 0
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "mayfly",
		Short:         "Just-in-time credentials from the Mayfly broker",
		Long:          "mayfly asks the Mayfly broker for short-lived credentials under leases,\nlists and revokes your leases, and explains the broker's policy decisions.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch g.output {
			case "table", "json":
				return nil
			}
			return fmt.Errorf("--output must be table or json, not %q", g.output)
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&g.addr, "addr", envOr("MAYFLY_ADDR", "127.0.0.1:7443"), "broker gRPC address (env MAYFLY_ADDR)")
	f.StringVar(&g.brokerID, "broker-id", os.Getenv("MAYFLY_BROKER_ID"), "expected SPIFFE ID of the broker (default: any member of your trust domain; env MAYFLY_BROKER_ID)")
	f.StringVar(&g.cert, "cert", os.Getenv("MAYFLY_CERT"), "X.509-SVID certificate PEM (env MAYFLY_CERT)")
	f.StringVar(&g.key, "key", os.Getenv("MAYFLY_KEY"), "X.509-SVID private key PEM (env MAYFLY_KEY)")
	f.StringVar(&g.bundle, "bundle", os.Getenv("MAYFLY_BUNDLE"), "trust bundle PEM (env MAYFLY_BUNDLE)")
	f.StringVar(&g.socket, "socket", os.Getenv("SPIFFE_ENDPOINT_SOCKET"), "SPIFFE Workload API socket, used when no --cert is given (env SPIFFE_ENDPOINT_SOCKET)")
	f.BoolVar(&g.dev, "dev", false, "use the local dev broker started by `mayflyd dev`")
	f.StringVar(&g.devDir, "dev-dir", "", "dev state directory (default $MAYFLY_DEV_DIR or ~/.local/state/mayfly/dev)")
	f.StringVar(&g.user, "user", "", "with --dev: act as this dev user (alice, bob, carol, ...), logged in through the dev OIDC provider without a password (dev only)")
	f.StringVar(&g.tokenFile, "token-file", os.Getenv("MAYFLY_TOKEN_FILE"), "OIDC login to use (and for login/logout, to write or remove) instead of $XDG_CONFIG_HOME/mayfly/token.json (env MAYFLY_TOKEN_FILE)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&g.timeout, "timeout", 30*time.Second, "how long to wait for the broker")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	root.AddCommand(newIssue(g), newLeases(g), newRevoke(g), newExplain(g), newEntitlements(g))
	root.AddCommand(accessCommands(g)...)
	root.AddCommand(newLogin(g), newLogout(g))
	root.AddCommand(newAudit(g), newLineage(g))
	return root
}

// devClient loads the client file of the dev broker (--dev).
func (g *globals) devClient() (*devenv.Client, error) {
	dir := g.devDir
	if dir == "" {
		var err error
		if dir, err = devenv.DefaultDir(); err != nil {
			return nil, err
		}
	}
	return devenv.Load(dir)
}

// conn dials the broker as the caller. The identity, in this order:
//
//   - --dev --user NAME: dev user NAME's OIDC ID token from the dev
//     provider (logged in without a person), as a bearer token over TLS;
//   - --token-file: the OIDC login cached there, likewise;
//   - --cert/--key/--bundle or --dev: the X.509-SVID, over mTLS;
//   - --socket: the SVID from the SPIFFE Workload API, over mTLS;
//   - else the login that `mayfly login` cached, if there is one.
func (g *globals) conn(ctx context.Context) (*grpc.ClientConn, error) {
	if g.user != "" && !g.dev {
		return nil, errors.New("--user needs --dev: dev users exist only in the dev broker's OIDC provider; elsewhere run mayfly login")
	}
	if g.dev {
		c, err := g.devClient()
		if err != nil {
			return nil, err
		}
		g.addr, g.brokerID, g.bundle = c.Addr, c.BrokerID, c.Bundle
		if g.user == "" && g.tokenFile == "" {
			g.cert, g.key = c.CLI.Cert, c.CLI.Key
		}
	}
	var (
		svids   x509svid.Source
		bundles x509bundle.Source
		td      spiffeid.TrustDomain
	)
	switch {
	case g.user != "":
		login, err := g.devUserLogin(ctx, g.user)
		if err != nil {
			return nil, err
		}
		return g.bearerConn(login)
	case g.tokenFile != "":
		if g.cert != "" || g.key != "" {
			return nil, errors.New("--token-file and --cert/--key are two identities: use one")
		}
		login, err := readLogin(g.tokenFile)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("--token-file %s does not exist: run mayfly login --token-file %s", g.tokenFile, g.tokenFile)
		}
		if err != nil {
			return nil, err
		}
		return g.bearerConn(login)
	case g.cert != "" || g.key != "" || (g.bundle != "" && g.socket == "" && !hasCachedLogin()):
		if g.cert == "" || g.key == "" || g.bundle == "" {
			return nil, errors.New("--cert, --key and --bundle go together (--bundle alone is for your login: run mayfly login first)")
		}
		svid, err := x509svid.Load(g.cert, g.key)
		if err != nil {
			return nil, fmt.Errorf("loading your SVID: %w", err)
		}
		td = svid.ID.TrustDomain()
		b, err := x509bundle.Load(td, g.bundle)
		if err != nil {
			return nil, fmt.Errorf("loading the trust bundle: %w", err)
		}
		svids, bundles = svid, b
	case g.socket != "":
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(g.socket)))
		if err != nil {
			return nil, fmt.Errorf("SPIFFE Workload API at %s: %w", g.socket, err)
		}
		g.closers = append(g.closers, src.Close)
		svid, err := src.GetX509SVID()
		if err != nil {
			return nil, err
		}
		td = svid.ID.TrustDomain()
		svids, bundles = src, src
	default:
		path, err := defaultTokenPath()
		if err != nil {
			return nil, err
		}
		login, err := readLogin(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errors.New("no identity: use --dev, or --cert/--key/--bundle, or --socket (SPIFFE Workload API), or log in with mayfly login")
		}
		if err != nil {
			return nil, err
		}
		return g.bearerConn(login)
	}
	authz := tlsconfig.AuthorizeMemberOf(td)
	if g.brokerID != "" {
		id, err := spiffeid.FromString(g.brokerID)
		if err != nil {
			return nil, fmt.Errorf("--broker-id: %w", err)
		}
		authz = tlsconfig.AuthorizeID(id)
	}
	tc := tlsconfig.MTLSClientConfig(svids, bundles, authz)
	tc.MinVersion = tls.VersionTLS13
	cc, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, fmt.Errorf("broker address %q: %w", g.addr, err)
	}
	g.closers = append(g.closers, cc.Close)
	return cc, nil
}

// hasCachedLogin reports whether `mayfly login` left a token file.
func hasCachedLogin() bool {
	path, err := defaultTokenPath()
	if err != nil {
		return false
	}
	_, err = os.Stat(path)
	return err == nil
}

// bearerConn dials the broker over TLS that authenticates the broker (its
// exact SPIFFE ID, against the trust bundle) and sends the ID token of
// login with every call. The broker is pinned by ID, not by trust domain:
// any workload of the trust domain holds a certificate from the same CA,
// and must not be able to pose as the broker and collect people's tokens.
func (g *globals) bearerConn(login *cachedLogin) (*grpc.ClientConn, error) {
	if !login.usable(time.Now()) {
		return nil, login.expiredError()
	}
	if g.bundle == "" {
		return nil, errors.New("--bundle is required with your login: the broker's trust bundle (PEM) must verify the broker before your token is sent")
	}
	if g.brokerID == "" {
		return nil, errors.New("--broker-id is required with your login: your token is sent only to the broker with that SPIFFE ID")
	}
	id, err := spiffeid.FromString(g.brokerID)
	if err != nil {
		return nil, fmt.Errorf("--broker-id: %w", err)
	}
	b, err := x509bundle.Load(id.TrustDomain(), g.bundle)
	if err != nil {
		return nil, fmt.Errorf("loading the trust bundle: %w", err)
	}
	tc := authn.ClientTLSConfig(nil, b, tlsconfig.AuthorizeID(id))
	cc, err := grpc.NewClient(g.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithPerRPCCredentials(bearerToken{token: login.IDToken}))
	if err != nil {
		return nil, fmt.Errorf("broker address %q: %w", g.addr, err)
	}
	g.closers = append(g.closers, cc.Close)
	return cc, nil
}

// bearerToken sends an OIDC ID token as "authorization: Bearer" with every
// call, and only over a secure transport.
type bearerToken struct{ token string }

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }

// describe turns an error into one line a person can act on.
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
