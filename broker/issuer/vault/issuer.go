package vault

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Name is the issuer name entitlements use ("issuer: vault").
const Name = "vault"

// STSReason is what Revocability says for an AWS STS path (MOUNT/sts/ROLE).
const STSReason = "AWS STS credentials cannot be ended before they expire: Vault's revocation of them is a no-op at AWS; " +
	"the broker caps their lifetime at the lease and revokes the Vault lease on time"

const (
	// minTokenTTL is the shortest per-lease token Issue creates (unless
	// the lease itself ends sooner), so that a pending deadline a moment
	// away does not expire the token before the secret is read.
	minTokenTTL = 5 * time.Second
	// ttlSlack is how far a Vault TTL may differ from the one asked for
	// before Issue corrects it (Vault works in whole seconds).
	ttlSlack = 2 * time.Second
	// cleanupTimeout bounds the clean-up after a failed Issue.
	cleanupTimeout = 10 * time.Second
)

// Issuer brokers leased secrets from HashiCorp Vault. Create it with New;
// it is safe for concurrent use.
type Issuer struct {
	cfg    Config
	log    *slog.Logger
	http   *http.Client
	replay replayCache

	sess    atomic.Pointer[session]
	loginMu sync.Mutex

	// tokens revokes per-lease tokens whose secrets are revoked.
	tokens tokenSweeper
}

var _ issuer.Issuer = (*Issuer)(nil)

// New validates cfg and returns an Issuer. It does not contact Vault:
// the broker starts while Vault is down, and Issue logs in when it first
// needs to (Run keeps the token alive).
func New(cfg Config) (*Issuer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hc, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	i := &Issuer{cfg: cfg, log: cfg.Logger, http: hc}
	if cfg.Auth.Token != "" {
		c, err := i.newClient(cfg.Auth.Token)
		if err != nil {
			return nil, err
		}
		i.sess.Store(&session{client: c})
	}
	return i, nil
}

// Name returns "vault".
func (i *Issuer) Name() string { return Name }

// Revocability is true: revoking the per-lease token and the Vault lease
// ends the credential at its backend (a database role is dropped, a
// certificate put on the CRL). The exception is an AWS STS path
// (MOUNT/sts/ROLE): see STSReason.
func (i *Issuer) Revocability(params any) (bool, string) {
	if p, err := paramsOf(params); err == nil && p.Path != "" {
		if segs := strings.Split(p.Path, "/"); len(segs) >= 3 && segs[1] == "sts" {
			return false, STSReason
		}
	}
	return true, ""
}

// Issue mints the credential of the pending lease:
//
//  1. It creates a per-lease child token (auth/token/create, or
//     auth/token/create/<Config.TokenRole>) with the entitlement's
//     token_policies, metadata lease_id, entitlement and subject, a TTL
//     that ends at the lease's pending deadline (or its expiry, if that
//     comes first) and an explicit max TTL at the lease's hard end.
//  2. It reads the secret with that token, so the secret's Vault lease
//     belongs to the token: revoking the token revokes the secret, and if
//     the broker never comes back Vault ends both at the token's TTL.
//  3. It binds ACCESSOR|LEASE_ID (see Ref) to the lease before the
//     credential leaves the broker.
//  4. It extends the token to the lease's expiry and renews the secret's
//     Vault lease to end then too (where the engine allows), so that the
//     secret's own TTL does not outlive the lease.
//
// On any failure it revokes what it created and hands out nothing. A
// secret without a Vault lease is refused (ErrNoLease). A retried Issue
// for the same lease, within Config.ReplayWindow and on this broker,
// returns the same credential; otherwise a lease that is already bound is
// refused with "cannot replay; request a new lease".
func (i *Issuer) Issue(ctx context.Context, req issuer.Request) (*issuer.Credential, error) {
	l := req.Lease
	if l == nil {
		return nil, errors.New("vault: issue: no lease")
	}
	p, err := paramsOf(req.Params)
	if err != nil {
		return nil, i.errorf(l, "%w: %w", err, issuer.ErrRejected)
	}
	if err := ctx.Err(); err != nil {
		return nil, i.errorf(l, "%w: %w", issuer.ErrUnavailable, err)
	}
	for {
		cred, wait := i.replay.claim(l.ID, i.cfg.Clock())
		if cred != nil {
			return cred, nil
		}
		if wait == nil {
			break // ours to mint
		}
		select {
		case <-wait: // the other Issue finished; look again
		case <-ctx.Done():
			return nil, i.errorf(l, "waiting for a concurrent issuance of the same lease: %w: %w", issuer.ErrUnavailable, ctx.Err())
		}
	}
	var cred *issuer.Credential
	defer func() {
		until := minTime(i.cfg.Clock().Add(i.cfg.ReplayWindow), l.ExpiresAt)
		i.replay.finish(l.ID, cred, until)
	}()
	if l.ExternalRef != "" {
		return nil, i.errorf(l, "%w", errNoReplay)
	}
	if req.Bind == nil {
		return nil, i.errorf(l, "issue: the request has no Bind")
	}
	cred, err = i.mint(ctx, req, p)
	return cred, err
}

