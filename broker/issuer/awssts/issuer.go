package awssts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Name is the issuer name entitlements use ("issuer: awssts").
const Name = "awssts"

// RevocableReason is what Revocability says for an entitlement with
// revoke_sessions_policy: true; NoKillSwitchReason for one without.
const (
	RevocableReason = "STS sessions cannot be revoked one by one; the kill switch applies a deny policy " +
		"keyed on aws:TokenIssueTime when the entitlement allows it"
	NoKillSwitchReason = "STS sessions cannot be revoked one by one and this entitlement does not allow " +
		"the kill switch's deny policy (revoke_sessions_policy); the session ends at its expiry, no later than the lease"
)

// KillSwitchPolicyName is the inline role policy KillSwitch writes.
const KillSwitchPolicyName = "mayfly-revoke-older-sessions"

// Issuer mints STS sessions, one per lease. It is safe for concurrent use.
type Issuer struct {
	cfg     Config
	log     *slog.Logger
	retryer func() aws.Retryer

	mu      sync.Mutex
	sts     map[string]*sts.Client // by region
	iam     *iam.Client
	awsCred aws.CredentialsProvider // Config.Credentials or the default chain, once loaded
}

var _ issuer.Issuer = (*Issuer)(nil)

// New validates cfg. It does not call AWS, nor load the default credential
// chain (that happens at the first call that needs it).
func New(cfg Config) (*Issuer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	i := &Issuer{cfg: cfg, log: cfg.Logger, sts: map[string]*sts.Client{}}
	// One retryer per client: the SDK's retry token bucket then limits
	// retry storms per region. Every call here is safe to retry.
	i.retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = cfg.MaxAttempts
			o.MaxBackoff = cfg.MaxBackoff
			o.Retryables = append(slices.Clone(o.Retryables), retry.RetryableErrorCode{
				Codes: map[string]struct{}{"IDPCommunicationError": {}, "InternalFailure": {}, "ServiceUnavailable": {}},
			})
		})
	}
	if cfg.Credentials != nil {
		i.awsCred = aws.NewCredentialsCache(cfg.Credentials)
		if _, ok := cfg.Credentials.(*aws.CredentialsCache); ok {
			i.awsCred = cfg.Credentials
		}
	}
	return i, nil
}

// Name returns "awssts".
func (i *Issuer) Name() string { return Name }

// Revocability is always false: an STS session cannot be ended on its own.
// The reason says whether the kill switch's deny policy can end it.
func (i *Issuer) Revocability(params any) (bool, string) {
	if p, err := paramsOf(params); err == nil && p.RevokeSessionsPolicy {
		return false, RevocableReason
	}
	return false, NoKillSwitchReason
}

