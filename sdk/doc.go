// Package sdk is the Go client for the Mayfly credential broker. A workload
// dials the broker with its own SPIFFE identity (an X.509-SVID), asks for a
// short-lived credential for an entitlement it holds a grant for, and either
// manages the lease itself or lets a CredentialSource keep the credential
// valid for as long as the program runs.
//
// The package is meant to be cheap to import: it depends only on the
// standard library, gRPC, protobuf, go-spiffe and Mayfly's generated API.
//
// # Dialing
//
// Dial takes exactly one identity option: WithWorkloadAPI (a SPIRE agent),
// WithSVIDFiles (PEM files on disk) or WithX509Source (sources you already
// have). The broker must present an X.509-SVID in the client's trust domain,
// or exactly the SPIFFE ID given with WithBrokerID. The connection is mutual
// TLS 1.3.
//
// # A credential that renews itself
//
//	client, err := sdk.Dial(ctx, "mayfly.internal:8443",
//		sdk.WithWorkloadAPI(""), // SPIFFE_ENDPOINT_SOCKET
//		sdk.WithBrokerID("spiffe://example.org/mayfly/broker"))
//	if err != nil {
//		return err
//	}
//	defer client.Close()
//
//	src, err := client.Credential(ctx, "orders-db-ro", sdk.WithTTL(15*time.Minute))
//	if err != nil {
//		return err // e.g. codes.PermissionDenied: no grant
//	}
//	defer src.Close() // revokes the lease
//
//	db := connect(src.Current())
//	for {
//		select {
//		case <-src.Updated():
//			if c := src.Current(); c != nil {
//				db = reconnect(db, c) // a new password or a new lease
//			}
//		case err := <-src.Errors():
//			slog.Warn("renewal", "error", err) // handled by the source; for alerting
//		case <-ctx.Done():
//			return nil
//		}
//	}
//
// Current never returns an expired credential: it returns nil when the
// credential has expired and no replacement has arrived yet. Get waits for a
// valid one.
//
// # One credential, managed by hand
//
// Issue returns a Credential and its Lease; Renew, Revoke, Lease and Leases
// work on leases by id. Each Issue call has an idempotency key (random, or
// WithRequestID), reused when the client retries the call, so a retry after
// a lost response returns the lease already minted instead of a second one.
//
// # Errors
//
// Errors start with "sdk: " and keep the broker's gRPC status:
// status.Code(err) and status.FromError(err) see it through the wrapping.
// The broker's contract is:
//
//   - codes.PermissionDenied: no grant for the entitlement (the same for an
//     unknown entitlement), or an approval is needed first.
//   - codes.NotFound: no such lease of the caller's.
//   - codes.FailedPrecondition: the lease is revoked, expired or not
//     renewable.
//   - codes.InvalidArgument: a malformed field, named in the message.
//   - codes.Unavailable: the broker, its lease store or its backend is
//     unreachable and nothing was minted. The client retries these a few
//     times itself before returning one; it also reports a broker that
//     failed TLS authorisation this way.
//   - codes.Unauthenticated: the broker did not accept the client's SVID.
//
// # Secrets
//
// Credential's String, GoString and LogValue (log/slog) redact every secret,
// so a credential can be printed or logged safely. The SDK never logs a
// secret itself.
package sdk
