package jwt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Name is the issuer name entitlements use ("issuer: jwt").
const Name = "jwt"

// RevocableReason is what Revocability says: a bearer JWT cannot be
// recalled, and what the broker does instead.
const RevocableReason = "a bearer JWT stays valid until exp for verifiers that do not introspect; " +
	"introspection reports it inactive from revocation on"

// leeway is the clock skew Verify tolerates on exp, nbf and iat.
const leeway = 5 * time.Second

// maxTokenLen bounds what Verify parses; our tokens are well under 2 KiB.
const maxTokenLen = 16 << 10

// Issuer is the broker's own JWT issuer: it signs tokens whose jti is the
// lease id, publishes its keys (JWKS and OIDC discovery, see Handler) and
// answers introspection. It is safe for concurrent use; signing never
// waits on a lock.
type Issuer struct {
	cfg    Config
	log    *slog.Logger
	parser *gojwt.Parser

	// keys is read without a lock by every signer and verifier.
	keys atomic.Pointer[keySet]

	// mu serialises the writers of keys (Rotate, Run) and guards
	// rotateRetryAt. Signers never take it.
	mu            sync.Mutex
	rotateRetryAt time.Time
	changed       chan struct{} // wakes Run after Rotate
	rotated       chan struct{} // wakes the peer sync after a rotation

	// peers are the other replicas' keys (Config.Peers), and merged the
	// JWKS of theirs and ours.
	peers  atomic.Pointer[peerKeys]
	merged merged
}

var _ issuer.Issuer = (*Issuer)(nil)

// New validates cfg, loads the keys in cfg.KeyDir (the newest is active),
// generates one if there is none or the newest is not of cfg.Algorithm,
// and prunes keys retired longer than cfg.Retain ago.
func New(cfg Config) (*Issuer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	i := &Issuer{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}, 1), rotated: make(chan struct{}, 1)}
	i.parser = gojwt.NewParser(
		// Only the asymmetric algorithms we sign with: never "none", never
		// HS* (which would accept an HMAC keyed with a public key). The key
		// function below also ties each kid to its one algorithm.
		gojwt.WithValidMethods([]string{ES256, RS256, EdDSA}),
		gojwt.WithIssuer(cfg.IssuerURL),
		gojwt.WithExpirationRequired(),
		gojwt.WithNotBeforeRequired(),
		gojwt.WithIssuedAt(),
		gojwt.WithLeeway(leeway),
		gojwt.WithTimeFunc(cfg.Clock),
		gojwt.WithStrictDecoding(),
	)

	var keys []*signingKey
	if cfg.KeyDir != "" {
		if err := openKeyDir(cfg.KeyDir, i.log); err != nil {
			return nil, err
		}
		var err error
		if keys, err = loadKeys(cfg.KeyDir); err != nil {
			return nil, err
		}
	}
	i.keys.Store(newKeySet(keys))

	i.mu.Lock()
	defer i.mu.Unlock()
	now := cfg.Clock()
	if len(keys) == 0 || keys[0].alg != cfg.Algorithm {
		if err := i.rotateLocked(now); err != nil {
			return nil, err
		}
	} else {
		i.log.Info("jwt signing keys loaded", slog.Int("keys", len(keys)), slog.String("kid", keys[0].kid), slog.String("alg", keys[0].alg))
		i.pruneLocked(now)
	}
	if cfg.Peers != nil {
		// Best effort: Run keeps trying.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := i.syncPeers(ctx); err != nil {
			i.log.Warn("jwt keys not shared with peers yet; will retry", slog.Any("error", err))
		}
	}
	return i, nil
}

// MaxLifetime is the longest token Issue and Renew sign: Config.Retain.
// The broker should refuse, at policy load, a jwt entitlement whose
// max_ttl exceeds it, rather than fail at issuance.
func (i *Issuer) MaxLifetime() time.Duration { return i.cfg.Retain }

// Name returns "jwt".
func (i *Issuer) Name() string { return Name }

// Revocability is always false: see RevocableReason.
func (i *Issuer) Revocability(any) (bool, string) { return false, RevocableReason }

