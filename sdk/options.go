package sdk

import (
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
)

// DialOption configures Dial. Only this package can implement it, so the set
// of options is closed and documented here.
type DialOption interface {
	configureDial(*dialConfig)
}

type dialOption func(*dialConfig)

func (f dialOption) configureDial(c *dialConfig) { f(c) }

// identityKind says where the client's own X.509-SVID comes from.
type identityKind int

const (
	identityNone identityKind = iota
	identityWorkloadAPI
	identityFiles
	identitySource
)

type dialConfig struct {
	// identities counts identity options so Dial can insist on exactly one.
	identities int
	identity   identityKind

	socketAddr string

	certPath, keyPath, bundlePath string

	svidSource   x509svid.Source
	bundleSource x509bundle.Source

	brokerID string

	logger      *slog.Logger
	grpcOptions []grpc.DialOption
	retry       retryPolicy
}

// WithWorkloadAPI takes the client's identity and trust bundle from the
// SPIFFE Workload API (SPIRE agent) at socketAddr, e.g.
// "unix:///run/spire/agent.sock". An empty socketAddr uses the
// SPIFFE_ENDPOINT_SOCKET environment variable. The SVID rotates as the agent
// rotates it; the client owns the Workload API connection and Close ends it.
func WithWorkloadAPI(socketAddr string) DialOption {
	return dialOption(func(c *dialConfig) {
		c.identities++
		c.identity = identityWorkloadAPI
		c.socketAddr = socketAddr
	})
}

// WithSVIDFiles takes the client's identity from PEM files on disk: the
// X.509-SVID certificate chain (leaf first), its private key, and the trust
// bundle of the SVID's trust domain. The files are read at Dial and read again
// on the next TLS handshake after they change, so a rotating writer such as
// spiffe-helper keeps working.
func WithSVIDFiles(certPath, keyPath, bundlePath string) DialOption {
	return dialOption(func(c *dialConfig) {
		c.identities++
		c.identity = identityFiles
		c.certPath, c.keyPath, c.bundlePath = certPath, keyPath, bundlePath
	})
}

// WithX509Source uses sources the caller already has, for example a
// workloadapi.X509Source shared with the rest of the program. The client
// never closes them.
func WithX509Source(svid x509svid.Source, bundles x509bundle.Source) DialOption {
	return dialOption(func(c *dialConfig) {
		c.identities++
		c.identity = identitySource
		c.svidSource, c.bundleSource = svid, bundles
	})
}

// WithBrokerID makes the client accept only a broker presenting exactly this
// SPIFFE ID, e.g. "spiffe://example.org/mayfly/broker". Without it, any
// member of the client's own trust domain is accepted as the broker.
func WithBrokerID(id string) DialOption {
	return dialOption(func(c *dialConfig) { c.brokerID = id })
}

// WithLogger gives the client and its credential sources a logger for
// renewal events. Secrets are never logged. The default discards everything.
func WithLogger(logger *slog.Logger) DialOption {
	return dialOption(func(c *dialConfig) { c.logger = logger })
}

// WithGRPCDialOptions appends gRPC dial options, for interceptors, keepalive
// settings or a custom dialer. Options that replace the transport
// credentials defeat the SPIFFE mTLS set up by Dial; do not pass them.
func WithGRPCDialOptions(opts ...grpc.DialOption) DialOption {
	return dialOption(func(c *dialConfig) { c.grpcOptions = append(c.grpcOptions, opts...) })
}

// withRetryPolicy replaces the client's retry policy for its unary calls
// (tests use it to keep backoffs short).
func withRetryPolicy(p retryPolicy) DialOption {
	return dialOption(func(c *dialConfig) { c.retry = p })
}

// IssueOption configures one call to Client.Issue.
type IssueOption interface {
	configureIssue(*issueConfig)
}

// SourceOption configures a CredentialSource created by Client.Credential.
type SourceOption interface {
	configureSource(*sourceConfig)
}

// RequestOption configures what is asked of the broker. It works both for a
// single Client.Issue and for a CredentialSource, which applies it to every
// credential it issues and renews.
type RequestOption interface {
	IssueOption
	SourceOption
}

type issueConfig struct {
	request   requestConfig
	requestID string
}

// requestConfig is the part of an issuance shared by Issue and sources.
type requestConfig struct {
	ttl    time.Duration
	reason string
	ticket string
}

type requestOption func(*requestConfig)

func (f requestOption) configureIssue(c *issueConfig)   { f(&c.request) }
func (f requestOption) configureSource(c *sourceConfig) { f(&c.request) }

// WithTTL asks for a credential lifetime. The broker clamps it to the
// entitlement's max_ttl and the grant's end. Zero or less means the
// entitlement's default. A CredentialSource also asks for it on each renewal.
func WithTTL(ttl time.Duration) RequestOption {
	return requestOption(func(c *requestConfig) { c.ttl = ttl })
}

// WithReason records why the credential is needed with its lease.
func WithReason(reason string) RequestOption {
	return requestOption(func(c *requestConfig) { c.reason = reason })
}

// WithTicket records a ticket reference such as "INC-1234" with the lease.
func WithTicket(ticket string) RequestOption {
	return requestOption(func(c *requestConfig) { c.ticket = ticket })
}

type issueOption func(*issueConfig)

func (f issueOption) configureIssue(c *issueConfig) { f(c) }

// WithRequestID sets the idempotency key of an issuance (up to 128 printable
// ASCII characters): the broker answers a repeated key from the same caller
// with the same lease instead of minting again. Use it to retry an Issue
// across process restarts. Without it, each Issue call picks a random key and
// reuses it for the client's own retries of that call.
func WithRequestID(id string) IssueOption {
	return issueOption(func(c *issueConfig) { c.requestID = id })
}

// ListOption filters Client.Leases.
type ListOption interface {
	configureList(*listConfig)
}

type listConfig struct {
	pageSize    int32
	states      []string
	entitlement string
}

type listOption func(*listConfig)

func (f listOption) configureList(c *listConfig) { f(c) }

// WithStates lists only leases in these states (StatePending, StateActive,
// StateRevoking, StateRevoked, StateIrrevocable).
func WithStates(states ...string) ListOption {
	return listOption(func(c *listConfig) { c.states = append(c.states, states...) })
}

// WithEntitlement lists only leases of this entitlement.
func WithEntitlement(entitlement string) ListOption {
	return listOption(func(c *listConfig) { c.entitlement = entitlement })
}

// WithPageSize sets how many leases each ListLeases call fetches (1 to 1000;
// the broker's default of 100 when unset).
func WithPageSize(n int) ListOption {
	return listOption(func(c *listConfig) { c.pageSize = int32(min(max(n, 0), 1000)) })
}