// Issue assumes the entitlement's role for the pending lease: session name
// = lease id, session ending SkewAllowance before the lease (capped at
// max_session_duration). The lease id is the handle: Bind is not called;
// ExternalRef is the assumed-role ARN. A lease shorter than MinTTL, or
// with too little time left for a 15 minute session, is refused with
// ErrRejected.
func (i *Issuer) Issue(ctx context.Context, req issuer.Request) (*issuer.Credential, error) {
	l := req.Lease
	if l == nil {
		return nil, errors.New("awssts: issue: no lease")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("awssts: entitlement %q: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	p, err := paramsOf(req.Params)
	if err != nil {
		return nil, fmt.Errorf("awssts: entitlement %q: %w: %w", l.Entitlement, err, issuer.ErrRejected)
	}
	return i.assume(ctx, l, p, l.ExpiresAt)
}

// Renew assumes the role again, with the same session name, for a session
// ending SkewAllowance before expiresAt: an STS session cannot be
// extended, so the holder switches to the new credentials (the old ones
// stay valid until their own expiry). When less than a 15 minute session
// fits before expiresAt it fails with ErrRejected: renew earlier, or by
// more.
func (i *Issuer) Renew(ctx context.Context, l *lease.Lease, params any, expiresAt time.Time) (*issuer.Credential, error) {
	if l == nil {
		return nil, errors.New("awssts: renew: no lease")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("awssts: entitlement %q: renew: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	if l.State != lease.StateActive || l.RevokeReason != "" {
		return nil, fmt.Errorf("awssts: entitlement %q: renew lease in state %s: %w", l.Entitlement, l.State, lease.ErrWrongState)
	}
	if !l.HardEnd.IsZero() && expiresAt.After(l.HardEnd) {
		return nil, fmt.Errorf("awssts: entitlement %q: renew to %s: %w", l.Entitlement, expiresAt.UTC().Format(time.RFC3339), lease.ErrPastHardEnd)
	}
	p, err := paramsOf(params)
	if err != nil {
		return nil, fmt.Errorf("awssts: entitlement %q: %w: %w", l.Entitlement, err, issuer.ErrRejected)
	}
	return i.assume(ctx, l, p, expiresAt)
}

// Revoke returns nil: an STS session cannot be revoked on its own, and it
// ends at its expiry, which is no later than the lease's. KillSwitch is
// what ends sessions early, for every session of the role at once.
func (i *Issuer) Revoke(ctx context.Context, l *lease.Lease) error {
	if l == nil {
		return errors.New("awssts: revoke: no lease")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("awssts: entitlement %q: revoke: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	return nil
}

// sessionDuration is how long a session for l may last if STS starts it
// now and it must end by until: until - now - SkewAllowance in whole
// seconds, capped at the role's maximum. It refuses, with the reason, when
// that is under 15 minutes.
func (i *Issuer) sessionDuration(l *lease.Lease, p Params, until time.Time) (time.Duration, error) {
	d := until.Sub(i.cfg.Clock()) - SkewAllowance
	d = d.Truncate(time.Second)
	if d > p.MaxSessionDuration {
		d = p.MaxSessionDuration
	}
	if d >= MinSession {
		return d, nil
	}
	if ttl := until.Sub(l.IssuedAt); ttl < MinTTL {
		return 0, fmt.Errorf("awssts: entitlement %q: lease %s lasts %v; STS sessions last at least 15m and must end before the lease: set ttl >= %v: %w",
			l.Entitlement, l.ID, shortDur(ttl.Round(time.Second)), shortDur(MinTTL), issuer.ErrRejected)
	}
	return 0, fmt.Errorf("awssts: entitlement %q: lease %s has %v left, too little for a 15m STS session that ends before it: %w",
		l.Entitlement, l.ID, shortDur(until.Sub(i.cfg.Clock()).Round(time.Second)), issuer.ErrRejected)
}

// shortDur prints 16m rather than 16m0s.
func shortDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// assume runs AssumeRole or AssumeRoleWithWebIdentity for a session of l
// that ends by until.
func (i *Issuer) assume(ctx context.Context, l *lease.Lease, p Params, until time.Time) (*issuer.Credential, error) {
	if !sessionNameRE.MatchString(l.ID) {
		return nil, fmt.Errorf("awssts: entitlement %q: lease id %q is not a valid STS session name: %w", l.Entitlement, l.ID, issuer.ErrRejected)
	}
	if l.Subject == "" {
		return nil, fmt.Errorf("awssts: entitlement %q: lease %s has no subject: %w", l.Entitlement, l.ID, issuer.ErrRejected)
	}
	d, err := i.sessionDuration(l, p, until)
	if err != nil {
		return nil, err
	}
	secs := int32(d / time.Second)
	var policy *string
	if p.SessionPolicy != "" {
		policy = aws.String(p.SessionPolicy)
	}
	region := p.Region
	if region == "" {
		region = i.cfg.Region
	}

	var (
		creds   *ststypes.Credentials
		user    *ststypes.AssumedRoleUser
		op      string
		callErr error
	)
	switch p.Mode {
	case ModeWebIdentity:
		op = "AssumeRoleWithWebIdentity"
		if i.cfg.TokenSource == nil {
			return nil, fmt.Errorf("awssts: entitlement %q: mode web_identity needs Config.TokenSource: %w", l.Entitlement, issuer.ErrRejected)
		}
		token, err := i.cfg.TokenSource(ctx, exchangeLease(l, i.cfg.Clock(), until), i.cfg.Audience)
		if err != nil {
			sentinel := issuer.ErrUnavailable
			if errors.Is(err, issuer.ErrRejected) {
				sentinel = issuer.ErrRejected
			}
			return nil, fmt.Errorf("awssts: entitlement %q: web identity token for lease %s: %w: %w", l.Entitlement, l.ID, sentinel, err)
		}
		client := i.stsClient(region, nil)
		cctx, cancel := context.WithTimeout(ctx, i.cfg.CallTimeout)
		out, err := client.AssumeRoleWithWebIdentity(cctx, &sts.AssumeRoleWithWebIdentityInput{
			RoleArn:          aws.String(p.RoleARN),
			RoleSessionName:  aws.String(l.ID),
			WebIdentityToken: aws.String(token),
			DurationSeconds:  aws.Int32(secs),
			Policy:           policy,
		})
		cancel()
		if err == nil {
			creds, user = out.Credentials, out.AssumedRoleUser
		}
		callErr = err
	case ModeAssumeRole:
		op = "AssumeRole"
		cred, err := i.credentials(ctx)
		if err != nil {
			return nil, fmt.Errorf("awssts: entitlement %q: %w", l.Entitlement, err)
		}
		tags := sessionTags(l)
		maps.Copy(tags, p.SessionTags)
		keys := slices.Sorted(maps.Keys(tags))
		in := &sts.AssumeRoleInput{
			RoleArn:         aws.String(p.RoleARN),
			RoleSessionName: aws.String(l.ID),
			DurationSeconds: aws.Int32(secs),
			Policy:          policy,
			SourceIdentity:  aws.String(SourceIdentity(l.Subject)),
		}
		for _, k := range keys {
			in.Tags = append(in.Tags, ststypes.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
		}
		client := i.stsClient(region, cred)
		cctx, cancel := context.WithTimeout(ctx, i.cfg.CallTimeout)
		out, err := client.AssumeRole(cctx, in)
		cancel()
		if err == nil {
			creds, user = out.Credentials, out.AssumedRoleUser
		}
		callErr = err
	}
	if callErr != nil {
		return nil, i.backendError(ctx, l.Entitlement, op, callErr)
	}
	if creds == nil || creds.Expiration == nil || aws.ToString(creds.AccessKeyId) == "" ||
		aws.ToString(creds.SecretAccessKey) == "" || aws.ToString(creds.SessionToken) == "" {
		return nil, fmt.Errorf("awssts: entitlement %q: %s answered without complete credentials: %w", l.Entitlement, op, issuer.ErrUnavailable)
	}
	exp := *creds.Expiration
	if exp.After(until) {
		// STS's clock is ahead of ours by more than the allowance, or the
		// call took longer than it. Nobody has seen these credentials:
		// dropping them is safe, handing them out would break the lease.
		i.log.WarnContext(ctx, "STS session would outlive its lease; dropped",
			slog.String("entitlement", l.Entitlement), slog.String("lease", l.ID),
			slog.Time("session_expires", exp), slog.Time("lease_expires", until))
		return nil, fmt.Errorf("awssts: entitlement %q: STS session for lease %s would end %v after the lease (clock skew?); not handed out: %w",
			l.Entitlement, l.ID, exp.Sub(until).Round(time.Second), issuer.ErrUnavailable)
	}
	ref := ""
	if user != nil {
		ref = aws.ToString(user.Arn)
	}
	return &issuer.Credential{
		Kind:            issuer.KindAWS,
		ExternalRef:     ref,
		ExpiresAt:       exp,
		AccessKeyID:     aws.ToString(creds.AccessKeyId),
		SecretAccessKey: aws.ToString(creds.SecretAccessKey),
		SessionToken:    aws.ToString(creds.SessionToken),
	}, nil
}

// ExchangeTokenLifetime is the longest a web identity token lives: STS
// only needs it while it verifies it, and whoever holds it could assume
// the role until it expires.
const ExchangeTokenLifetime = 5 * time.Minute

// exchangeLease is the copy of l a TokenSource gets: IssuedAt now (whole
// seconds, not before the lease's) and ExpiresAt ExchangeTokenLifetime
// later, never after until.
func exchangeLease(l *lease.Lease, now, until time.Time) *lease.Lease {
	tl := l.Clone()
	if now = now.Truncate(time.Second); now.After(tl.IssuedAt) {
		tl.IssuedAt = now
	}
	tl.ExpiresAt = tl.IssuedAt.Add(ExchangeTokenLifetime)
	if tl.ExpiresAt.After(until) {
		tl.ExpiresAt = until
	}
	return tl
}

// KillSwitch ends every session of the entitlement's role issued before
// before, Mayfly's or not, by putting the inline policy
// mayfly-revoke-older-sessions on the role: Deny * on * when
// aws:TokenIssueTime is earlier than before (rounded up to the second).
// Sessions issued afterwards are unaffected, so issuance goes on; pass
// the time the kill switch was thrown (a later time would also deny the
// sessions issued until then). A policy
// already in place with a later time is kept (two kill switches never
// weaken each other). It needs iam:GetRolePolicy and iam:PutRolePolicy on
// the role, with Config.Credentials or the default chain. For an
// entitlement without revoke_sessions_policy: true it returns
// ErrKillSwitchDisabled and changes nothing.
func (i *Issuer) KillSwitch(ctx context.Context, params any, before time.Time) error {
	p, err := paramsOf(params)
	if err != nil {
		return fmt.Errorf("awssts: kill switch: %w: %w", err, issuer.ErrRejected)
	}
	if !p.RevokeSessionsPolicy {
		return fmt.Errorf("%w (role %s)", ErrKillSwitchDisabled, p.RoleARN)
	}
	if before.IsZero() {
		return errors.New("awssts: kill switch: no time given")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("awssts: kill switch for role %s: %w: %w", p.RoleARN, issuer.ErrUnavailable, err)
	}
	cutoff := before.UTC().Truncate(time.Second)
	if cutoff.Before(before) {
		cutoff = cutoff.Add(time.Second)
	}
	cred, err := i.credentials(ctx)
	if err != nil {
		return fmt.Errorf("awssts: kill switch for role %s: %w", p.RoleARN, err)
	}
	client := i.iamClient(cred)
	role := p.roleName()

	cctx, cancel := context.WithTimeout(ctx, i.cfg.CallTimeout)
	defer cancel()
	got, err := client.GetRolePolicy(cctx, &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(KillSwitchPolicyName)})
	var api smithy.APIError
	switch {
	case err == nil:
		if existing, ok := killSwitchCutoff(aws.ToString(got.PolicyDocument)); ok && !existing.Before(cutoff) {
			i.log.InfoContext(ctx, "kill switch policy already covers the time", slog.String("role", p.RoleARN), slog.Time("in_place", existing), slog.Time("asked", cutoff))
			return nil
		}
	case errors.As(err, &api) && api.ErrorCode() == "NoSuchEntity":
		// No policy yet (or no role: PutRolePolicy says which).
	default:
		return i.backendError(ctx, "", fmt.Sprintf("GetRolePolicy on role %s", p.RoleARN), err)
	}

	doc := killSwitchPolicy(cutoff)
	cctx2, cancel2 := context.WithTimeout(ctx, i.cfg.CallTimeout)
	defer cancel2()
	if _, err := client.PutRolePolicy(cctx2, &iam.PutRolePolicyInput{
		RoleName:       aws.String(role),
		PolicyName:     aws.String(KillSwitchPolicyName),
		PolicyDocument: aws.String(doc),
	}); err != nil {
		return i.backendError(ctx, "", fmt.Sprintf("PutRolePolicy on role %s", p.RoleARN), err)
	}
	i.log.InfoContext(ctx, "kill switch: sessions issued before the cutoff are denied", slog.String("role", p.RoleARN), slog.Time("cutoff", cutoff))
	return nil
}

// killSwitchPolicy is the deny policy for sessions issued before cutoff.
func killSwitchPolicy(cutoff time.Time) string {
	return `{"Version":"2012-10-17","Statement":[{"Sid":"MayflyRevokeOlderSessions","Effect":"Deny","Action":"*","Resource":"*",` +
		`"Condition":{"DateLessThan":{"aws:TokenIssueTime":"` + cutoff.UTC().Format(time.RFC3339) + `"}}}]}`
}

// killSwitchCutoff reads the cutoff of a policy killSwitchPolicy wrote.
// IAM returns policy documents URL-encoded (RFC 3986).
func killSwitchCutoff(doc string) (time.Time, bool) {
	if dec, err := url.QueryUnescape(doc); err == nil {
		doc = dec
	}
	var pol struct {
		Statement []struct {
			Effect    string
			Condition map[string]map[string]string
		}
	}
	if err := json.Unmarshal([]byte(doc), &pol); err != nil {
		return time.Time{}, false
	}
	for _, s := range pol.Statement {
		if v, ok := s.Condition["DateLessThan"]["aws:TokenIssueTime"]; ok && strings.EqualFold(s.Effect, "Deny") {
			t, err := time.Parse(time.RFC3339, v)
			return t, err == nil
		}
	}
	return time.Time{}, false
}

// credentials are the broker's own AWS credentials: Config.Credentials, or
// the SDK's default chain loaded on first use (a failure is retried on the
// next call).
func (i *Issuer) credentials(ctx context.Context) (aws.CredentialsProvider, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.awsCred != nil {
		return i.awsCred, nil
	}
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(i.cfg.Region))
	if err != nil || cfg.Credentials == nil {
		return nil, fmt.Errorf("no AWS credentials for the broker (Config.Credentials or the default chain): %w", issuer.ErrRejected)
	}
	i.awsCred = cfg.Credentials
	return i.awsCred, nil
}

// stsClient returns the client for region, signing with cred (nil for the
// unsigned AssumeRoleWithWebIdentity).
func (i *Issuer) stsClient(region string, cred aws.CredentialsProvider) *sts.Client {
	key := region
	if cred != nil {
		key += "/signed"
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if c := i.sts[key]; c != nil {
		return c
	}
	o := sts.Options{
		Region:      region,
		Credentials: cred,
		Retryer:     i.retryer(),
	}
	if i.cfg.HTTPClient != nil {
		o.HTTPClient = i.cfg.HTTPClient
	}
	if i.cfg.STSEndpoint != "" {
		o.BaseEndpoint = aws.String(i.cfg.STSEndpoint)
	}
	c := sts.New(o)
	i.sts[key] = c
	return c
}

func (i *Issuer) iamClient(cred aws.CredentialsProvider) *iam.Client {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.iam != nil {
		return i.iam
	}
	o := iam.Options{
		Region:      i.cfg.Region,
		Credentials: cred,
		Retryer:     i.retryer(),
	}
	if i.cfg.HTTPClient != nil {
		o.HTTPClient = i.cfg.HTTPClient
	}
	if i.cfg.IAMEndpoint != "" {
		o.BaseEndpoint = aws.String(i.cfg.IAMEndpoint)
	}
	i.iam = iam.New(o)
	return i.iam
}
