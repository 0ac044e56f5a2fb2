package gcp

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// Google's endpoints.
const (
	DefaultSTSURL            = "https://sts.googleapis.com/v1/token"
	DefaultIAMCredentialsURL = "https://iamcredentials.googleapis.com"
)

// Defaults for retries and timeouts.
const (
	DefaultMaxAttempts = 3
	DefaultMaxBackoff  = 2 * time.Second
	DefaultCallTimeout = 15 * time.Second
)

// TokenSource mints the token the broker exchanges at Google STS: a JWT
// from the broker's own issuer with iss its issuer URL (the provider's
// issuer URI), sub the lease subject, ent the entitlement and aud
// audience. The composition root wires it to jwt.Issuer.Issue. l is a copy
// of the lease whose IssuedAt is now and whose ExpiresAt is at most
// ExchangeTokenLifetime later (never after the lease): Google only needs
// the token while it exchanges it. An error wrapping issuer.ErrRejected is
// passed on as a rejection, any other as ErrUnavailable.
type TokenSource func(ctx context.Context, l *lease.Lease, audience string) (string, error)

// providerRE is a workload identity provider's resource name.
var providerRE = regexp.MustCompile(`^projects/[0-9]{1,20}/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}$`)

// Config configures New.
type Config struct {
	// WorkloadIdentityProvider is the resource name of the workload
	// identity pool provider that trusts the broker's issuer:
	// projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER
	// (a leading //iam.googleapis.com/ is accepted). Required.
	WorkloadIdentityProvider string

	// TokenAudience is the aud of the broker's tokens; when empty,
	// "https://iam.googleapis.com/" + WorkloadIdentityProvider, what a
	// provider without allowed audiences accepts.
	TokenAudience string

	// TokenSource mints the tokens exchanged at Google STS. Required.
	TokenSource TokenSource

	// STSURL is Google STS's token endpoint; DefaultSTSURL when empty.
	STSURL string

	// IAMCredentialsURL is the IAM Credentials API's base URL;
	// DefaultIAMCredentialsURL when empty (a Private Service Connect
	// endpoint, a test server).
	IAMCredentialsURL string

	// HTTPClient sends every request; a client with
	// http.DefaultTransport when nil.
	HTTPClient *http.Client

	// MaxAttempts bounds the attempts of one call, the first included:
	// 429, 5xx answers and network errors are retried up to it.
	// DefaultMaxAttempts when zero; 1 disables retries.
	MaxAttempts int

	// MaxBackoff caps the jittered wait between attempts. DefaultMaxBackoff
	// when zero.
	MaxBackoff time.Duration

	// CallTimeout bounds one issuance (both calls, retries included). It
	// must be shorter than SkewAllowance. DefaultCallTimeout when zero.
	CallTimeout time.Duration

	// Clock is the time source for token lifetimes; time.Now when nil.
	Clock func() time.Time

	// Logger receives Google's refusals (status, code, Google's message
	// with anything key-like removed), never a token; slog.Default() with
	// component=issuer/gcp when nil.
	Logger *slog.Logger
}

// validate checks c and fills in defaults; errors name the field.
func (c *Config) validate() error {
	c.WorkloadIdentityProvider = strings.TrimPrefix(c.WorkloadIdentityProvider, "//iam.googleapis.com/")
	switch {
	case c.WorkloadIdentityProvider == "":
		return fmt.Errorf("gcp: Config.WorkloadIdentityProvider is required")
	case !providerRE.MatchString(c.WorkloadIdentityProvider):
		return fmt.Errorf("gcp: Config.WorkloadIdentityProvider %q is not projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER", c.WorkloadIdentityProvider)
	case c.TokenSource == nil:
		return fmt.Errorf("gcp: Config.TokenSource (the broker's JWT issuer) is required")
	}
	if c.TokenAudience == "" {
		c.TokenAudience = "https://iam.googleapis.com/" + c.WorkloadIdentityProvider
	}
	if c.STSURL == "" {
		c.STSURL = DefaultSTSURL
	}
	if c.IAMCredentialsURL == "" {
		c.IAMCredentialsURL = DefaultIAMCredentialsURL
	}
	c.IAMCredentialsURL = strings.TrimSuffix(c.IAMCredentialsURL, "/")
	for name, v := range map[string]string{"STSURL": c.STSURL, "IAMCredentialsURL": c.IAMCredentialsURL} {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" {
			return fmt.Errorf("gcp: Config.%s %q must be an absolute http(s) URL without a query", name, v)
		}
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: http.DefaultTransport}
	}
	switch {
	case c.MaxAttempts < 0:
		return fmt.Errorf("gcp: Config.MaxAttempts %d must not be negative", c.MaxAttempts)
	case c.MaxAttempts == 0:
		c.MaxAttempts = DefaultMaxAttempts
	}
	switch {
	case c.MaxBackoff < 0:
		return fmt.Errorf("gcp: Config.MaxBackoff %v must not be negative", c.MaxBackoff)
	case c.MaxBackoff == 0:
		c.MaxBackoff = DefaultMaxBackoff
	}
	switch {
	case c.CallTimeout < 0:
		return fmt.Errorf("gcp: Config.CallTimeout %v must not be negative", c.CallTimeout)
	case c.CallTimeout == 0:
		c.CallTimeout = DefaultCallTimeout
	case c.CallTimeout >= SkewAllowance:
		return fmt.Errorf("gcp: Config.CallTimeout %v must be shorter than SkewAllowance (%v)", c.CallTimeout, SkewAllowance)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default().With(slog.String("component", "issuer/gcp"))
	}
	return nil
}
