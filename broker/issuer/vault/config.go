package vault

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Defaults for the zero values of Config.
const (
	// DefaultRequestTimeout bounds one HTTP request to Vault.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultReplayWindow is how long Issue remembers a credential so that
	// a retried issuance of the same lease gets the same one.
	DefaultReplayWindow = 5 * time.Minute
	// DefaultAppRolePath is the AppRole auth mount.
	DefaultAppRolePath = "approle"
	// DefaultJWTPath is the JWT auth mount.
	DefaultJWTPath = "jwt"
)

// Config configures New. Address and exactly one of Auth.Token,
// Auth.AppRole and Auth.JWT are required; every other zero value means its
// default.
type Config struct {
	// Address is Vault's URL, e.g. https://vault.example.com:8200. Plain
	// http is accepted for a loopback dev server only.
	Address string

	// TLS configures the connection to an https Address.
	TLS TLSConfig

	// Namespace is the Vault Enterprise namespace; empty for none.
	Namespace string

	// Auth is how the broker authenticates to Vault.
	Auth Auth

	// TokenRole, when set, creates the per-lease tokens through
	// auth/token/create/<TokenRole>. The role's allowed_policies then bound
	// token_policies, instead of the broker's own policies (a non-root
	// token may otherwise only grant a subset of its own), and the role's
	// orphan setting decides whether the tokens outlive the broker's
	// token. Recommended in production; see the package doc.
	TokenRole string

	// RequestTimeout bounds each HTTP request to Vault (default 10s). The
	// caller's context still applies.
	RequestTimeout time.Duration

	// ReplayWindow is how long an issued credential is kept in memory so
	// that a retried Issue for the same lease returns it instead of
	// minting a second one (default 5m, never past the lease's expiry;
	// about half a kilobyte per credential). After it, or on another
	// broker replica, a retry is refused with "cannot replay; request a
	// new lease".
	ReplayWindow time.Duration

	// Logger receives login, renewal and cleanup events, never a token or
	// a secret; slog.Default() with component=issuer/vault when nil.
	Logger *slog.Logger

	// Clock is the time source for TTL arithmetic; time.Now when nil.
	// Vault's own clock decides when its tokens and leases end.
	Clock func() time.Time
}

// TLSConfig is the TLS client configuration for Vault.
type TLSConfig struct {
	// CAFile is a PEM bundle that verifies Vault's certificate; the
	// system roots when empty.
	CAFile string
	// ServerName overrides the name verified in Vault's certificate.
	ServerName string
}

// Auth is how the broker logs in to Vault. Exactly one field is set.
type Auth struct {
	// Token is a fixed Vault token (dev and tests; an operator-provided
	// periodic token). Run renews it if it is renewable; it cannot log in
	// again when it ends.
	Token string
	// AppRole logs in with a role_id and secret_id.
	AppRole *AppRole
	// JWT logs in with the broker's own JWT-SVID (Vault's jwt auth method
	// configured with the SPIFFE trust domain's JWKS or OIDC discovery).
	JWT *JWTAuth
}

// AppRole is AppRole login (auth/<Path>/login).
type AppRole struct {
	// RoleID is the role's role_id.
	RoleID string
	// SecretID is the secret_id; or set SecretIDFile.
	SecretID string
	// SecretIDFile holds the secret_id (read at every login, so it can be
	// rotated on disk). Surrounding white space is ignored.
	SecretIDFile string
	// Path is the auth mount (default "approle").
	Path string
}

// JWTAuth is JWT login (auth/<Path>/login with role and jwt).
type JWTAuth struct {
	// Role is the Vault jwt auth role.
	Role string
	// Path is the auth mount (default "jwt").
	Path string
	// TokenSource returns a fresh JWT at every login: the broker's own
	// JWT-SVID for Vault's audience.
	TokenSource func(ctx context.Context) (string, error)
}

// validate checks c and fills in defaults; errors name the field.
func (c *Config) validate() error {
	if c.Address == "" {
		return fmt.Errorf("vault: Config.Address is required")
	}
	u, err := url.Parse(c.Address)
	switch {
	case err != nil:
		return fmt.Errorf("vault: Config.Address %q does not parse as a URL", c.Address)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("vault: Config.Address %q must be an http(s) URL", c.Address)
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("vault: Config.Address %q must name a host, and no user, query or fragment", c.Address)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		return fmt.Errorf("vault: Config.Address %q: plain http is only allowed to a loopback dev server; use https", c.Address)
	case u.Scheme == "http" && (c.TLS.CAFile != "" || c.TLS.ServerName != ""):
		return fmt.Errorf("vault: Config.TLS is set but Config.Address %q is not https", c.Address)
	}

	n := 0
	if c.Auth.Token != "" {
		n++
	}
	if c.Auth.AppRole != nil {
		n++
		a := c.Auth.AppRole
		switch {
		case a.RoleID == "":
			return fmt.Errorf("vault: Config.Auth.AppRole.RoleID is required")
		case (a.SecretID == "") == (a.SecretIDFile == ""):
			return fmt.Errorf("vault: Config.Auth.AppRole needs exactly one of SecretID and SecretIDFile")
		}
		if a.Path == "" {
			a.Path = DefaultAppRolePath
		}
		if err := validMount("Auth.AppRole.Path", a.Path); err != nil {
			return err
		}
	}
	if c.Auth.JWT != nil {
		n++
		j := c.Auth.JWT
		switch {
		case j.Role == "":
			return fmt.Errorf("vault: Config.Auth.JWT.Role is required")
		case j.TokenSource == nil:
			return fmt.Errorf("vault: Config.Auth.JWT.TokenSource is required")
		}
		if j.Path == "" {
			j.Path = DefaultJWTPath
		}
		if err := validMount("Auth.JWT.Path", j.Path); err != nil {
			return err
		}
	}
	if n != 1 {
		return fmt.Errorf("vault: Config.Auth needs exactly one of Token, AppRole and JWT (has %d)", n)
	}
	if c.TokenRole != "" && !safeName(c.TokenRole) {
		return fmt.Errorf("vault: Config.TokenRole %q may hold only letters, digits, '-', '_' and '.'", c.TokenRole)
	}
	switch {
	case c.RequestTimeout < 0:
		return fmt.Errorf("vault: Config.RequestTimeout %v must not be negative", c.RequestTimeout)
	case c.RequestTimeout == 0:
		c.RequestTimeout = DefaultRequestTimeout
	}
	switch {
	case c.ReplayWindow < 0:
		return fmt.Errorf("vault: Config.ReplayWindow %v must not be negative", c.ReplayWindow)
	case c.ReplayWindow == 0:
		c.ReplayWindow = DefaultReplayWindow
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = c.Logger.With(slog.String("component", "issuer/vault"))
	return nil
}

func loopback(host string) bool {
	return host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// validMount checks an auth or secrets mount path: segments of safe names.
func validMount(field, p string) error {
	for _, seg := range strings.Split(p, "/") {
		if !safeName(seg) {
			return fmt.Errorf("vault: Config.%s %q must be a mount path like \"approle\" or \"auth-team/jwt\"", field, p)
		}
	}
	return nil
}

// safeName is a Vault role, mount or policy name without surprises.
func safeName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
