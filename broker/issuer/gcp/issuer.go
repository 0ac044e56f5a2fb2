package gcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Name is the issuer name entitlements use ("issuer: gcp").
const Name = "gcp"

// RevocableReason is what Revocability says.
const RevocableReason = "Google access tokens cannot be revoked; each ends at its expiry, " +
	"no later than the lease and at most max_lifetime (1h unless the org policy allows up to 12h) after it was minted"

// RFC 8693 token exchange, as Google STS speaks it.
const (
	grantTokenExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// maxBody bounds what is read of an answer.
const maxBody = 1 << 20

// Issuer mints service account access tokens, one per lease. It is safe
// for concurrent use.
type Issuer struct {
	cfg Config
	log *slog.Logger
}

var _ issuer.Issuer = (*Issuer)(nil)

// New validates cfg. It does not call Google.
func New(cfg Config) (*Issuer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Issuer{cfg: cfg, log: cfg.Logger}, nil
}

// Name returns "gcp".
func (i *Issuer) Name() string { return Name }

// Revocability is always false: see RevocableReason.
func (i *Issuer) Revocability(any) (bool, string) { return false, RevocableReason }

// Issue mints a token of the entitlement's service account for the pending
// lease, ending SkewAllowance before the lease (at most max_lifetime). The
// lease id is the handle: Bind is not called and ExternalRef is empty.
func (i *Issuer) Issue(ctx context.Context, req issuer.Request) (*issuer.Credential, error) {
	l := req.Lease
	if l == nil {
		return nil, errors.New("gcp: issue: no lease")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("gcp: entitlement %q: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	p, err := paramsOf(req.Params)
	if err != nil {
		return nil, fmt.Errorf("gcp: entitlement %q: %w: %w", l.Entitlement, err, issuer.ErrRejected)
	}
	return i.mint(ctx, l, p, l.ExpiresAt)
}

// Renew mints a new token that ends SkewAllowance before expiresAt (an
// access token cannot be extended); the old one stays valid until its own
// expiry.
func (i *Issuer) Renew(ctx context.Context, l *lease.Lease, params any, expiresAt time.Time) (*issuer.Credential, error) {
	if l == nil {
		return nil, errors.New("gcp: renew: no lease")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("gcp: entitlement %q: renew: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	if l.State != lease.StateActive || l.RevokeReason != "" {
		return nil, fmt.Errorf("gcp: entitlement %q: renew lease in state %s: %w", l.Entitlement, l.State, lease.ErrWrongState)
	}
	if !l.HardEnd.IsZero() && expiresAt.After(l.HardEnd) {
		return nil, fmt.Errorf("gcp: entitlement %q: renew to %s: %w", l.Entitlement, expiresAt.UTC().Format(time.RFC3339), lease.ErrPastHardEnd)
	}
	p, err := paramsOf(params)
	if err != nil {
		return nil, fmt.Errorf("gcp: entitlement %q: %w: %w", l.Entitlement, err, issuer.ErrRejected)
	}
	return i.mint(ctx, l, p, expiresAt)
}

// Revoke returns nil: a Google access token cannot be revoked. It ends at
// its expiry, no later than the lease's.
func (i *Issuer) Revoke(ctx context.Context, l *lease.Lease) error {
	if l == nil {
		return errors.New("gcp: revoke: no lease")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gcp: entitlement %q: revoke: %w: %w", l.Entitlement, issuer.ErrUnavailable, err)
	}
	return nil
}

// lifetime is how long a token for l may live if Google mints it now and
// it must end by until.
func (i *Issuer) lifetime(l *lease.Lease, p Params, until time.Time) (time.Duration, error) {
	d := (until.Sub(i.cfg.Clock()) - SkewAllowance).Truncate(time.Second)
	if d > p.MaxLifetime {
		d = p.MaxLifetime
	}
	if d >= MinLifetime {
		return d, nil
	}
	if ttl := until.Sub(l.IssuedAt); ttl < MinTTL {
		return 0, fmt.Errorf("gcp: entitlement %q: lease %s lasts %v; a token must end %v before its lease and live at least %v: set ttl >= %v: %w",
			l.Entitlement, l.ID, shortDur(ttl.Round(time.Second)), SkewAllowance, shortDur(MinLifetime), shortDur(MinTTL), issuer.ErrRejected)
	}
	return 0, fmt.Errorf("gcp: entitlement %q: lease %s has %v left, too little for a token: %w",
		l.Entitlement, l.ID, shortDur(until.Sub(i.cfg.Clock()).Round(time.Second)), issuer.ErrRejected)
}

// shortDur prints 2m rather than 2m0s.
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

// mint exchanges a broker token for a federated token at Google STS, then
// generates the service account's token with it.
func (i *Issuer) mint(ctx context.Context, l *lease.Lease, p Params, until time.Time) (*issuer.Credential, error) {
	if l.ID == "" || l.Subject == "" {
		return nil, fmt.Errorf("gcp: entitlement %q: lease without id or subject: %w", l.Entitlement, issuer.ErrRejected)
	}
	if _, err := i.lifetime(l, p, until); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, i.cfg.CallTimeout)
	defer cancel()

	subject, err := i.cfg.TokenSource(ctx, exchangeLease(l, i.cfg.Clock(), until), i.cfg.TokenAudience)
	if err != nil {
		sentinel := issuer.ErrUnavailable
		if errors.Is(err, issuer.ErrRejected) {
			sentinel = issuer.ErrRejected
		}
		return nil, fmt.Errorf("gcp: entitlement %q: token for lease %s: %w: %w", l.Entitlement, l.ID, sentinel, err)
	}

	// 1. Google STS: the broker's token for a federated access token.
	form := url.Values{
		"grant_type":           {grantTokenExchange},
		"audience":             {"//iam.googleapis.com/" + i.cfg.WorkloadIdentityProvider},
		"scope":                {DefaultScope},
		"requested_token_type": {tokenTypeAccessToken},
		"subject_token":        {subject},
		"subject_token_type":   {tokenTypeJWT},
	}
	var fed struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	err = i.call(ctx, l.Entitlement, "token exchange at Google STS", func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodPost, i.cfg.STSURL, strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		return req, err
	}, &fed)
	if err != nil {
		return nil, err
	}
	if fed.AccessToken == "" || (fed.TokenType != "" && !strings.EqualFold(fed.TokenType, "Bearer")) {
		return nil, fmt.Errorf("gcp: entitlement %q: Google STS answered without a bearer token: %w", l.Entitlement, issuer.ErrUnavailable)
	}

	// 2. IAM Credentials: the service account's token. The lifetime is
	// computed again for each attempt, so retries never stretch it.
	endpoint := i.cfg.IAMCredentialsURL + "/v1/projects/-/serviceAccounts/" + url.PathEscape(p.ServiceAccount) + ":generateAccessToken"
	var delegates []string
	for _, d := range p.Delegates {
		delegates = append(delegates, "projects/-/serviceAccounts/"+d)
	}
	var out struct {
		AccessToken string `json:"accessToken"`
		ExpireTime  string `json:"expireTime"`
	}
	err = i.call(ctx, l.Entitlement, "generateAccessToken for "+p.ServiceAccount, func() (*http.Request, error) {
		life, err := i.lifetime(l, p, until)
		if err != nil {
			return nil, err
		}
		body, _ := json.Marshal(struct {
			Delegates []string `json:"delegates,omitempty"`
			Scope     []string `json:"scope"`
			Lifetime  string   `json:"lifetime"`
		}{delegates, p.Scopes, strconv.FormatInt(int64(life/time.Second), 10) + "s"})
		req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+fed.AccessToken)
		}
		return req, err
	}, &out)
	if err != nil {
		return nil, err
	}
	exp, perr := time.Parse(time.RFC3339Nano, out.ExpireTime)
	if out.AccessToken == "" || perr != nil {
		return nil, fmt.Errorf("gcp: entitlement %q: generateAccessToken answered without a token and its expiry: %w", l.Entitlement, issuer.ErrUnavailable)
	}
	if exp.After(until) {
		i.log.WarnContext(ctx, "Google token would outlive its lease; dropped",
			slog.String("entitlement", l.Entitlement), slog.String("lease", l.ID),
			slog.Time("token_expires", exp), slog.Time("lease_expires", until))
		return nil, fmt.Errorf("gcp: entitlement %q: token for lease %s would end %v after the lease (clock skew?); not handed out: %w",
			l.Entitlement, l.ID, exp.Sub(until).Round(time.Second), issuer.ErrUnavailable)
	}
	return &issuer.Credential{
		Kind:      issuer.KindOAuthToken,
		ExpiresAt: exp,
		Token:     out.AccessToken,
		Scopes:    slices.Clone(p.Scopes),
	}, nil
}

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