// mint does the work of Issue for a lease not yet bound.
func (i *Issuer) mint(ctx context.Context, req issuer.Request, p Params) (*issuer.Credential, error) {
	l := req.Lease
	now := i.cfg.Clock()
	if l.ExpiresAt.Sub(now) < time.Second {
		return nil, i.errorf(l, "the lease expires at %s, before a credential could be minted: %w",
			l.ExpiresAt.UTC().Format(time.RFC3339), issuer.ErrRejected)
	}
	// The token lives until the lease's expiry (its explicit max TTL is
	// the hard end). Its accessor is bound to the pending lease before any
	// secret exists, so from the first secret on, the revoker can end it;
	// a broker that never comes back still has Vault end it on time.
	tokenTTL := max(l.ExpiresAt.Sub(now), min(minTokenTTL, l.ExpiresAt.Sub(now)))
	hardEnd := l.HardEnd
	if hardEnd.Before(l.ExpiresAt) {
		hardEnd = l.ExpiresAt
	}
	s, err := i.session(ctx)
	if err != nil {
		return nil, i.errorf(l, "%w", err)
	}
	renewable := true
	treq := &vaultapi.TokenCreateRequest{
		Policies:       p.TokenPolicies,
		Metadata:       map[string]string{"lease_id": l.ID, "entitlement": l.Entitlement, "subject": l.Subject},
		TTL:            secs(tokenTTL),
		ExplicitMaxTTL: secs(hardEnd.Sub(now)),
		DisplayName:    "mayfly",
		Renewable:      &renewable,
		Type:           "service",
	}
	var tok *vaultapi.Secret
	if i.cfg.TokenRole != "" {
		tok, err = s.client.Auth().Token().CreateWithRoleWithContext(ctx, treq, i.cfg.TokenRole)
	} else {
		tok, err = s.client.Auth().Token().CreateWithContext(ctx, treq)
	}
	if err != nil {
		return nil, i.errorf(l, "%w", classify("create the per-lease token", err, i.createHint(err, p)))
	}
	if tok == nil || tok.Auth == nil || tok.Auth.ClientToken == "" || tok.Auth.Accessor == "" {
		return nil, i.errorf(l, "create the per-lease token: Vault returned no token: %w", issuer.ErrUnavailable)
	}
	child, err := i.newClient(tok.Auth.ClientToken)
	if err != nil {
		return nil, i.errorf(l, "%w", err)
	}
	ref := Ref{Accessor: tok.Auth.Accessor}
	ok := false
	defer func() {
		if !ok {
			i.cleanup(l, s.client, child, ref)
		}
	}()
	// Bind before reading: the lease records the accessor before the
	// secret exists, so no secret is ever out of the revoker's reach.
	if err := req.Bind(ctx, ref.String()); err != nil {
		return nil, i.errorf(l, "record the Vault token in the lease: %w", err)
	}

	readAt := i.cfg.Clock()
	sec, err := i.read(ctx, child, p, l)
	if err != nil {
		return nil, i.errorf(l, "%w", err)
	}
	if sec.LeaseID == "" {
		if p.PKI != nil {
			i.revokeUnleasedCert(child, l, p, sec)
			return nil, i.errorf(l, "%s %w (set generate_lease=true on the PKI role)", p.what(), ErrNoLease)
		}
		return nil, i.errorf(l, "%s %w", p.what(), ErrNoLease)
	}
	ref.LeaseID = sec.LeaseID
	cred, err := credentialFrom(p, sec)
	if err != nil {
		return nil, i.errorf(l, "%s: %w", p.what(), err)
	}
	tokenEnd := now.Add(time.Duration(tok.Auth.LeaseDuration) * time.Second)
	if tokenEnd.Before(l.ExpiresAt.Add(-ttlSlack)) {
		i.log.Warn("Vault capped the per-lease token before the lease's expiry; the credential ends earlier",
			"lease", l.ID, "entitlement", l.Entitlement, "token_ends", tokenEnd, "lease_expires", l.ExpiresAt)
	}

	// The secret's own Vault lease should end with the lease: Vault's
	// engines pick their default TTL (database: the role's default_ttl).
	// A longer one would end with the token anyway, but the backend's own
	// expiry (database: VALID UNTIL) then bounds the credential even
	// without Vault; a shorter one would end the credential early. A role
	// whose default TTL is the entitlement's ttl saves this call.
	secretEnd := readAt.Add(time.Duration(sec.LeaseDuration) * time.Second)
	if now := i.cfg.Clock(); sec.Renewable && l.ExpiresAt.Sub(now) >= time.Second &&
		(secretEnd.After(l.ExpiresAt.Add(ttlSlack)) || secretEnd.Before(l.ExpiresAt.Add(-ttlSlack))) {
		r, err := child.Sys().RenewWithContext(ctx, sec.LeaseID, int(l.ExpiresAt.Sub(now)/time.Second))
		switch {
		case err != nil:
			// Not fatal: the token's TTL still ends the secret on time.
			i.log.Warn("could not align the Vault lease with the lease's expiry; the per-lease token still ends it with the lease",
				"lease", l.ID, "entitlement", l.Entitlement, "error", classify("renew the Vault lease", err, ""))
		case r != nil:
			secretEnd = now.Add(time.Duration(r.LeaseDuration) * time.Second)
		}
	}
	cred.ExternalRef = ref.String()
	cred.ExpiresAt = minTime(cred.ExpiresAt, secretEnd, tokenEnd, l.ExpiresAt)
	ok = true
	return cred, nil
}

