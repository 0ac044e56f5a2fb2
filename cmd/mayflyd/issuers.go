package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/awssts"
	"github.com/mayflyhq/mayfly/broker/issuer/gcp"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/issuer/vault"
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
	Vault *struct {
		Address        string   `yaml:"address"`
		CAFile         string   `yaml:"ca_file"`
		ServerName     string   `yaml:"server_name"`
		Namespace      string   `yaml:"namespace"`
		TokenRole      string   `yaml:"token_role"`
		RequestTimeout duration `yaml:"request_timeout"`
		ReplayWindow   duration `yaml:"replay_window"`
		Auth           struct {
			TokenFile string `yaml:"token_file"`
			AppRole   *struct {
				RoleID       string `yaml:"role_id"`
				SecretIDFile string `yaml:"secret_id_file"`
				Path         string `yaml:"path"`
			} `yaml:"approle"`
		} `yaml:"auth"`
	} `yaml:"vault"`
}

// jwtSource lets the cloud issuers exchange a JWT from the broker's own
// issuer for cloud credentials (AWS web identity, Google workload identity
// federation): the broker holds no cloud key. The issuer is set once the
// broker is built.
type jwtSource struct{ iss *jwt.Issuer }

func (s *jwtSource) token(ctx context.Context, l *lease.Lease, audience string) (string, error) {
	return s.tokenWith(ctx, l, audience, nil)
}

// awsToken carries the caller as the session's source identity and the
// lease, entitlement and subject as session tags, which AWS reads from
// the web identity token's claims; CloudTrail then shows who held it.
func (s *jwtSource) awsToken(ctx context.Context, l *lease.Lease, audience string) (string, error) {
	return s.tokenWith(ctx, l, audience, awssts.WebIdentityClaims(l))
}

func (s *jwtSource) tokenWith(ctx context.Context, l *lease.Lease, audience string, extra map[string]any) (string, error) {
	if s.iss == nil {
		return "", fmt.Errorf("mayflyd: the JWT issuer is not running yet: %w", issuer.ErrUnavailable)
	}
	cred, err := s.iss.Issue(ctx, issuer.Request{Lease: l, Params: jwt.Params{Audience: []string{audience}, Extra: extra}})
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
			TokenSource: src.awsToken, Logger: log,
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
	if v := c.Vault; v != nil {
		vc := vault.Config{
			Address: v.Address, Namespace: v.Namespace, TokenRole: v.TokenRole,
			TLS:            vault.TLSConfig{CAFile: v.CAFile, ServerName: v.ServerName},
			RequestTimeout: time.Duration(v.RequestTimeout), ReplayWindow: time.Duration(v.ReplayWindow),
			Logger: log,
		}
		switch {
		case v.Auth.TokenFile != "" && v.Auth.AppRole != nil:
			return nil, fmt.Errorf("config: issuers.vault.auth: set token_file or approle, not both")
		case v.Auth.TokenFile != "":
			b, err := os.ReadFile(v.Auth.TokenFile)
			if err != nil {
				return nil, fmt.Errorf("config: issuers.vault.auth.token_file: %w", err)
			}
			vc.Auth.Token = strings.TrimSpace(string(b))
		case v.Auth.AppRole != nil:
			vc.Auth.AppRole = &vault.AppRole{RoleID: v.Auth.AppRole.RoleID, SecretIDFile: v.Auth.AppRole.SecretIDFile, Path: v.Auth.AppRole.Path}
		default:
			return nil, fmt.Errorf("config: issuers.vault.auth: set token_file (a periodic token) or approle")
		}
		iss, err := vault.New(vc)
		if err != nil {
			return nil, fmt.Errorf("config: issuers.vault: %w", err)
		}
		out = append(out, iss)
	}
	return out, nil
}
