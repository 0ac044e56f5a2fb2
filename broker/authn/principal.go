package authn

import (
	"context"
	"time"
)

// Kind says what sort of caller a Principal is.
type Kind int

const (
	// KindUnknown is the zero value; no authenticated caller has it.
	KindUnknown Kind = iota
	// KindWorkload is a workload identified by a SPIFFE ID.
	KindWorkload
	// KindHuman is a person identified by an OIDC ID token.
	KindHuman
)

// String returns "workload", "human" or "unknown".
func (k Kind) String() string {
	switch k {
	case KindWorkload:
		return "workload"
	case KindHuman:
		return "human"
	default:
		return "unknown"
	}
}

// Method says how a Principal proved its identity.
type Method string

const (
	// MethodX509SVID is an X.509-SVID client certificate on the mTLS connection.
	MethodX509SVID Method = "x509-svid"
	// MethodJWTSVID is a JWT-SVID bearer token whose audience is the broker.
	MethodJWTSVID Method = "jwt-svid"
	// MethodOIDC is an OIDC ID token from a configured identity provider.
	MethodOIDC Method = "oidc"
)

// Principal is an authenticated caller. Policy matches grants against ID and
// Groups; the lease records ID as its subject.
type Principal struct {
	// Kind is workload or human.
	Kind Kind
	// ID is the canonical subject: "spiffe://td/path" for workloads,
	// "user:<name>" for humans.
	ID string
	// TrustDomain is the SPIFFE trust domain of a workload (empty for humans).
	TrustDomain string
	// Groups are group names the caller belongs to, as asserted by its
	// identity provider (humans) or empty (workloads).
	Groups []string
	// Method is how the caller authenticated.
	Method Method
	// NotAfter is when the credential the caller presented stops being valid.
	NotAfter time.Time
}

type principalKey struct{}

// WithPrincipal returns a context that carries p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the caller stored by WithPrincipal, and false when the
// context carries none (an unauthenticated call that must be refused).
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok && p.ID != ""
}
