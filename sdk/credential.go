package sdk

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Lease states, as found in Lease.State. A lease moves
// pending → active → revoking → revoked | irrevocable.
const (
	// StatePending: written before the backend was called; issuance has not
	// completed.
	StatePending = "pending"
	// StateActive: the credential was handed out and has not ended.
	StateActive = "active"
	// StateRevoking: the broker is ending the credential now.
	StateRevoking = "revoking"
	// StateRevoked: the backend confirmed the credential is gone. Terminal.
	StateRevoked = "revoked"
	// StateIrrevocable: every revocation attempt failed and operators were
	// alerted. Terminal.
	StateIrrevocable = "irrevocable"
)

// Credential kinds, as found in Credential.Kind. Each names the fields of
// Credential that are set.
const (
	// KindJWT: Token (a JWT signed by the broker) and Scopes.
	KindJWT = "jwt"
	// KindUsernamePassword: Username and Password.
	KindUsernamePassword = "username_password"
	// KindCertificate: CertPEM, KeyPEM and ChainPEM.
	KindCertificate = "certificate"
	// KindAWS: AccessKeyID, SecretAccessKey and SessionToken.
	KindAWS = "aws"
	// KindOAuthToken: Token (an OAuth 2.0 access token) and Scopes.
	KindOAuthToken = "oauth_token"
	// KindRaw: Fields.
	KindRaw = "raw"
)

// redacted replaces a secret in String and LogValue output.
const redacted = "REDACTED"

// Lease is the broker's record that a credential exists and when it ends.
// It holds no secret.
type Lease struct {
	// ID identifies the lease in Renew, Revoke and Lease. For JWT
	// credentials it is also the token's jti.
	ID string
	// Entitlement the credential was issued for.
	Entitlement string
	// Subject the credential was issued to (spiffe://… or user:…).
	Subject string
	// GrantID is the grant the issuance rests on.
	GrantID string
	// Issuer is the backend that minted the credential (jwt, vault, awssts, …).
	Issuer string
	// State is one of the State* constants.
	State string
	// IssuedAt is when the lease was created.
	IssuedAt time.Time
	// ExpiresAt is when the credential stops being valid unless renewed.
	ExpiresAt time.Time
	// HardEnd is the latest expiry any renewal can reach; zero if the broker
	// did not say.
	HardEnd time.Time
	// Renewable says whether Renew may extend the lease.
	Renewable bool
	// Revocable is false when the backend cannot end the credential before its
	// native expiry (a bearer JWT, an STS session); RevocableReason says why
	// and what the broker does instead.
	Revocable bool
	// RevocableReason explains a lease that is not revocable.
	RevocableReason string
	// RevokeReason says why the lease ended or is ending (expired, explicit,
	// kill_switch, grant_ended, …); empty while it runs.
	RevokeReason string
	// RevokedAt is when the lease reached a terminal state; zero before.
	RevokedAt time.Time
}

// Credential is a secret issued by the broker together with its lease.
//
// Only the fields of its Kind are set. The secret fields are plain strings so
// they can be handed to a database driver or an AWS config, but String,
// GoString and LogValue redact them, so printing or logging a Credential
// never leaks a secret. Serialising it by other means (encoding/json, %#v of
// a struct field by reflection) does not redact.
type Credential struct {
	// Lease is the lease that guarantees the credential ends.
	Lease Lease
	// Kind is one of the Kind* constants.
	Kind string

	// Token is a JWT (KindJWT) or an OAuth 2.0 access token (KindOAuthToken).
	Token string
	// Scopes the token carries.
	Scopes []string

	// Username of a KindUsernamePassword credential; not secret.
	Username string
	// Password of a KindUsernamePassword credential.
	Password string

	// CertPEM is the leaf certificate of a KindCertificate credential.
	CertPEM string
	// KeyPEM is its private key.
	KeyPEM string
	// ChainPEM holds the intermediate certificates.
	ChainPEM string

	// AccessKeyID of a KindAWS credential.
	AccessKeyID string
	// SecretAccessKey of a KindAWS credential.
	SecretAccessKey string
	// SessionToken of a KindAWS credential.
	SessionToken string

	// Fields of a KindRaw credential; every value is treated as secret.
	Fields map[string]string

	// ExpiresAt is when the credential stops working: its native expiry at
	// the backend, or the lease's expiry when the broker gave none. After a
	// renewal that kept the credential value, it is the lease's new expiry.
	ExpiresAt time.Time
}

