package issuer

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// Issuer mints, renews and revokes credentials at one backend.
//
// Error contract: wrap ErrUnavailable when the backend could not be reached
// or timed out (the API answers Unavailable and nothing is handed out),
// ErrRejected when the backend refused for a reason an operator must fix
// (missing role, permission denied, bad path: FailedPrecondition). Messages
// name the entitlement and never carry a secret, a token, or a backend's raw
// error text that might. Revoke is idempotent: a credential that is already
// gone is success. Every implementation passes issuertest.Run.
type Issuer interface {
	// Name is the issuer name the policy uses ("jwt", "vault", ...).
	Name() string

	// DecodeParams validates and decodes the entitlement's issuer section
	// (the YAML mapping under the issuer's name). node is nil when the
	// entitlement has no such section. Errors name what to fix; the policy
	// loader adds the line.
	DecodeParams(node *yaml.Node) (any, error)

	// Revocability reports whether credentials minted with params can be
	// ended before their native expiry, and if not, why and what the broker
	// does instead.
	Revocability(params any) (revocable bool, reason string)

	// Issue mints a credential for the pending lease in req. If the backend
	// lets the broker create a handle before the secret exists, Issue calls
	// req.Bind with it first. Calling Issue twice for one lease yields
	// credentials bound to the same handle (a retried request). The
	// credential's native expiry is no later than req.Lease.ExpiresAt.
	Issue(ctx context.Context, req Request) (*Credential, error)

	// Renew extends the credential of an active lease to expiresAt. The
	// broker renews the lease in the store first, so a credential never
	// outlives its lease even if this call fails. It
	// returns a new credential when the holder must switch to a new value
	// (a JWT with a later exp), or nil when the existing one stays valid.
	Renew(ctx context.Context, l *lease.Lease, params any, expiresAt time.Time) (*Credential, error)

	// Revoke ends the credential of the lease. Idempotent. It works from
	// the lease alone (Entitlement, ExternalRef, ID): the entitlement may
	// have left the policy since the credential was minted.
	Revoke(ctx context.Context, l *lease.Lease) error
}

// Request is one issuance.
type Request struct {
	// Lease is the pending lease; its ID is the credential's handle where
	// the backend allows (JWT jti, STS session name).
	Lease *lease.Lease
	// Params is the entitlement's decoded issuer section.
	Params any
	// Bind records a backend handle in the pending lease before minting.
	Bind func(ctx context.Context, ref string) error
}

// Kind is the shape of a credential.
type Kind string

const (
	KindJWT              Kind = "jwt"
	KindUsernamePassword Kind = "username_password"
	KindCertificate      Kind = "certificate"
	KindAWS              Kind = "aws"
	KindOAuthToken       Kind = "oauth_token"
	KindRaw              Kind = "raw"
)

// Credential is what the caller receives. It holds secrets: it never goes
// into a log or an error (LogValue redacts it).
type Credential struct {
	Kind Kind
	// ExternalRef is the backend handle recorded on activation: empty when
	// the lease id is the handle, else the bound one, or the bound one
	// with what was minted under it appended (Vault: ACCESSOR|LEASE_ID
	// after binding ACCESSOR). It never names a different handle.
	ExternalRef string
	// ExpiresAt is the credential's native expiry.
	ExpiresAt time.Time

	// Token is the JWT or OAuth access token.
	Token string
	// Scopes of a JWT or OAuth token.
	Scopes []string
	// Username and Password of a database-style credential.
	Username, Password string
	// CertPEM, KeyPEM and ChainPEM of a certificate credential.
	CertPEM, KeyPEM, ChainPEM string
	// AccessKeyID, SecretAccessKey and SessionToken of AWS credentials.
	AccessKeyID, SecretAccessKey, SessionToken string
	// Fields of a raw secret.
	Fields map[string]string
}

// LogValue keeps secrets out of logs: only the kind, reference and expiry.
// Value receivers, so a Credential value is redacted as well as a pointer.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kind", string(c.Kind)),
		slog.String("ref", c.ExternalRef),
		slog.Time("expires_at", c.ExpiresAt),
	)
}

// String redacts the credential, so %v and %s never print a secret.
func (c Credential) String() string {
	return "credential{kind=" + string(c.Kind) + " ref=" + c.ExternalRef + " secret=REDACTED}"
}

// GoString redacts the credential for %#v too.
func (c Credential) GoString() string { return c.String() }

var (
	// ErrUnavailable: the backend could not be reached or timed out.
	ErrUnavailable = errors.New("issuer: backend unavailable")
	// ErrRejected: the backend refused; an operator must fix configuration.
	ErrRejected = errors.New("issuer: backend rejected the request")
	// ErrNotSupported: the entitlement does not enable the optional
	// operation asked for (e.g. cutting off every STS session at once).
	ErrNotSupported = errors.New("issuer: not enabled for this entitlement")
)
