package authn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// DefaultMaxJWTLifetime is the longest JWT-SVID lifetime (exp − iat) accepted
// when Config.MaxJWTLifetime is zero. A bearer token cannot be revoked, so a
// short one limits what a stolen one is worth.
const DefaultMaxJWTLifetime = time.Hour

// BearerVerifier turns a bearer token into the Principal it proves. The
// Authenticator tries its verifiers in order: the built-in JWT-SVID verifier
// first (when Config.JWTBundles is set), then Config.Bearer. Adding a kind of
// token — OIDC ID tokens for humans — is one new type that implements this.
//
// Error contract: VerifyBearer returns
//   - ErrTokenNotRecognized (possibly wrapped) when the token is not of its
//     kind, for example an OIDC ID token whose "iss" is not its issuer; the
//     next verifier is tried;
//   - an error wrapping ErrUnauthenticated when the token is of its kind but
//     is refused, with a secret-free message that says what to fix (the
//     token itself never appears in it);
//   - any other error when it could not decide (its identity provider's
//     keys could not be fetched); Authenticate returns it, and the caller
//     sees a server fault rather than "unauthenticated".
//
// A Principal it returns must have Kind, ID, Method and a NotAfter in the
// future set.
type BearerVerifier interface {
	VerifyBearer(ctx context.Context, token string) (Principal, error)
}

