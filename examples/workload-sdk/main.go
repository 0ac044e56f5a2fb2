// Command workload-sdk is a small workload that keeps a Mayfly credential
// with the Go SDK: it dials the broker with its SPIFFE identity (SVID files
// from `mayflyd dev`, or the SPIFFE Workload API of a SPIRE agent), asks for
// a credential it holds a standing grant for, and lets a CredentialSource
// renew it until it is stopped, printing every change. On exit it revokes
// the lease. See README.md.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mayflyhq/mayfly/sdk"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "workload-sdk:", err)
		os.Exit(1)
	}
}

// devDir is where `mayflyd dev` keeps its state: $MAYFLY_DEV_DIR, else
// $XDG_STATE_HOME/mayfly/dev, else ~/.local/state/mayfly/dev.
func devDir() string {
	if d := os.Getenv("MAYFLY_DEV_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "mayfly", "dev")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "mayfly", "dev")
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("workload-sdk", flag.ContinueOnError)
	var (
		addr        = fs.String("addr", "127.0.0.1:7443", "the broker's gRPC address")
		brokerID    = fs.String("broker-id", "spiffe://mayfly.test/mayfly", "the SPIFFE ID the broker must present")
		entitlement = fs.String("entitlement", "demo-api-read", "the entitlement to keep a credential for")
		ttl         = fs.Duration("ttl", 0, "credential lifetime to ask for (0: the entitlement's default)")
		workloadAPI = fs.String("workload-api", "", `take the identity from this SPIFFE Workload API socket ("unix:///..."), not from SVID files`)
		dir         = fs.String("dev-dir", devDir(), "the `mayflyd dev` state directory holding workload.crt.pem, workload.key.pem and bundle.pem")
		duration    = fs.Duration("duration", 0, "stop after this long (0: run until interrupted)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}

	identity := sdk.WithSVIDFiles(filepath.Join(*dir, "workload.crt.pem"), filepath.Join(*dir, "workload.key.pem"), filepath.Join(*dir, "bundle.pem"))
	if *workloadAPI != "" {
		identity = sdk.WithWorkloadAPI(*workloadAPI)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client, err := sdk.Dial(dctx, *addr, identity, sdk.WithBrokerID(*brokerID))
	if err != nil {
		return err
	}
	defer client.Close()

	var opts []sdk.SourceOption
	if *ttl > 0 {
		opts = append(opts, sdk.WithTTL(*ttl))
	}
	src, err := client.Credential(dctx, *entitlement, append(opts, sdk.WithReason("workload-sdk example"))...)
	if err != nil {
		return err // codes.PermissionDenied: no grant for this workload
	}
	// Close revokes the lease: the credential ends with the program.
	defer func() {
		if err := src.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "workload-sdk:", err)
			return
		}
		fmt.Fprintln(out, "lease revoked")
	}()
	show(out, "credential", src.Current())

	var stopAfter <-chan time.Time
	if *duration > 0 {
		stopAfter = time.After(*duration)
	}
	for {
		select {
		case <-src.Updated():
			if c := src.Current(); c != nil {
				show(out, "renewed", c)
			}
		case err := <-src.Errors():
			fmt.Fprintln(out, "renewal failed, the source retries:", err)
		case <-stopAfter:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// show prints a credential: String redacts the secret; for a JWT it also
// prints the token's claims, which are not secret.
func show(out io.Writer, what string, c *sdk.Credential) {
	if c == nil {
		return
	}
	fmt.Fprintf(out, "%s: %v\n", what, c)
	if c.Kind == sdk.KindJWT {
		if claims, err := jwtClaims(c.Token); err == nil {
			fmt.Fprintf(out, "  claims: %s\n", claims)
		}
	}
}

// jwtClaims decodes (without verifying) the payload of a JWT.
func jwtClaims(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber() // print iat and exp as integers
	if err := dec.Decode(&m); err != nil {
		return "", err
	}
	keys := []string{"sub", "aud", "scope", "jti", "iat", "exp"}
	var out []string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out = append(out, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(out, " "), nil
}
