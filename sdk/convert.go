package sdk

import (
	"fmt"
	"strings"
	"time"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// This file holds every conversion between the generated proto types and the
// SDK's own types, so the rest of the package never touches a proto getter.

// leaseFromProto converts a lease; a nil lease becomes the zero Lease.
func leaseFromProto(p *mayflyv1.Lease) Lease {
	if p == nil {
		return Lease{}
	}
	return Lease{
		ID:              p.GetId(),
		Entitlement:     p.GetEntitlement(),
		Subject:         p.GetSubject(),
		GrantID:         p.GetGrantId(),
		Issuer:          p.GetIssuer(),
		State:           stateFromProto(p.GetState()),
		IssuedAt:        timeFromProto(p.GetIssuedAt()),
		ExpiresAt:       timeFromProto(p.GetExpiresAt()),
		HardEnd:         timeFromProto(p.GetHardEnd()),
		Renewable:       p.GetRenewable(),
		Revocable:       p.GetRevocable(),
		RevocableReason: p.GetRevocableReason(),
		RevokeReason:    p.GetRevokeReason(),
		RevokedAt:       timeFromProto(p.GetRevokedAt()),
	}
}

// credentialFromProto converts a credential and the lease it was issued
// under. A credential without a native expiry takes the lease's.
func credentialFromProto(lease *mayflyv1.Lease, p *mayflyv1.Credential) (*Credential, error) {
	if p == nil {
		return nil, fmt.Errorf("sdk: broker returned no credential")
	}
	c := &Credential{
		Lease:     leaseFromProto(lease),
		ExpiresAt: timeFromProto(p.GetExpiresAt()),
	}
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = c.Lease.ExpiresAt
	}
	switch k := p.GetKind().(type) {
	case *mayflyv1.Credential_Jwt:
		c.Kind = KindJWT
		c.Token = k.Jwt.GetToken()
		c.Scopes = k.Jwt.GetScopes()
	case *mayflyv1.Credential_UsernamePassword:
		c.Kind = KindUsernamePassword
		c.Username = k.UsernamePassword.GetUsername()
		c.Password = k.UsernamePassword.GetPassword()
	case *mayflyv1.Credential_Certificate:
		c.Kind = KindCertificate
		c.CertPEM = k.Certificate.GetCertPem()
		c.KeyPEM = k.Certificate.GetKeyPem()
		c.ChainPEM = k.Certificate.GetChainPem()
	case *mayflyv1.Credential_Aws:
		c.Kind = KindAWS
		c.AccessKeyID = k.Aws.GetAccessKeyId()
		c.SecretAccessKey = k.Aws.GetSecretAccessKey()
		c.SessionToken = k.Aws.GetSessionToken()
	case *mayflyv1.Credential_OauthToken:
		c.Kind = KindOAuthToken
		c.Token = k.OauthToken.GetToken()
		c.Scopes = k.OauthToken.GetScopes()
	case *mayflyv1.Credential_Raw:
		c.Kind = KindRaw
		c.Fields = k.Raw.GetFields()
	default:
		return nil, fmt.Errorf("sdk: broker returned a credential of unknown kind %T", k)
	}
	return c, nil
}

// stateFromProto maps LEASE_STATE_ACTIVE to "active" and so on; an
// unspecified state becomes "".
func stateFromProto(s mayflyv1.LeaseState) string {
	if s == mayflyv1.LeaseState_LEASE_STATE_UNSPECIFIED {
		return ""
	}
	name, ok := mayflyv1.LeaseState_name[int32(s)]
	if !ok {
		return fmt.Sprintf("unknown(%d)", int32(s))
	}
	return strings.ToLower(strings.TrimPrefix(name, "LEASE_STATE_"))
}

// stateToProto is the inverse of stateFromProto.
func stateToProto(s string) (mayflyv1.LeaseState, error) {
	v, ok := mayflyv1.LeaseState_value["LEASE_STATE_"+strings.ToUpper(s)]
	if !ok || v == int32(mayflyv1.LeaseState_LEASE_STATE_UNSPECIFIED) {
		return 0, fmt.Errorf("sdk: unknown lease state %q", s)
	}
	return mayflyv1.LeaseState(v), nil
}

// timeFromProto maps an unset timestamp to the zero time.
func timeFromProto(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}