// validUntil is the instant the credential must no longer be used: the
// earlier of its own expiry and its lease's.
func (c *Credential) validUntil() time.Time {
	switch {
	case c.ExpiresAt.IsZero():
		return c.Lease.ExpiresAt
	case c.Lease.ExpiresAt.IsZero() || c.ExpiresAt.Before(c.Lease.ExpiresAt):
		return c.ExpiresAt
	default:
		return c.Lease.ExpiresAt
	}
}

// clone returns a deep copy, so a source can hand out values that later
// renewals never mutate.
func (c *Credential) clone() *Credential {
	if c == nil {
		return nil
	}
	cp := *c
	cp.Scopes = slices.Clone(c.Scopes)
	if c.Fields != nil {
		cp.Fields = make(map[string]string, len(c.Fields))
		for k, v := range c.Fields {
			cp.Fields[k] = v
		}
	}
	return &cp
}

// secret returns the redaction marker for a set secret and "" for an unset one.
func secret(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// publicAttrs lists what may be shown about a credential: everything except
// the secrets, which appear only as REDACTED.
func (c Credential) publicAttrs() []slog.Attr {
	attrs := []slog.Attr{
		slog.String("kind", c.Kind),
		slog.String("lease_id", c.Lease.ID),
		slog.String("entitlement", c.Lease.Entitlement),
		slog.Time("expires_at", c.ExpiresAt),
	}
	add := func(key, value string) {
		if value != "" {
			attrs = append(attrs, slog.String(key, value))
		}
	}
	add("token", secret(c.Token))
	if len(c.Scopes) > 0 {
		attrs = append(attrs, slog.String("scopes", strings.Join(c.Scopes, " ")))
	}
	add("username", c.Username)
	add("password", secret(c.Password))
	if c.CertPEM != "" {
		add("cert_pem", fmt.Sprintf("(%d bytes)", len(c.CertPEM)))
	}
	add("key_pem", secret(c.KeyPEM))
	if c.ChainPEM != "" {
		add("chain_pem", fmt.Sprintf("(%d bytes)", len(c.ChainPEM)))
	}
	add("access_key_id", secret(c.AccessKeyID))
	add("secret_access_key", secret(c.SecretAccessKey))
	add("session_token", secret(c.SessionToken))
	if len(c.Fields) > 0 {
		keys := make([]string, 0, len(c.Fields))
		for k := range c.Fields {
			keys = append(keys, k+"="+redacted)
		}
		slices.Sort(keys)
		attrs = append(attrs, slog.String("fields", strings.Join(keys, " ")))
	}
	return attrs
}

// String describes the credential with every secret replaced by REDACTED.
func (c Credential) String() string {
	var b strings.Builder
	b.WriteString("sdk.Credential{")
	for i, a := range c.publicAttrs() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a.Key)
		b.WriteByte('=')
		if a.Value.Kind() == slog.KindTime {
			b.WriteString(a.Value.Time().UTC().Format(time.RFC3339Nano))
		} else {
			b.WriteString(a.Value.String())
		}
	}
	b.WriteByte('}')
	return b.String()
}

// GoString makes %#v redact like String.
func (c Credential) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: the credential logs as a group of its
// public attributes, with every secret replaced by REDACTED.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(c.publicAttrs()...)
}

// LogValue implements slog.LogValuer for a lease (it holds no secret).
func (l Lease) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", l.ID),
		slog.String("entitlement", l.Entitlement),
		slog.String("state", l.State),
		slog.Time("expires_at", l.ExpiresAt),
	)
}
