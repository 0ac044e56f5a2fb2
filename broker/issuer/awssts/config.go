package awssts

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// DefaultAudience is the aud of web identity tokens when Config.Audience is
// empty: the client id AWS suggests for an IAM OIDC provider.
const DefaultAudience = "sts.amazonaws.com"

// DefaultRegion is the STS region when Config.Region is empty.
const DefaultRegion = "us-east-1"

// Defaults for retries and timeouts.
const (
	DefaultMaxAttempts = 3
	DefaultMaxBackoff  = 2 * time.Second
	DefaultCallTimeout = 15 * time.Second
)

// TokenSource mints the web identity token for a lease: a JWT from the
// broker's own issuer, with iss its issuer URL (the IAM OIDC provider's
// URL), sub the lease subject and aud audience (a client id of that
// provider). The composition root wires it to jwt.Issuer.Issue. l is a
// copy of the lease whose IssuedAt is now and whose ExpiresAt is at most
// ExchangeTokenLifetime later (never after the lease): the token's iat and
// exp, since STS only needs it while it verifies it. A TokenSource able to
// add claims should add WebIdentityClaims(l). An error
// wrapping issuer.ErrRejected is passed on as a rejection, any other as
// ErrUnavailable.
type TokenSource func(ctx context.Context, l *lease.Lease, audience string) (string, error)

// Config configures New.
type Config struct {
	// Region is the STS region whose endpoint is called
	// (sts.<region>.amazonaws.com) and, for IAM, the partition. An
	// entitlement may name another with region. DefaultRegion when empty.
	Region string

	// STSEndpoint replaces the STS endpoint the SDK resolves (a VPC
	// endpoint, a FIPS endpoint, a test server): an absolute http(s) URL.
	STSEndpoint string

	// IAMEndpoint replaces the IAM endpoint KillSwitch calls.
	IAMEndpoint string

	// TokenSource mints web identity tokens. Required for entitlements in
	// web_identity mode (the default): without it DecodeParams refuses
	// them.
	TokenSource TokenSource

	// Audience is the aud of web identity tokens: one of the client ids of
	// the IAM OIDC provider. DefaultAudience when empty.
	Audience string

	// Credentials sign AssumeRole (assume_role mode) and the IAM calls of
	// KillSwitch. Nil: the SDK's default chain (environment, shared
	// config, AWS_WEB_IDENTITY_TOKEN_FILE, ECS, EC2 instance role), loaded
	// at first use. Web identity issuance never uses them.
	Credentials aws.CredentialsProvider

	// HTTPClient sends every request; the SDK's default when nil.
	HTTPClient *http.Client

	// MaxAttempts bounds the attempts of one call, the first included:
	// throttling, 5xx answers and network errors are retried up to it.
	// DefaultMaxAttempts when zero; 1 disables retries.
	MaxAttempts int

	// MaxBackoff caps the jittered wait between attempts. DefaultMaxBackoff
	// when zero.
	MaxBackoff time.Duration

	// CallTimeout bounds one STS or IAM call, retries included. It must be
	// shorter than SkewAllowance, which is what keeps a session that STS
	// starts late from outliving its lease. DefaultCallTimeout when zero.
	CallTimeout time.Duration

	// Clock is the time source for session durations; time.Now when nil.
	Clock func() time.Time

	// Logger receives STS and IAM refusals (codes, request ids, AWS's
	// message with anything key-like removed), never a credential or
	// token; slog.Default() with component=issuer/awssts when nil.
	Logger *slog.Logger
}

// validate checks c and fills in defaults; errors name the field.
func (c *Config) validate() error {
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if !regionRE.MatchString(c.Region) {
		return fmt.Errorf("awssts: Config.Region %q is not an AWS region name", c.Region)
	}
	for name, v := range map[string]string{"STSEndpoint": c.STSEndpoint, "IAMEndpoint": c.IAMEndpoint} {
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return fmt.Errorf("awssts: Config.%s %q must be an absolute http(s) URL", name, v)
		}
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	switch {
	case c.MaxAttempts < 0:
		return fmt.Errorf("awssts: Config.MaxAttempts %d must not be negative", c.MaxAttempts)
	case c.MaxAttempts == 0:
		c.MaxAttempts = DefaultMaxAttempts
	}
	switch {
	case c.MaxBackoff < 0:
		return fmt.Errorf("awssts: Config.MaxBackoff %v must not be negative", c.MaxBackoff)
	case c.MaxBackoff == 0:
		c.MaxBackoff = DefaultMaxBackoff
	}
	switch {
	case c.CallTimeout < 0:
		return fmt.Errorf("awssts: Config.CallTimeout %v must not be negative", c.CallTimeout)
	case c.CallTimeout == 0:
		c.CallTimeout = DefaultCallTimeout
	case c.CallTimeout >= SkewAllowance:
		return fmt.Errorf("awssts: Config.CallTimeout %v must be shorter than SkewAllowance (%v)", c.CallTimeout, SkewAllowance)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default().With(slog.String("component", "issuer/awssts"))
	}
	return nil
}