// read fetches the secret with the per-lease token.
func (i *Issuer) read(ctx context.Context, child *vaultapi.Client, p Params, l *lease.Lease) (*vaultapi.Secret, error) {
	var (
		sec *vaultapi.Secret
		err error
	)
	if pk := p.PKI; pk != nil {
		data := map[string]any{
			"common_name": expand(pk.CommonName, l),
			"ttl":         secs(l.ExpiresAt.Sub(i.cfg.Clock())),
		}
		if len(pk.AltNames) > 0 {
			data["alt_names"] = strings.Join(expandAll(pk.AltNames, l), ",")
		}
		if len(pk.URISANs) > 0 {
			data["uri_sans"] = strings.Join(expandAll(pk.URISANs, l), ",")
		}
		sec, err = child.Logical().WriteWithContext(ctx, p.what(), data)
	} else {
		sec, err = child.Logical().ReadWithContext(ctx, p.Path)
	}
	if err != nil {
		return nil, classify("read "+p.what(), err, i.readHint(err, p))
	}
	if sec == nil {
		return nil, fmt.Errorf("read %s: nothing there (HTTP 404): check the mount and role name: %w", p.what(), issuer.ErrRejected)
	}
	return sec, nil
}

// createHint says what to check when Vault refuses the per-lease token.
func (i *Issuer) createHint(err error, p Params) string {
	switch {
	case statusOf(err) == http.StatusForbidden && i.cfg.TokenRole != "":
		return fmt.Sprintf("the broker's token lacks permission for auth/token/create/%s", i.cfg.TokenRole)
	case statusOf(err) == http.StatusForbidden:
		return "the broker's token lacks permission for auth/token/create"
	case i.cfg.TokenRole != "":
		return fmt.Sprintf("token role %q does not exist or does not allow token_policies %v", i.cfg.TokenRole, p.TokenPolicies)
	}
	return fmt.Sprintf("the broker's token may not grant token_policies %v (a token may only grant its own policies; use a token role)", p.TokenPolicies)
}

