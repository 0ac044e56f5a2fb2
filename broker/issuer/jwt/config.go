package jwt

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Algorithms the issuer signs with. ES256 is the default: small keys and
// tokens, fast signing, and accepted by AWS IAM OIDC providers and Google
// workload identity federation. RS256 is there for verifiers that know
// nothing else. EdDSA (Ed25519) is the fastest, but AWS and Google do not
// accept it.
const (
	ES256 = "ES256"
	RS256 = "RS256"
	EdDSA = "EdDSA"
)

// DefaultRetain is how long a retired key stays published when
// Config.Retain is zero.
const DefaultRetain = 24 * time.Hour

// minRotateEvery keeps a misread duration ("24" meaning 24ns) from turning
// Run into a key generator.
const minRotateEvery = time.Second

// Config configures New.
type Config struct {
	// IssuerURL is the iss claim and the base of the discovery document
	// (IssuerURL + "/.well-known/openid-configuration"). It must be an
	// https URL without query, fragment or trailing slash, because AWS and
	// Google compare it byte for byte with what they were configured with.
	IssuerURL string

	// Algorithm is ES256 (default), RS256 or EdDSA. Changing it keeps the
	// keys of the old algorithm published until they are pruned and makes
	// a key of the new one active at start.
	Algorithm string

	// KeyDir is where signing keys persist: one PKCS#8 PEM file per key,
	// mode 0600, named <created>_<kid>.pem, in a directory of mode 0700
	// (created if missing, tightened if group or others could enter it).
	// Empty keeps keys in memory only: a restart then invalidates every
	// token issued before it. One process per KeyDir.
	KeyDir string

	// RotateEvery is how often Run makes a new active key; 0 never does
	// (Rotate can still be called). At least one second when set.
	RotateEvery time.Duration

	// Retain is how long a retired key stays published in the JWKS (plus a
	// minute of slack for clock skew) so that tokens it signed keep
	// verifying. It must be at least the longest
	// token lifetime the policy allows (max_ttl): Issue and Renew refuse a
	// token that would outlive it. DefaultRetain when zero.
	Retain time.Duration

	// Peers, if set, shares public keys with the other replicas behind
	// the same IssuerURL (RedisPeers): each replica publishes its keys
	// there and serves, and verifies with, everyone's, so a JWKS fetched
	// from any replica verifies a token signed by any. Run keeps it in
	// step every PeerRefresh (default DefaultPeerRefresh) and after each
	// rotation; New loads it once. Nil: one replica per issuer URL.
	Peers       PeerStore
	PeerRefresh time.Duration

	// Clock is the time source for key creation, rotation, pruning,
	// renewal and verification; time.Now when nil. Issue does not read it:
	// a token's times come from its lease.
	Clock func() time.Time

	// Logger receives key rotation and pruning events, never a token;
	// slog.Default() with component=issuer/jwt when nil.
	Logger *slog.Logger
}

// validate checks c and fills in defaults; errors name the field.
func (c *Config) validate() error {
	if c.IssuerURL == "" {
		return fmt.Errorf("jwt: Config.IssuerURL is required")
	}
	u, err := url.Parse(c.IssuerURL)
	switch {
	case err != nil:
		return fmt.Errorf("jwt: Config.IssuerURL %q does not parse as a URL", c.IssuerURL)
	case u.Scheme != "https":
		return fmt.Errorf("jwt: Config.IssuerURL %q must use https", c.IssuerURL)
	case u.Host == "" || u.User != nil:
		return fmt.Errorf("jwt: Config.IssuerURL %q must name a host and no user", c.IssuerURL)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(c.IssuerURL, "#"):
		return fmt.Errorf("jwt: Config.IssuerURL %q must not have a query or fragment", c.IssuerURL)
	case strings.HasSuffix(c.IssuerURL, "/"):
		return fmt.Errorf("jwt: Config.IssuerURL %q must not end with a slash", c.IssuerURL)
	}

	switch c.Algorithm {
	case "":
		c.Algorithm = ES256
	case ES256, RS256, EdDSA:
	default:
		return fmt.Errorf("jwt: Config.Algorithm %q is not supported (want ES256, RS256 or EdDSA)", c.Algorithm)
	}

	switch {
	case c.RotateEvery < 0:
		return fmt.Errorf("jwt: Config.RotateEvery %v must not be negative", c.RotateEvery)
	case c.RotateEvery > 0 && c.RotateEvery < minRotateEvery:
		return fmt.Errorf("jwt: Config.RotateEvery %v must be at least %v", c.RotateEvery, minRotateEvery)
	}

	switch {
	case c.Retain < 0:
		return fmt.Errorf("jwt: Config.Retain %v must not be negative", c.Retain)
	case c.Retain == 0:
		c.Retain = DefaultRetain
	}

	switch {
	case c.PeerRefresh < 0:
		return fmt.Errorf("jwt: Config.PeerRefresh %v must not be negative", c.PeerRefresh)
	case c.PeerRefresh == 0:
		c.PeerRefresh = DefaultPeerRefresh
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default().With(slog.String("component", "issuer/jwt"))
	}
	return nil
}
