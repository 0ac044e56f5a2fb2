package sidecar

import (
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"github.com/mayflyhq/mayfly/sdk"
)

// This file turns the SDK's credential back into the API's messages, which
// the SidecarService serves.

func credentialProto(c *sdk.Credential) *mayflyv1.Credential {
	p := &mayflyv1.Credential{ExpiresAt: timeProto(c.ExpiresAt)}
	switch c.Kind {
	case sdk.KindJWT:
		p.Kind = &mayflyv1.Credential_Jwt{Jwt: &mayflyv1.JWTCredential{Token: c.Token, Scopes: c.Scopes}}
	case sdk.KindUsernamePassword:
		p.Kind = &mayflyv1.Credential_UsernamePassword{UsernamePassword: &mayflyv1.UsernamePasswordCredential{Username: c.Username, Password: c.Password}}
	case sdk.KindCertificate:
		p.Kind = &mayflyv1.Credential_Certificate{Certificate: &mayflyv1.CertificateCredential{CertPem: c.CertPEM, KeyPem: c.KeyPEM, ChainPem: c.ChainPEM}}
	case sdk.KindAWS:
		p.Kind = &mayflyv1.Credential_Aws{Aws: &mayflyv1.AWSCredential{AccessKeyId: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}}
	case sdk.KindOAuthToken:
		p.Kind = &mayflyv1.Credential_OauthToken{OauthToken: &mayflyv1.OAuthTokenCredential{Token: c.Token, Scopes: c.Scopes}}
	case sdk.KindRaw:
		p.Kind = &mayflyv1.Credential_Raw{Raw: &mayflyv1.RawCredential{Fields: c.Fields}}
	}
	return p
}

func leaseProto(l sdk.Lease) *mayflyv1.Lease {
	return &mayflyv1.Lease{
		Id:              l.ID,
		Entitlement:     l.Entitlement,
		Subject:         l.Subject,
		GrantId:         l.GrantID,
		Issuer:          l.Issuer,
		State:           mayflyv1.LeaseState(mayflyv1.LeaseState_value["LEASE_STATE_"+strings.ToUpper(l.State)]),
		IssuedAt:        timeProto(l.IssuedAt),
		ExpiresAt:       timeProto(l.ExpiresAt),
		HardEnd:         timeProto(l.HardEnd),
		Renewable:       l.Renewable,
		Revocable:       l.Revocable,
		RevocableReason: l.RevocableReason,
		RevokeReason:    l.RevokeReason,
		RevokedAt:       timeProto(l.RevokedAt),
	}
}

func timeProto(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// credentialFromProto is the inverse of credentialProto and leaseProto.
func credentialFromProto(p *mayflyv1.Credential, l *mayflyv1.Lease) *sdk.Credential {
	c := &sdk.Credential{
		Lease: sdk.Lease{
			ID: l.GetId(), Entitlement: l.GetEntitlement(), Subject: l.GetSubject(), GrantID: l.GetGrantId(),
			Issuer: l.GetIssuer(), IssuedAt: timeFrom(l.GetIssuedAt()), ExpiresAt: timeFrom(l.GetExpiresAt()),
			HardEnd: timeFrom(l.GetHardEnd()), Renewable: l.GetRenewable(), Revocable: l.GetRevocable(),
			RevocableReason: l.GetRevocableReason(), RevokeReason: l.GetRevokeReason(), RevokedAt: timeFrom(l.GetRevokedAt()),
		},
		ExpiresAt: timeFrom(p.GetExpiresAt()),
	}
	if s := l.GetState(); s != mayflyv1.LeaseState_LEASE_STATE_UNSPECIFIED {
		c.Lease.State = strings.ToLower(strings.TrimPrefix(s.String(), "LEASE_STATE_"))
	}
	switch k := p.GetKind().(type) {
	case *mayflyv1.Credential_Jwt:
		c.Kind, c.Token, c.Scopes = sdk.KindJWT, k.Jwt.GetToken(), k.Jwt.GetScopes()
	case *mayflyv1.Credential_UsernamePassword:
		c.Kind, c.Username, c.Password = sdk.KindUsernamePassword, k.UsernamePassword.GetUsername(), k.UsernamePassword.GetPassword()
	case *mayflyv1.Credential_Certificate:
		c.Kind, c.CertPEM, c.KeyPEM, c.ChainPEM = sdk.KindCertificate, k.Certificate.GetCertPem(), k.Certificate.GetKeyPem(), k.Certificate.GetChainPem()
	case *mayflyv1.Credential_Aws:
		c.Kind, c.AccessKeyID, c.SecretAccessKey, c.SessionToken = sdk.KindAWS, k.Aws.GetAccessKeyId(), k.Aws.GetSecretAccessKey(), k.Aws.GetSessionToken()
	case *mayflyv1.Credential_OauthToken:
		c.Kind, c.Token, c.Scopes = sdk.KindOAuthToken, k.OauthToken.GetToken(), k.OauthToken.GetScopes()
	case *mayflyv1.Credential_Raw:
		c.Kind, c.Fields = sdk.KindRaw, k.Raw.GetFields()
	}
	return c
}

func timeFrom(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}
