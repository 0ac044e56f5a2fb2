package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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

	"github.com/mayflyhq/mayfly/cmd/internal/devenv"
)

// globals are the flags every command shares.
type globals struct {
	addr, brokerID    string
	cert, key, bundle string
	socket            string
	dev               bool
	devDir            string
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
	f.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&g.timeout, "timeout", 30*time.Second, "how long to wait for the broker")
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	root.AddCommand(newIssue(g), newLeases(g), newRevoke(g), newExplain(g), newEntitlements(g))
	return root
}

// conn dials the broker with the caller's X.509-SVID over mTLS.
func (g *globals) conn(ctx context.Context) (*grpc.ClientConn, error) {
	if g.dev {
		dir := g.devDir
		if dir == "" {
			var err error
			if dir, err = devenv.DefaultDir(); err != nil {
				return nil, err
			}
		}
		c, err := devenv.Load(dir)
		if err != nil {
			return nil, err
		}
		g.addr, g.brokerID = c.Addr, c.BrokerID
		g.cert, g.key, g.bundle = c.CLI.Cert, c.CLI.Key, c.Bundle
	}
	var (
		svids   x509svid.Source
		bundles x509bundle.Source
		td      spiffeid.TrustDomain
	)
	switch {
	case g.cert != "" || g.key != "" || g.bundle != "":
		if g.cert == "" || g.key == "" || g.bundle == "" {
			return nil, errors.New("--cert, --key and --bundle go together")
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
		return nil, errors.New("no identity: use --dev, or --cert/--key/--bundle, or --socket (SPIFFE Workload API)")
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