// Config configures an Authenticator.
type Config struct {
	// TrustDomains are the SPIFFE trust domains whose workloads may call the
	// broker, by X.509-SVID or JWT-SVID. Required. An SVID from any other
	// trust domain is refused even if a bundle for it is known.
	TrustDomains []spiffeid.TrustDomain
	// JWTBundles holds the JWT bundles that JWT-SVIDs are verified against.
	// Nil disables JWT-SVID bearer tokens.
	JWTBundles jwtbundle.Source
	// Audience is the broker's audience: a JWT-SVID must name it, and only
	// it, in "aud". Typically the broker's SPIFFE ID. Required when
	// JWTBundles is set.
	Audience string
	// MaxJWTLifetime is the longest lifetime (exp − iat) of an accepted
	// JWT-SVID; zero means DefaultMaxJWTLifetime.
	MaxJWTLifetime time.Duration
	// Bearer are further bearer-token verifiers (OIDC for humans), tried in
	// order after the JWT-SVID verifier.
	Bearer []BearerVerifier
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authenticator finds out who is calling: from the X.509-SVID of the
// connection or, failing that, a bearer token. It is safe for concurrent use.
type Authenticator struct {
	trustDomains map[spiffeid.TrustDomain]bool
	bearer       []BearerVerifier
	jwtEnabled   bool
	now          func() time.Time
}

// NewAuthenticator checks cfg and returns an Authenticator. The error names
// the field that is missing or wrong.
func NewAuthenticator(cfg Config) (*Authenticator, error) {
	switch {
	case len(cfg.TrustDomains) == 0:
		return nil, errors.New("authn: Config.TrustDomains is empty: list the trust domains whose workloads may call the broker")
	case cfg.JWTBundles != nil && cfg.Audience == "":
		return nil, errors.New("authn: Config.Audience is required when Config.JWTBundles is set")
	case cfg.MaxJWTLifetime < 0:
		return nil, fmt.Errorf("authn: Config.MaxJWTLifetime %s is negative", cfg.MaxJWTLifetime)
	}
	a := &Authenticator{
		trustDomains: make(map[spiffeid.TrustDomain]bool, len(cfg.TrustDomains)),
		now:          cfg.Now,
	}
	if a.now == nil {
		a.now = time.Now
	}
	for i, td := range cfg.TrustDomains {
		if td.IsZero() {
			return nil, fmt.Errorf("authn: Config.TrustDomains[%d] is empty", i)
		}
		a.trustDomains[td] = true
	}
	if cfg.JWTBundles != nil {
		maxLifetime := cfg.MaxJWTLifetime
		if maxLifetime == 0 {
			maxLifetime = DefaultMaxJWTLifetime
		}
		a.jwtEnabled = true
		a.bearer = append(a.bearer, &jwtSVIDVerifier{
			bundles:     cfg.JWTBundles,
			audience:    cfg.Audience,
			maxLifetime: maxLifetime,
			accepts:     a.accepts,
			now:         a.now,
		})
	}
	for i, v := range cfg.Bearer {
		if v == nil {
			return nil, fmt.Errorf("authn: Config.Bearer[%d] is nil", i)
		}
		a.bearer = append(a.bearer, v)
	}
	return a, nil
}

// Authenticate returns the caller of the RPC whose server context is ctx.
//
//  1. If the client presented a certificate on a connection accepted by
//     ServerCredentials, it must be a valid X.509-SVID now, against the
//     current bundle, from an accepted trust domain: the caller is that
//     workload. A certificate that fails is reported; Authenticate does not
//     fall back to a bearer token.
//  2. Otherwise a bearer token in the "authorization" metadata, sent over a
//     connection with privacy and integrity (TLS), is given to the
//     verifiers in order.
//  3. Otherwise the call is refused.
//
// Errors that refuse the caller wrap ErrUnauthenticated; any other error is
// a fault of the broker's configuration or of an identity provider.
func (a *Authenticator) Authenticate(ctx context.Context) (Principal, error) {
	p, _ := peer.FromContext(ctx)
	var authInfo credentials.AuthInfo
	if p != nil {
		authInfo = p.AuthInfo
	}
	switch info := authInfo.(type) {
	case AuthInfo:
		if info.ClientCertificatePresented() {
			return a.fromX509SVID(info)
		}
	case credentials.TLSInfo:
		if len(info.State.PeerCertificates) > 0 {
			return Principal{}, errors.New("authn: the connection's client certificate was not verified by authn.ServerCredentials; the gRPC server must use them")
		}
	}

	token, ok, err := bearerToken(ctx)
	if err != nil {
		return Principal{}, err
	}
	if !ok {
		return Principal{}, unauthenticated("no client certificate and no bearer token: present an X.509-SVID as the TLS client certificate, or send \"authorization: Bearer <token>\" metadata")
	}
	if !secureTransport(authInfo) {
		return Principal{}, unauthenticated("bearer token refused: the connection is not protected by TLS")
	}
	return a.fromBearer(ctx, token)
}

func (a *Authenticator) accepts(td spiffeid.TrustDomain) bool { return a.trustDomains[td] }

func (a *Authenticator) fromX509SVID(info AuthInfo) (Principal, error) {
	if info.peer == nil {
		// An AuthInfo not made by ServerCredentials.
		return Principal{}, errors.New("authn: the connection's client certificate was not verified by authn.ServerCredentials; the gRPC server must use them")
	}
	if claimed := info.peer.claimedID(); !claimed.IsZero() && !a.accepts(claimed.TrustDomain()) {
		return Principal{}, unauthenticated("trust domain %q is not accepted", claimed.TrustDomain().Name())
	}
	id, notAfter, err := info.peer.check(a.now())
	if err != nil {
		return Principal{}, err
	}
	return Principal{
		Kind:        KindWorkload,
		ID:          id.String(),
		TrustDomain: id.TrustDomain().Name(),
		Method:      MethodX509SVID,
		NotAfter:    notAfter,
	}, nil
}

func (a *Authenticator) fromBearer(ctx context.Context, token string) (Principal, error) {
	for _, v := range a.bearer {
		p, err := v.VerifyBearer(ctx, token)
		if errors.Is(err, ErrTokenNotRecognized) {
			continue
		}
		if err != nil {
			return Principal{}, err
		}
		if err := a.checkPrincipal(p); err != nil {
			return Principal{}, fmt.Errorf("authn: bearer verifier %T: %w", v, err)
		}
		return p, nil
	}
	return Principal{}, a.unrecognized(token)
}

// checkPrincipal catches a BearerVerifier that returns an incomplete
// Principal, which must never be taken for an authenticated caller.
func (a *Authenticator) checkPrincipal(p Principal) error {
	switch {
	case p.Kind != KindWorkload && p.Kind != KindHuman:
		return fmt.Errorf("principal has kind %s", p.Kind)
	case p.ID == "":
		return errors.New("principal has no ID")
	case p.Method == "":
		return errors.New("principal has no method")
	case !a.now().Before(p.NotAfter):
		return fmt.Errorf("principal's credential ended at %s", formatTime(p.NotAfter))
	}
	return nil
}

// unrecognized explains why no verifier took the token.
func (a *Authenticator) unrecognized(token string) error {
	jwt, err := peekJWT(token)
	if err != nil {
		return unauthenticated("bearer token is not a JWT: %v", err)
	}
	if strings.HasPrefix(jwt.claims.Sub, "spiffe://") && !a.jwtEnabled {
		return unauthenticated("bearer token is a JWT-SVID, and this broker does not accept JWT-SVIDs; use an X.509-SVID")
	}
	if len(a.bearer) == 0 {
		return unauthenticated("bearer token refused: this broker accepts no bearer tokens; use an X.509-SVID")
	}
	return unauthenticated("bearer token is not a JWT-SVID (its subject is not a SPIFFE ID) and no other configured verifier recognizes it")
}

// bearerToken returns the token of the "authorization: Bearer <token>"
// metadata of the incoming call, and whether there was one.
func bearerToken(ctx context.Context) (string, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	switch len(values) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, unauthenticated("the call has %d \"authorization\" metadata entries, at most 1 is allowed", len(values))
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false, unauthenticated("\"authorization\" metadata is not of the form \"Bearer <token>\"")
	}
	return token, true, nil
}

// secureTransport reports whether the connection protects a bearer token in
// transit: TLS, or another transport that claims privacy and integrity
// (grpc's local credentials over a Unix socket).
func secureTransport(info credentials.AuthInfo) bool {
	ci, ok := info.(interface {
		GetCommonAuthInfo() credentials.CommonAuthInfo
	})
	return ok && ci.GetCommonAuthInfo().SecurityLevel == credentials.PrivacyAndIntegrity
}
