package sdk_test

import (
	"context"
	"log"
	"log/slog"
	"time"

	"github.com/mayflyhq/mayfly/sdk"
)

// A workload dials the broker with the SVID from its SPIRE agent, keeps a
// credential for "demo-api-read" valid, and reconnects whenever it changes.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	client, err := sdk.Dial(ctx, "localhost:8443",
		sdk.WithWorkloadAPI(""), // the SPIFFE_ENDPOINT_SOCKET socket
		sdk.WithBrokerID("spiffe://mayfly.test/mayfly"),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	src, err := client.Credential(ctx, "demo-api-read",
		sdk.WithTTL(15*time.Minute),
		sdk.WithReason("nightly export"),
	)
	if err != nil {
		log.Fatal(err) // status.Code(err) == codes.PermissionDenied: no grant
	}
	defer src.Close() // stops renewing and revokes the lease

	cred := src.Current()
	slog.Info("connected", "credential", cred) // secrets are redacted

	for {
		select {
		case <-src.Updated():
			if cred := src.Current(); cred != nil {
				slog.Info("credential changed", "credential", cred)
				// Reconnect with cred.Username / cred.Password, cred.Token, …
			}
		case err := <-src.Errors():
			slog.Warn("renewal failed; the source retries", "error", err)
		case <-ctx.Done():
			return
		}
	}
}