// Issue signs a token for the pending lease: iss, sub = lease subject, aud
// and scope from params, iat = nbf = lease IssuedAt, exp = lease
// ExpiresAt, jti = lease id, ent = entitlement. The claims depend on the
// lease alone, so a retried Issue yields the same jti and exp. The lease id
// is the handle: Bind is not called and ExternalRef is empty.
func (i *Issuer) Issue(ctx context.Context, req issuer.Request) (*issuer.Credential, error) {
	l := req.Lease
	if l == nil {
		return nil, errors.New("jwt: issue: no lease")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("jwt: entitlement %q: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	p, err := paramsOf(req.Params)
	if err != nil {
		return nil, fmt.Errorf("jwt: entitlement %q: %w: %w", l.Entitlement, err, issuer.ErrRejected)
	}
	return i.mint(l, p, l.IssuedAt, l.ExpiresAt)
}

// Renew signs a new token for the active lease with the same jti and exp
// = expiresAt; iat and nbf are the time of renewal. The broker renews the
// lease in its store first: a token never outlives its lease.
func (i *Issuer) Renew(ctx context.Context, l *lease.Lease, params any, expiresAt time.Time) (*issuer.Credential, error) {
	if l == nil {
		return nil, errors.New("jwt: renew: no lease")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("jwt: entitlement %q: renew: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	if l.State != lease.StateActive || l.RevokeReason != "" {
		return nil, fmt.Errorf("jwt: entitlement %q: renew lease in state %s: %w", l.Entitlement, l.State, lease.ErrWrongState)
	}
	if !l.HardEnd.IsZero() && expiresAt.After(l.HardEnd) {
		return nil, fmt.Errorf("jwt: entitlement %q: renew to %s: %w", l.Entitlement, expiresAt.UTC().Format(time.RFC3339), lease.ErrPastHardEnd)
	}
	p, err := paramsOf(params)
	if err != nil {
		return nil, fmt.Errorf("jwt: entitlement %q: %w: %w", l.Entitlement, err, issuer.ErrRejected)
	}
	iat := i.cfg.Clock()
	if iat.Before(l.IssuedAt) {
		iat = l.IssuedAt
	}
	return i.mint(l, p, iat, expiresAt)
}

// Revoke returns nil: a bearer JWT cannot be recalled. Once the lease is
// revoked, introspection (IntrospectToken, Handler) reports the token
// inactive; verifiers that only check the signature accept it until exp.
func (i *Issuer) Revoke(ctx context.Context, l *lease.Lease) error {
	if l == nil {
		return errors.New("jwt: revoke: no lease")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("jwt: entitlement %q: revoke: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	return nil
}

// mint signs the claims of l with the active key.
func (i *Issuer) mint(l *lease.Lease, p Params, iat, exp time.Time) (*issuer.Credential, error) {
	w := wireClaims{
		Iss:   i.cfg.IssuerURL,
		Sub:   l.Subject,
		Aud:   p.Audience,
		Iat:   iat.Unix(),
		Nbf:   iat.Unix(),
		Exp:   exp.Unix(), // whole seconds, rounded down: never past the lease
		Jti:   l.ID,
		Ent:   l.Entitlement,
		Scope: strings.Join(p.Scopes, " "),
	}
	issuedAt, expiresAt := time.Unix(w.Iat, 0), time.Unix(w.Exp, 0)
	switch {
	case w.Jti == "":
		return nil, fmt.Errorf("jwt: entitlement %q: lease has no id", l.Entitlement)
	case w.Sub == "":
		return nil, fmt.Errorf("jwt: entitlement %q: lease %s has no subject", l.Entitlement, l.ID)
	case iat.IsZero() || !expiresAt.After(issuedAt):
		return nil, fmt.Errorf("jwt: entitlement %q: lease %s: expiry %s is not after %s", l.Entitlement, l.ID,
			exp.UTC().Format(time.RFC3339), iat.UTC().Format(time.RFC3339))
	case expiresAt.Sub(issuedAt) > i.cfg.Retain:
		// A key is unpublished Retain after it retires; a token living
		// longer could outlive the key that verifies it.
		return nil, fmt.Errorf("jwt: entitlement %q: token lifetime %v exceeds Config.Retain %v: %w",
			l.Entitlement, expiresAt.Sub(issuedAt), i.cfg.Retain, issuer.ErrRejected)
	}

	k := i.keys.Load().active()
	var buf [512]byte // our claims fit; a longer set grows onto the heap
	claims := appendClaims(buf[:0], &w)
	if len(p.Extra) > 0 {
		var err error
		if claims, err = appendExtra(claims, p.Extra); err != nil {
			return nil, fmt.Errorf("jwt: entitlement %q: %w: %w", l.Entitlement, err, issuer.ErrRejected)
		}
	}
	signed, err := k.signToken(claims)
	if err != nil {
		return nil, fmt.Errorf("jwt: entitlement %q: sign with key %s: %w: %w", l.Entitlement, k.kid, err, issuer.ErrUnavailable)
	}
	return &issuer.Credential{
		Kind:      issuer.KindJWT,
		ExpiresAt: expiresAt,
		Token:     signed,
		Scopes:    slices.Clone(p.Scopes),
	}, nil
}

// Verify checks a token this issuer signed: the signature with the
// published key its kid names (an unknown kid fails), the algorithm of
// that key (so never "none" or HS*), iss, and exp, nbf and iat against
// Config.Clock with 5 seconds of leeway. It does not check aud (the
// resource server does) nor the lease (IntrospectToken does). Errors wrap
// ErrInvalidToken.
func (i *Issuer) Verify(token string) (*Claims, error) {
	if len(token) > maxTokenLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	var w wireClaims
	if _, err := i.parser.ParseWithClaims(token, &w, i.verificationKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return w.claims(), nil
}

// verificationKey finds the published key the token's kid names and
// insists the token's alg is that key's.
func (i *Issuer) verificationKey(t *gojwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errors.New("no kid in the header")
	}
	k := i.keys.Load().byKid[kid]
	if k == nil {
		p := i.peerKey(kid)
		if p == nil {
			return nil, fmt.Errorf("unknown kid %.64q", kid)
		}
		if t.Method == nil || t.Method.Alg() != p.alg {
			return nil, fmt.Errorf("alg does not match key %s (%s)", kid, p.alg)
		}
		return p.pub, nil
	}
	if t.Method == nil || t.Method.Alg() != k.alg {
		return nil, fmt.Errorf("alg does not match key %s (%s)", k.kid, k.alg)
	}
	return k.pub, nil
}