// call sends the request build makes, retrying network errors, 408, 429
// and 5xx up to MaxAttempts with jittered exponential backoff, and decodes
// a 200 answer into out. Errors follow the issuer contract (see
// googleError).
func (i *Issuer) call(ctx context.Context, entitlement, op string, build func() (*http.Request, error), out any) error {
	var lastErr error
	for attempt := 1; ; attempt++ {
		req, err := build()
		if err != nil {
			if errors.Is(err, issuer.ErrRejected) || errors.Is(err, issuer.ErrUnavailable) {
				return err
			}
			return fmt.Errorf("gcp: entitlement %q: %s: %w: %w", entitlement, op, issuer.ErrRejected, err)
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "mayfly-broker")
		resp, err := i.cfg.HTTPClient.Do(req.WithContext(ctx))
		retry := false
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return fmt.Errorf("gcp: entitlement %q: %s did not complete: %w: %w", entitlement, op, issuer.ErrUnavailable, context.Cause(ctx))
			}
			i.log.WarnContext(ctx, "Google call failed", slog.String("op", op), slog.String("entitlement", entitlement), slog.Int("attempt", attempt), slog.String("error", scrub(err.Error())))
			lastErr = fmt.Errorf("gcp: entitlement %q: %s failed%s: could not reach Google: %w", entitlement, op, attempts(attempt), issuer.ErrUnavailable)
			retry = true
		default:
			body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				if err := json.Unmarshal(body, out); err != nil {
					return fmt.Errorf("gcp: entitlement %q: %s: answer is not the expected JSON: %w", entitlement, op, issuer.ErrUnavailable)
				}
				return nil
			}
			lastErr = i.googleError(ctx, entitlement, op, resp, body, attempt)
			retry = errors.Is(lastErr, issuer.ErrUnavailable)
		}
		if !retry || attempt >= i.cfg.MaxAttempts {
			return lastErr
		}
		if err := sleep(ctx, i.backoff(attempt)); err != nil {
			return fmt.Errorf("gcp: entitlement %q: %s did not complete: %w: %w", entitlement, op, issuer.ErrUnavailable, err)
		}
	}
}

