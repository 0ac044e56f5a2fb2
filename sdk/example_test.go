package sdk_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/sdk"
)

// The runnable examples talk to a real broker (brokertest: the dev trust
// domain, the example policy, in-memory leases) started for this package.
var (
	brokerAddr                           string
	workloadCert, workloadKey, bundlePEM string
)

func TestMain(m *testing.M) {
	env, err := brokertest.New(brokertest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	svid, err := env.CA.MintX509SVID(spiffeid.RequireFromString("spiffe://mayfly.test/workload/demo"), time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	if workloadCert, workloadKey, err = env.CA.WriteSVID("demo", svid); err != nil {
		log.Fatal(err)
	}
	brokerAddr, bundlePEM = env.GRPCAddr, env.CA.BundlePath()
	code := m.Run()
	if err := env.Close(); err != nil {
		log.Print(err)
		code = 1
	}
	os.Exit(code)
}

// A workload with its SVID on disk keeps a credential for an entitlement it
// holds a standing grant for, and revokes it when done.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	client, err := sdk.Dial(ctx, brokerAddr,
		sdk.WithSVIDFiles(workloadCert, workloadKey, bundlePEM),
		sdk.WithBrokerID("spiffe://mayfly.test/mayfly"),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	src, err := client.Credential(ctx, "demo-api-read", sdk.WithTTL(10*time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	cred := src.Current()
	fmt.Println(cred.Kind, cred.Lease.Entitlement, cred.Lease.Subject)
	fmt.Println("lifetime:", cred.Lease.ExpiresAt.Sub(cred.Lease.IssuedAt))
	fmt.Println("token in logs:", strings.Contains(fmt.Sprint(cred), cred.Token)) // redacted

	// Close stops renewing and revokes the lease.
	if err := src.Close(); err != nil {
		log.Fatal(err)
	}
	for {
		l, err := client.Lease(ctx, cred.Lease.ID)
		if err != nil {
			log.Fatal(err)
		}
		if l.State == sdk.StateRevoked {
			fmt.Println(l.State, l.RevokeReason)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output:
	// jwt demo-api-read spiffe://mayfly.test/workload/demo
	// lifetime: 10m0s
	// token in logs: false
	// revoked explicit
}

// In production the SVID comes from the SPIRE agent's Workload API, and
// the source runs for the life of the workload.
func Example_workloadAPI() {
	ctx := context.Background()
	client, err := sdk.Dial(ctx, "mayfly.example.org:7443",
		sdk.WithWorkloadAPI(""), // the SPIFFE_ENDPOINT_SOCKET socket
		sdk.WithBrokerID("spiffe://prod.example.org/mayfly"),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	src, err := client.Credential(ctx, "orders-db-ro", sdk.WithReason("orders API"))
	if err != nil {
		log.Fatal(err) // status.Code(err) == codes.PermissionDenied: no grant
	}
	defer src.Close()
	for {
		select {
		case <-src.Updated():
			if cred := src.Current(); cred != nil {
				slog.Info("credential changed", "credential", cred) // redacted
				// Reconnect with cred.Username / cred.Password, cred.Token, …
			}
		case err := <-src.Errors():
			slog.Warn("renewal failed; the source retries", "error", err)
		case <-ctx.Done():
			return
		}
	}
}
