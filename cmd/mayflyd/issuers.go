package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/awssts"
	"github.com/mayflyhq/mayfly/broker/issuer/gcp"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// issuersConfig configures the backends besides the broker's own JWT
// issuer. A backend left out is not available to the policy.
type issuersConfig struct {
	AWSSTS *struct {
		Region      string `yaml:"region"`
		STSEndpoint string `yaml:"sts_endpoint"`
		IAMEndpoint string `yaml:"iam_endpoint"`
		Audience    string `yaml:"audience"`
	} `yaml:"awssts"`
	GCP *struct {
		WorkloadIdentityProvider string `yaml:"workload_identity_provider"`
		TokenAudience            string `yaml:"token_audience"`
	} `yaml:"gcp"`
}

// jwtSource lets the cloud issuers exchange a JWT from the broker's own
// issuer for cloud credentials (AWS web identity, Google workload identity
// federation): the broker holds no cloud key. The issuer is set once the
// broker is built.
type jwtSource struct{ iss *jwt.Issuer }

func (s *jwtSource) token(ctx context.Context, l *lease.Lease, audience string) (string, error) {
	if s.iss == nil {
		return "", fmt.Errorf("mayflyd: the JWT issuer is not running yet: %w", issuer.ErrUnavailable)
	}
	cred, err := s.iss.Issue(ctx, issuer.Request{Lease: l, Params: jwt.Params{Audience: []string{audience}}})
	if err != nil {
		return "", err
	}
	return cred.Token, nil
}

// cloudIssuers builds the configured cloud backends.
func cloudIssuers(c issuersConfig, src *jwtSource, log *slog.Logger) ([]issuer.Issuer, error) {
	var out []issuer.Issuer
	if a := c.AWSSTS; a != nil {
		iss, err := awssts.New(awssts.Config{
			Region: a.Region, STSEndpoint: a.STSEndpoint, IAMEndpoint: a.IAMEndpoint, Audience: a.Audience,
			TokenSource: src.token, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("config: issuers.awssts: %w", err)
		}
		out = append(out, iss)
	}
	if g := c.GCP; g != nil {
		iss, err := gcp.New(gcp.Config{
			WorkloadIdentityProvider: g.WorkloadIdentityProvider, TokenAudience: g.TokenAudience,
			TokenSource: gcp.TokenSource(src.token), Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("config: issuers.gcp: %w", err)
		}
		out = append(out, iss)
	}
	return out, nil
}