// backoff is the wait after the attempt-th failure: full jitter over
// 100ms·2^(attempt-1), capped at MaxBackoff.
func (i *Issuer) backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt-1, 16)
	if d > i.cfg.MaxBackoff {
		d = i.cfg.MaxBackoff
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

func attempts(n int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf(" after %d attempts", n)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

var safeCode = regexp.MustCompile(`^[A-Za-z_]{1,64}$`)

// hints say what an operator should look at for a refusal, by Google's
// error code (STS: OAuth error; IAM: canonical status).
var hints = map[string]string{
	"invalid_grant":       "Google STS rejected the broker's token (is the provider's issuer URI the broker's issuer URL, its audience the token's, and does the attribute condition accept this caller?)",
	"invalid_target":      "the workload identity pool or provider does not exist or is disabled",
	"unauthorized_client": "the workload identity provider is disabled or refuses the broker",
	"invalid_request":     "Google STS refused the request (check Config.WorkloadIdentityProvider)",
	"invalid_scope":       "Google STS refused the scope",
	"PERMISSION_DENIED":   "the broker's federated identity may not impersonate the service account (grant roles/iam.workloadIdentityUser on it to the pool principal of this caller or entitlement; with delegates, roles/iam.serviceAccountTokenCreator along the chain)",
	"NOT_FOUND":           "the service account does not exist",
	"INVALID_ARGUMENT":    "Google refused the request (a lifetime over 1h needs the org policy constraints/iam.allowServiceAccountCredentialLifetimeExtension; scopes and delegates must be valid)",
	"UNAUTHENTICATED":     "Google did not accept the federated token",
	"FAILED_PRECONDITION": "the service account cannot be used now (disabled?)",
}

// googleError maps a non-200 answer: 408, 429 and 5xx wrap ErrUnavailable,
// other answers ErrRejected. The message names the entitlement, the call,
// the status and Google's error code; Google's message goes to the log.
func (i *Issuer) googleError(ctx context.Context, entitlement, op string, resp *http.Response, body []byte, attempt int) error {
	var e struct {
		Error            json.RawMessage `json:"error"`
		ErrorDescription string          `json:"error_description"`
	}
	code, msg := "", ""
	if json.Unmarshal(body, &e) == nil && len(e.Error) > 0 {
		var s string
		var obj struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		}
		if json.Unmarshal(e.Error, &s) == nil {
			code, msg = s, e.ErrorDescription
		} else if json.Unmarshal(e.Error, &obj) == nil {
			code, msg = obj.Status, obj.Message
		}
	}
	if !safeCode.MatchString(code) {
		code = "unknown"
	}
	i.log.WarnContext(ctx, "Google refused a call", slog.String("op", op), slog.String("entitlement", entitlement),
		slog.Int("status", resp.StatusCode), slog.String("code", code), slog.Int("attempt", attempt), slog.String("message", scrub(msg)))
	detail := fmt.Sprintf("HTTP %d, %s", resp.StatusCode, code)
	if s := resp.StatusCode; s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500 {
		return fmt.Errorf("gcp: entitlement %q: %s failed%s (%s): Google is unavailable or throttling: %w",
			entitlement, op, attempts(attempt), detail, issuer.ErrUnavailable)
	}
	hint := hints[code]
	if hint == "" {
		hint = "Google refused the request"
	}
	return fmt.Errorf("gcp: entitlement %q: %s refused (%s): %s: %w", entitlement, op, detail, hint, issuer.ErrRejected)
}

// scrub prepares text from Google for a log line: control characters go,
// and any run of 32 or more characters that could be a key or a token is
// cut out. At most 300 bytes are kept.
func scrub(s string) string {
	const maxLen = 300
	var b strings.Builder
	run, start := 0, 0
	for n := 0; n <= len(s); n++ {
		var c byte
		if n < len(s) {
			c = s[n]
		}
		if n < len(s) && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+/=_-.%", c) >= 0) {
			if run == 0 {
				start = n
			}
			run++
			continue
		}
		if run >= 32 {
			b.WriteString("[redacted]")
		} else if run > 0 {
			b.WriteString(s[start:n])
		}
		run = 0
		if n < len(s) {
			if c < 0x20 || c == 0x7f {
				b.WriteByte(' ')
			} else {
				b.WriteByte(c)
			}
		}
	}
	out := b.String()
	if len(out) > maxLen {
		out = strings.ToValidUTF8(out[:maxLen], "") + "…"
	}
	return out
}