// readHint says what to check when Vault refuses to hand out the secret.
func (i *Issuer) readHint(err error, p Params) string {
	if statusOf(err) == http.StatusForbidden {
		return fmt.Sprintf("token_policies %v do not allow %s on %s", p.TokenPolicies, map[bool]string{true: "update", false: "read"}[p.PKI != nil], p.what())
	}
	if p.PKI != nil {
		return fmt.Sprintf("PKI role not found, or it refused the names, at %s", p.what())
	}
	return "role not found or the broker's token lacks permission for " + p.Path
}

// credentialFrom shapes the secret's data into a credential. Its
// ExpiresAt is the certificate's NotAfter for PKI, else zero (set by the
// caller).
func credentialFrom(p Params, sec *vaultapi.Secret) (*issuer.Credential, error) {
	str := func(k string) string { s, _ := sec.Data[k].(string); return s }
	if len(sec.Data) == 0 {
		return nil, fmt.Errorf("the secret has no data: %w", issuer.ErrRejected)
	}
	if p.PKI != nil {
		c := &issuer.Credential{Kind: issuer.KindCertificate, CertPEM: str("certificate"), KeyPEM: str("private_key")}
		if chain, ok := sec.Data["ca_chain"].([]any); ok && len(chain) > 0 {
			var parts []string
			for _, e := range chain {
				if s, ok := e.(string); ok {
					parts = append(parts, strings.TrimSpace(s))
				}
			}
			c.ChainPEM = strings.Join(parts, "\n") + "\n"
		} else {
			c.ChainPEM = str("issuing_ca")
		}
		if c.CertPEM == "" || c.KeyPEM == "" {
			return nil, fmt.Errorf("PKI returned no certificate or private key: %w", issuer.ErrRejected)
		}
		block, _ := pem.Decode([]byte(c.CertPEM))
		if block == nil {
			return nil, fmt.Errorf("PKI returned a certificate that is not PEM: %w", issuer.ErrRejected)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PKI returned a certificate that does not parse: %w", issuer.ErrRejected)
		}
		c.ExpiresAt = cert.NotAfter
		return c, nil
	}
	switch {
	case str("username") != "" && str("password") != "":
		return &issuer.Credential{Kind: issuer.KindUsernamePassword, Username: str("username"), Password: str("password")}, nil
	case str("access_key") != "" && str("secret_key") != "":
		tok := str("security_token")
		if tok == "" {
			tok = str("session_token")
		}
		return &issuer.Credential{Kind: issuer.KindAWS, AccessKeyID: str("access_key"), SecretAccessKey: str("secret_key"), SessionToken: tok}, nil
	}
	fields := make(map[string]string, len(sec.Data))
	for k, v := range sec.Data {
		switch x := v.(type) {
		case string:
			fields[k] = x
		case json.Number:
			fields[k] = x.String()
		case bool:
			fields[k] = strconv.FormatBool(x)
		case nil:
			fields[k] = ""
		default:
			b, err := json.Marshal(x)
			if err != nil {
				return nil, fmt.Errorf("field %q does not encode: %w", k, issuer.ErrRejected)
			}
			fields[k] = string(b)
		}
	}
	return &issuer.Credential{Kind: issuer.KindRaw, Fields: fields}, nil
}

// cleanup revokes what a failed Issue created: the Vault lease (at once,
// synchronously) and the per-lease token. If Vault cannot be reached,
// the token still ends at its TTL (the pending deadline), and with it the
// secret.
func (i *Issuer) cleanup(l *lease.Lease, broker, child *vaultapi.Client, ref Ref) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if ref.LeaseID != "" {
		if _, err := broker.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": ref.LeaseID, "sync": true}); err != nil {
			i.log.Warn("could not revoke the Vault lease of a failed issuance; its token's TTL ends it",
				"lease", l.ID, "entitlement", l.Entitlement, "error", classify("revoke the Vault lease", err, ""))
		}
	}
	if err := child.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		i.log.Warn("could not revoke the per-lease token of a failed issuance; it ends at its TTL",
			"lease", l.ID, "entitlement", l.Entitlement, "error", classify("revoke the per-lease token", err, ""))
	}
}

