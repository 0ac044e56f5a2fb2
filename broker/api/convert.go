package api

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/policy"
	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

var leaseStates = map[lease.State]mayflyv1.LeaseState{
	lease.StatePending:     mayflyv1.LeaseState_LEASE_STATE_PENDING,
	lease.StateActive:      mayflyv1.LeaseState_LEASE_STATE_ACTIVE,
	lease.StateRevoking:    mayflyv1.LeaseState_LEASE_STATE_REVOKING,
	lease.StateRevoked:     mayflyv1.LeaseState_LEASE_STATE_REVOKED,
	lease.StateIrrevocable: mayflyv1.LeaseState_LEASE_STATE_IRREVOCABLE,
}

func leaseStateFromProto(s mayflyv1.LeaseState) (lease.State, bool) {
	for k, v := range leaseStates {
		if v == s {
			return k, true
		}
	}
	return "", false
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func leaseProto(l *lease.Lease) *mayflyv1.Lease {
	return &mayflyv1.Lease{
		Id:              l.ID,
		Entitlement:     l.Entitlement,
		Subject:         l.Subject,
		GrantId:         l.GrantID,
		Issuer:          l.Issuer,
		State:           leaseStates[l.State],
		IssuedAt:        ts(l.IssuedAt),
		ExpiresAt:       ts(l.ExpiresAt),
		HardEnd:         ts(l.HardEnd),
		Renewable:       l.Renewable,
		Revocable:       l.Revocable,
		RevocableReason: l.RevocableReason,
		RevokeReason:    string(l.RevokeReason),
		RevokedAt:       ts(l.RevokedAt),
		RevokeAttempts:  int32(l.Attempts),
		LastError:       l.LastError,
	}
}

func credentialProto(c *issuer.Credential) *mayflyv1.Credential {
	out := &mayflyv1.Credential{ExpiresAt: ts(c.ExpiresAt)}
	switch c.Kind {
	case issuer.KindJWT:
		out.Kind = &mayflyv1.Credential_Jwt{Jwt: &mayflyv1.JWTCredential{Token: c.Token, Scopes: c.Scopes}}
	case issuer.KindUsernamePassword:
		out.Kind = &mayflyv1.Credential_UsernamePassword{UsernamePassword: &mayflyv1.UsernamePasswordCredential{Username: c.Username, Password: c.Password}}
	case issuer.KindCertificate:
		out.Kind = &mayflyv1.Credential_Certificate{Certificate: &mayflyv1.CertificateCredential{CertPem: c.CertPEM, KeyPem: c.KeyPEM, ChainPem: c.ChainPEM}}
	case issuer.KindAWS:
		out.Kind = &mayflyv1.Credential_Aws{Aws: &mayflyv1.AWSCredential{AccessKeyId: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}}
	case issuer.KindOAuthToken:
		out.Kind = &mayflyv1.Credential_OauthToken{OauthToken: &mayflyv1.OAuthTokenCredential{Token: c.Token, Scopes: c.Scopes}}
	default:
		out.Kind = &mayflyv1.Credential_Raw{Raw: &mayflyv1.RawCredential{Fields: c.Fields}}
	}
	return out
}

func reasonsProto(rs []policy.Reason) []*mayflyv1.Reason {
	out := make([]*mayflyv1.Reason, 0, len(rs))
	for _, r := range rs {
		out = append(out, &mayflyv1.Reason{Code: r.Code, Message: r.Message})
	}
	return out
}

var outcomes = map[policy.Outcome]mayflyv1.Decision_Outcome{
	policy.Allow:         mayflyv1.Decision_OUTCOME_ALLOW,
	policy.Deny:          mayflyv1.Decision_OUTCOME_DENY,
	policy.NeedsApproval: mayflyv1.Decision_OUTCOME_NEEDS_APPROVAL,
}

func decisionProto(subject, entitlement string, d policy.Decision) *mayflyv1.Decision {
	out := &mayflyv1.Decision{
		Outcome:     outcomes[d.Outcome],
		Entitlement: entitlement,
		Subject:     subject,
		GrantId:     d.GrantID,
		TtlClamped:  d.Clamped,
		Reasons:     reasonsProto(d.Reasons),
	}
	if d.Outcome == policy.Allow {
		out.Ttl = durationpb.New(d.TTL)
		out.ExpiresAt = ts(d.ExpiresAt)
		out.HardEnd = ts(d.HardEnd)
	}
	return out
}