// revokeUnleasedCert revokes, best effort, a certificate that a PKI role
// without generate_lease issued: nothing else would end it before its
// NotAfter (which is the lease's expiry).
func (i *Issuer) revokeUnleasedCert(child *vaultapi.Client, l *lease.Lease, p Params, sec *vaultapi.Secret) {
	serial, _ := sec.Data["serial_number"].(string)
	if serial == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if _, err := child.Logical().WriteWithContext(ctx, p.PKI.Mount+"/revoke", map[string]any{"serial_number": serial}); err != nil {
		i.log.Warn("a certificate issued without a lease could not be revoked; it expires at the lease's expiry",
			"lease", l.ID, "entitlement", l.Entitlement, "serial", serial, "error", classify("revoke the certificate", err, ""))
	}
}

// Renew extends the credential of an active lease to expiresAt: it renews
// the per-lease token by accessor (auth/token/renew-accessor) and the
// secret's Vault lease (sys/leases/renew), both to expiresAt, never past
// the lease's hard end (the token's explicit max TTL). The credential
// value stays the same: Renew returns nil. It fails with ErrRejected when
// Vault would end the credential before expiresAt (the role's max_ttl),
// when the token or Vault lease no longer exists, and for PKI
// certificates, which cannot be extended.
func (i *Issuer) Renew(ctx context.Context, l *lease.Lease, params any, expiresAt time.Time) (*issuer.Credential, error) {
	if l == nil {
		return nil, errors.New("vault: renew: no lease")
	}
	if err := ctx.Err(); err != nil {
		return nil, i.errorf(l, "renew: %w: %w", issuer.ErrUnavailable, err)
	}
	if l.State != lease.StateActive || l.RevokeReason != "" {
		return nil, i.errorf(l, "renew lease in state %s: %w", l.State, lease.ErrWrongState)
	}
	if !l.HardEnd.IsZero() && expiresAt.After(l.HardEnd) {
		return nil, i.errorf(l, "renew to %s: %w", expiresAt.UTC().Format(time.RFC3339), lease.ErrPastHardEnd)
	}
	if p, err := paramsOf(params); err == nil && p.PKI != nil {
		return nil, i.errorf(l, "renew: a certificate cannot be extended; issue a new credential before it expires: %w", issuer.ErrRejected)
	}
	ref, err := ParseRef(l.ExternalRef)
	if err != nil {
		return nil, i.errorf(l, "renew: %w: %w", err, issuer.ErrRejected)
	}
	now := i.cfg.Clock()
	inc := int(expiresAt.Sub(now) / time.Second)
	if inc < 1 {
		return nil, i.errorf(l, "renew to %s: already past: %w", expiresAt.UTC().Format(time.RFC3339), issuer.ErrRejected)
	}
	s, err := i.session(ctx)
	if err != nil {
		return nil, i.errorf(l, "%w", err)
	}
	tok, err := s.client.Auth().Token().RenewAccessorWithContext(ctx, ref.Accessor, inc)
	if err != nil {
		hint := "the broker's token lacks permission for auth/token/renew-accessor"
		if vaultSays(err, "invalid accessor", "not found") {
			hint = "the per-lease token no longer exists (revoked or expired); issue a new credential"
		}
		return nil, i.errorf(l, "%w", classify("renew the per-lease token", err, hint))
	}
	if tok != nil && tok.Auth != nil {
		if end := now.Add(time.Duration(tok.Auth.LeaseDuration) * time.Second); end.Before(expiresAt.Add(-ttlSlack)) {
			return nil, i.errorf(l, "renew: Vault ends the per-lease token at %s, before %s (its max TTL): %w",
				end.UTC().Format(time.RFC3339), expiresAt.UTC().Format(time.RFC3339), issuer.ErrRejected)
		}
	}
	if ref.LeaseID != "" {
		sec, err := s.client.Sys().RenewWithContext(ctx, ref.LeaseID, inc)
		if err != nil {
			hint := "the broker's token lacks permission for sys/leases/renew"
			switch {
			case vaultSays(err, "not renewable"):
				hint = "this secret's Vault lease is not renewable; issue a new credential"
			case vaultSays(err, "not found", "invalid lease", "expired"):
				hint = "the Vault lease no longer exists (revoked or expired); issue a new credential"
			}
			return nil, i.errorf(l, "%w", classify("renew the Vault lease", err, hint))
		}
		if sec != nil {
			if end := now.Add(time.Duration(sec.LeaseDuration) * time.Second); end.Before(expiresAt.Add(-ttlSlack)) {
				return nil, i.errorf(l, "renew: Vault ends the secret at %s, before %s (the role's max_ttl): %w",
					end.UTC().Format(time.RFC3339), expiresAt.UTC().Format(time.RFC3339), issuer.ErrRejected)
			}
		}
	}
	i.replay.extend(l.ID, expiresAt)
	return nil, nil
}

// Revoke ends the credential of the lease: it revokes the secret's Vault
// lease synchronously (sys/leases/revoke with sync, so Vault has dropped
// the database role, put the certificate on the CRL, ... when it
// returns), then the per-lease token by accessor
// (auth/token/revoke-accessor). A lease or token that is already gone
// (expired, revoked behind the broker's back, never created) is success,
// as is a lease with no ExternalRef: it was reaped before a token was
// bound, and that token ends at its TTL, the pending deadline. Vault
// unreachable: an error wrapping issuer.ErrUnavailable, and the revoker
// retries.
//
// Once the secret is revoked the token holds nothing: its value never
// left this process, and its TTL ends it at the lease's expiry (Issue and
// Renew never set it later). A lease that has reached its expiry needs
// nothing more; otherwise the token's revocation is queued and done in
// the background, after the secret revocations in flight, so that under
// a burst of due leases the credentials end first (see tokenSweeper). A
// full queue, or a failed secret revocation, has Revoke revoke the token
// itself. A lease bound to a token alone (reaped while pending) has its
// token revoked synchronously: that is what has Vault revoke any secret
// read with it.
func (i *Issuer) Revoke(ctx context.Context, l *lease.Lease) error {
	if l == nil {
		return errors.New("vault: revoke: no lease")
	}
	i.replay.forget(l.ID)
	if l.ExternalRef == "" {
		return nil
	}
	ref, err := ParseRef(l.ExternalRef)
	if err != nil {
		return i.errorf(l, "revoke: %w: %w", err, issuer.ErrRejected)
	}
	if err := ctx.Err(); err != nil {
		return i.errorf(l, "revoke: %w: %w", issuer.ErrUnavailable, err)
	}
	s, err := i.session(ctx)
	if err != nil {
		return i.errorf(l, "%w", err)
	}
	var leaseErr error
	if ref.LeaseID != "" {
		i.tokens.secrets.Add(1)
		_, err := s.client.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": ref.LeaseID, "sync": true})
		i.tokens.secrets.Add(-1)
		if err != nil && !(refused(err) && vaultSays(err, "not found", "invalid lease")) {
			leaseErr = classify("revoke the Vault lease", err, "the broker's token lacks permission for sys/leases/revoke")
		}
		if leaseErr == nil {
			if !l.ExpiresAt.IsZero() && !i.cfg.Clock().Before(l.ExpiresAt) {
				return nil // the token's TTL has ended it
			}
			if i.deferTokenRevocation(tokenJob{accessor: ref.Accessor, lease: l.ID, entitlement: l.Entitlement}) {
				return nil
			}
		}
	}
	// Revoke the token even if the lease failed: Vault then revokes the
	// lease itself (and retries it), and the next attempt finds it gone.
	if err := i.revokeToken(ctx, ref.Accessor); err != nil {
		return i.errorf(l, "%w", errors.Join(leaseErr, err))
	}
	if leaseErr != nil {
		return i.errorf(l, "%w", leaseErr)
	}
	return nil
}

// errorf prefixes an error with the package and the entitlement.
func (i *Issuer) errorf(l *lease.Lease, format string, args ...any) error {
	return fmt.Errorf("vault: entitlement %q: "+format, append([]any{l.Entitlement}, args...)...)
}

// secs formats a duration as Vault's whole seconds, rounded down.
func secs(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

func expandAll(ss []string, l *lease.Lease) []string {
	out := make([]string, len(ss))
	for k, s := range ss {
		out[k] = expand(s, l)
	}
	return out
}

// minTime is the earliest of the non-zero times.
func minTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if !t.IsZero() && (m.IsZero() || t.Before(m)) {
			m = t
		}
	}
	return m
}
