package awssts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

const webParams = "role_arn: " + roleARN
const assumeParams = "role_arn: " + roleARN + "\nmode: assume_role"

// errorTexts collects every error a test saw, to look for leaks at the end.
type errorTexts struct {
	mu   sync.Mutex
	errs []string
}

func (x *errorTexts) add(err error) {
	if err != nil {
		x.mu.Lock()
		x.errs = append(x.errs, err.Error(), fmt.Sprintf("%+v", err))
		x.mu.Unlock()
	}
}

// assertNoSecrets fails t if any minted secret (session keys and tokens at
// the fake, broker JWTs) appears in the logs or in errs.
func (e *env) assertNoSecrets(t *testing.T, errs *errorTexts) {
	t.Helper()
	var secrets []string
	e.sts.mu.Lock()
	for _, s := range e.sts.sessions {
		secrets = append(secrets, s.creds.SecretAccessKey, s.creds.SessionToken)
	}
	e.sts.mu.Unlock()
	secrets = append(secrets, e.jwt.minted()...)
	secrets = append(secrets, brokerKey.SecretAccessKey)
	outputs := map[string]string{"log": e.logs.String()}
	if errs != nil {
		for n, s := range errs.errs {
			outputs[fmt.Sprintf("error %d", n)] = s
		}
	}
	for where, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s contains a secret (%.12s…)", where, s)
			}
		}
		// A JWT's signature part is enough to replay it.
		for _, tok := range e.jwt.minted() {
			if sig := tok[strings.LastIndexByte(tok, '.')+1:]; strings.Contains(out, sig) {
				t.Errorf("%s contains a broker JWT signature", where)
			}
		}
	}
}

func TestIssueWebIdentity(t *testing.T) {
	e := newEnv(t, nil)
	p := decode(t, e.iss, webParams+"\nsession_policy: |\n  {\"Version\": \"2012-10-17\",\n   \"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"s3:GetObject\", \"Resource\": \"*\"}]}")
	l := testLease(20 * time.Minute)
	c, err := e.issue(t, l, p)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	e.verify(t, l, c, p)

	calls := e.sts.recorded()
	if len(calls) != 1 {
		t.Fatalf("STS got %d calls; want 1", len(calls))
	}
	call := calls[0]
	if call.Action != "AssumeRoleWithWebIdentity" {
		t.Errorf("Action %q", call.Action)
	}
	if !strings.HasPrefix(call.Policy, `{"Version":"2012-10-17","Statement":[`) || strings.ContainsAny(call.Policy, " \n") {
		t.Errorf("Policy %q; want the session policy compacted", call.Policy)
	}
	// The token the fake verified against the broker's JWKS.
	tok := call.Token
	if tok.Issuer != e.jwt.srv.URL || !tok.Audience.Contains(DefaultAudience) || tok.Subject != testSubject || tok.Ent != "s3-reports-read" {
		t.Errorf("token iss %q aud %v sub %q ent %q", tok.Issuer, tok.Audience, tok.Subject, tok.Ent)
	}
	if life := tok.Expiry.Time().Sub(tok.IssuedAt.Time()); life > ExchangeTokenLifetime {
		t.Errorf("web identity token lives %v; want at most %v", life, ExchangeTokenLifetime)
	}
	// STS takes neither tags nor a source identity as parameters here.
	if call.HasTagsParam || call.SourceIdentity != "" {
		t.Errorf("web identity call carried tags %v or SourceIdentity %q", call.Tags, call.SourceIdentity)
	}
	e.assertNoSecrets(t, nil)
}

// TestSigningAlgorithms: AWS accepts web identity tokens signed with RS*
// and ES*, not EdDSA; the fake enforces the same.
func TestSigningAlgorithms(t *testing.T) {
	for alg, want := range map[string]error{jwt.ES256: nil, jwt.RS256: nil, jwt.EdDSA: issuer.ErrRejected} {
		t.Run(alg, func(t *testing.T) {
			e := newEnvAlg(t, alg, nil)
			p := decode(t, e.iss, webParams)
			l := testLease(20 * time.Minute)
			c, err := e.issue(t, l, p)
			if !errors.Is(err, want) {
				t.Fatalf("Issue with %s tokens = %v; want %v", alg, err, want)
			}
			if want == nil {
				e.verify(t, l, c, p)
			} else if !strings.Contains(err.Error(), "InvalidIdentityToken") {
				t.Errorf("error %q; want InvalidIdentityToken", err)
			}
		})
	}
}

func TestIssueAssumeRole(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TokenSource = nil }) // assume_role needs no JWT issuer
	p := decode(t, e.iss, assumeParams+"\nsession_tags: {team: analytics}")
	l := testLease(20 * time.Minute)
	l.Subject = "spiffe://example.org/ns/analytics/sa/reports-" + strings.Repeat("x", 80)
	c, err := e.issue(t, l, p)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	e.verify(t, l, c, p)
	call := e.sts.recorded()[0]
	if call.Action != "AssumeRole" || len(call.SourceIdentity) != 64 || !strings.HasPrefix(call.SourceIdentity, "example.org+ns+analytics+sa+reports-") {
		t.Errorf("Action %q SourceIdentity %q", call.Action, call.SourceIdentity)
	}
	if len(call.Tags) != 4 || call.Tags["team"] != "analytics" {
		t.Errorf("Tags %v", call.Tags)
	}
	if len(e.jwt.minted()) != 0 {
		t.Error("assume_role minted a web identity token")
	}

	if _, err := e.iss.DecodeParams(node(t, webParams)); err == nil || !strings.Contains(err.Error(), "Config.TokenSource") {
		t.Errorf("web_identity params without a TokenSource: %v; want an error naming Config.TokenSource", err)
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		name       string
		params     string
		roleMax    time.Duration
		ttl        time.Duration
		issuedAgo  time.Duration // the lease was created this long ago
		wantSecs   int           // DurationSeconds asked for (±2s of elapsed time)
		wantErr    error
		wantInErr  string
		wantCalled bool
	}{
		{name: "15m lease refused", ttl: 15 * time.Minute, wantErr: issuer.ErrRejected, wantInErr: "lasts 15m; STS sessions last at least 15m and must end before the lease: set ttl >= 16m"},
		{name: "10m lease refused", ttl: 10 * time.Minute, wantErr: issuer.ErrRejected, wantInErr: "STS sessions last at least 15m"},
		{name: "16m lease", ttl: 16 * time.Minute, wantSecs: 16*60 - 30, wantCalled: true},
		{name: "20m lease", ttl: 20 * time.Minute, wantSecs: 20*60 - 30, wantCalled: true},
		{name: "lease longer than the role allows", ttl: 2 * time.Hour, wantSecs: 3600, wantCalled: true},
		{name: "12h role", params: "\nmax_session_duration: 12h", roleMax: 12 * time.Hour, ttl: 12 * time.Hour, wantSecs: 12*3600 - 30, wantCalled: true},
		{name: "too little left", ttl: 70 * time.Minute, issuedAgo: 60 * time.Minute, wantErr: issuer.ErrRejected, wantInErr: "left, too little for a 15m STS session"},
		{name: "params above the role's real maximum", params: "\nmax_session_duration: 2h", ttl: 2 * time.Hour, wantSecs: 7200 - 30,
			wantCalled: true, wantErr: issuer.ErrRejected, wantInErr: "ValidationError, HTTP 400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			if tc.roleMax != 0 {
				r := e.sts.roles[roleARN]
				r.MaxSession = tc.roleMax
				e.sts.roles[roleARN] = r
			}
			p := decode(t, e.iss, webParams+tc.params)
			l := testLease(tc.ttl)
			l.IssuedAt = l.IssuedAt.Add(-tc.issuedAgo)
			l.ExpiresAt = l.ExpiresAt.Add(-tc.issuedAgo)
			c, err := e.issue(t, l, p)
			calls := e.sts.recorded()
			attempts := e.sts.attemptsOf("AssumeRoleWithWebIdentity")
			if tc.wantCalled != (attempts > 0) {
				t.Fatalf("STS called %d times; want called = %v", attempts, tc.wantCalled)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantInErr) || !strings.Contains(err.Error(), `"s3-reports-read"`) {
					t.Fatalf("Issue = %v; want %v containing %q and the entitlement", err, tc.wantErr, tc.wantInErr)
				}
				if c != nil {
					t.Error("credential returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			got := calls[0].DurationSeconds
			if got > tc.wantSecs || got < tc.wantSecs-2 {
				t.Errorf("DurationSeconds %d; want %d (less the time the test took)", got, tc.wantSecs)
			}
			if c.ExpiresAt.After(l.ExpiresAt) {
				t.Errorf("session ends %v, after the lease (%v)", c.ExpiresAt, l.ExpiresAt)
			}
			e.verify(t, l, c, p)
		})
	}
}

func TestTTLBounds(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		params   string
		min, max time.Duration
	}{
		{webParams, 16 * time.Minute, time.Hour},
		{webParams + "\nmax_session_duration: 12h", 16 * time.Minute, 12 * time.Hour},
		{webParams + "\nmax_session_duration: 90m", 16 * time.Minute, 90 * time.Minute},
	} {
		min, max := decode(t, e.iss, tc.params).TTLBounds()
		if min != tc.min || max != tc.max {
			t.Errorf("%q: TTLBounds = %v, %v; want %v, %v", tc.params, min, max, tc.min, tc.max)
		}
	}
	if min, max := (Params{}).TTLBounds(); min != MinTTL || max != DefaultMaxSessionDuration {
		t.Errorf("zero Params: TTLBounds = %v, %v", min, max)
	}
}

func TestSessionOutlivingLeaseIsDropped(t *testing.T) {
	e := newEnv(t, nil)
	e.sts.skew = 2 * time.Minute // STS's clock far ahead of the broker's
	p := decode(t, e.iss, webParams)
	l := testLease(20 * time.Minute)
	c, err := e.issue(t, l, p)
	if !errors.Is(err, issuer.ErrUnavailable) || c != nil || !strings.Contains(err.Error(), "after the lease") {
		t.Fatalf("Issue = %v, %v; want ErrUnavailable: the session would outlive the lease", c, err)
	}
	if !strings.Contains(e.logs.String(), "STS session would outlive its lease; dropped") {
		t.Error("the dropped session was not logged")
	}
	errs := &errorTexts{}
	errs.add(err)
	e.assertNoSecrets(t, errs)
}

func TestRenew(t *testing.T) {
	e := newEnv(t, nil)
	p := decode(t, e.iss, webParams)
	l := testLease(20 * time.Minute)
	first, err := e.issue(t, l, p)
	if err != nil {
		t.Fatal(err)
	}
	active := l.Clone()
	active.State = lease.StateActive
	active.ExternalRef = first.ExternalRef

	newExp := l.ExpiresAt.Add(20 * time.Minute)
	c, err := e.iss.Renew(context.Background(), active, p, newExp)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	renewed := active.Clone()
	renewed.ExpiresAt = newExp
	e.verify(t, renewed, c, p)
	calls := e.sts.recorded()
	if len(calls) != 2 || calls[1].RoleSessionName != l.ID || calls[1].DurationSeconds <= calls[0].DurationSeconds {
		t.Errorf("renewal asked for session %q of %ds after %ds", calls[1].RoleSessionName, calls[1].DurationSeconds, calls[0].DurationSeconds)
	}
	if c.AccessKeyID == first.AccessKeyID || c.ExternalRef != first.ExternalRef {
		t.Errorf("renewal: same keys %v, ExternalRef %q vs %q", c.AccessKeyID == first.AccessKeyID, c.ExternalRef, first.ExternalRef)
	}

	// Renewing to a time too close for a 15 minute session.
	old := active.Clone()
	old.IssuedAt = old.IssuedAt.Add(-time.Hour)
	_, err = e.iss.Renew(context.Background(), old, p, time.Now().Add(10*time.Minute))
	if !errors.Is(err, issuer.ErrRejected) || !strings.Contains(err.Error(), "too little for a 15m STS session") {
		t.Errorf("Renew to 10m from now = %v; want ErrRejected", err)
	}
	// Past the hard end.
	if _, err := e.iss.Renew(context.Background(), active, p, l.HardEnd.Add(time.Second)); !errors.Is(err, lease.ErrPastHardEnd) {
		t.Errorf("Renew past the hard end = %v", err)
	}
	// Not active.
	if _, err := e.iss.Renew(context.Background(), l, p, newExp); !errors.Is(err, lease.ErrWrongState) {
		t.Errorf("Renew of a pending lease = %v", err)
	}
}

func TestRevokeIsHonest(t *testing.T) {
	e := newEnv(t, nil)
	p := decode(t, e.iss, webParams)
	l := testLease(20 * time.Minute)
	c, err := e.issue(t, l, p)
	if err != nil {
		t.Fatal(err)
	}
	r := l.Clone()
	r.State = lease.StateRevoking
	r.ExternalRef = c.ExternalRef
	for range 2 {
		if err := e.iss.Revoke(context.Background(), r); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
	}
	if len(e.sts.recorded()) != 1 {
		t.Error("Revoke called STS")
	}
	// The session still works: that is what Revocability says.
	e.verify(t, l, c, p)
	if ok, reason := e.iss.Revocability(p); ok || reason != NoKillSwitchReason {
		t.Errorf("Revocability = %v, %q", ok, reason)
	}
	if ok, reason := e.iss.Revocability(decode(t, e.iss, webParams+"\nrevoke_sessions_policy: true")); ok || reason != RevocableReason {
		t.Errorf("Revocability with the kill switch = %v, %q", ok, reason)
	}
}

func TestErrorMapping(t *testing.T) {
	const maxAttempts = 3
	for _, tc := range []struct {
		name         string
		mode         string
		fault        awsFault
		failAttempts int // fail this many attempts, then succeed; 0: always
		want         error
		wantAttempts int
		wantInErr    string
	}{
		{name: "AccessDenied", fault: awsFault{403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"}, want: issuer.ErrRejected, wantAttempts: 1, wantInErr: "AccessDenied, HTTP 403, request id req-"},
		{name: "RegionDisabled", fault: awsFault{403, "RegionDisabledException", "STS is not activated in this region for account:123456789012"}, want: issuer.ErrRejected, wantAttempts: 1, wantInErr: "RegionDisabledException"},
		{name: "MalformedPolicyDocument", fault: awsFault{400, "MalformedPolicyDocument", "Syntax errors in policy"}, want: issuer.ErrRejected, wantAttempts: 1, wantInErr: "session_policy"},
		{name: "InvalidIdentityToken", fault: awsFault{400, "InvalidIdentityToken", "No OpenIDConnect provider found"}, want: issuer.ErrRejected, wantAttempts: 1, wantInErr: "IAM OIDC provider"},
		{name: "ExpiredToken of the web identity", fault: awsFault{400, "ExpiredTokenException", "Token expired"}, want: issuer.ErrRejected, wantAttempts: 1, wantInErr: "clock"},
		{name: "IDPRejectedClaim", fault: awsFault{403, "IDPRejectedClaim", "Token claims do not match the conditions"}, want: issuer.ErrRejected, wantAttempts: 1},
		{name: "Throttling", fault: awsFault{400, "Throttling", "Rate exceeded"}, want: issuer.ErrUnavailable, wantAttempts: maxAttempts, wantInErr: "after 3 attempts"},
		{name: "Throttling then success", fault: awsFault{400, "Throttling", "Rate exceeded"}, failAttempts: 2, wantAttempts: 3},
		{name: "500", fault: awsFault{500, "InternalFailure", "oops"}, want: issuer.ErrUnavailable, wantAttempts: maxAttempts, wantInErr: "HTTP 500"},
		{name: "503", fault: awsFault{503, "ServiceUnavailable", "later"}, want: issuer.ErrUnavailable, wantAttempts: maxAttempts},
		{name: "IDPCommunicationError", fault: awsFault{400, "IDPCommunicationError", "could not reach the IdP"}, want: issuer.ErrUnavailable, wantAttempts: maxAttempts},
		{name: "assume_role AccessDenied", mode: "assume_role", fault: awsFault{403, "AccessDenied", "User is not authorized to perform: sts:TagSession"}, want: issuer.ErrRejected, wantAttempts: 1},
		{name: "assume_role Throttling retried", mode: "assume_role", fault: awsFault{400, "Throttling", "Rate exceeded"}, want: issuer.ErrUnavailable, wantAttempts: maxAttempts},
		{name: "assume_role bad key", mode: "assume_role", fault: awsFault{403, "InvalidClientTokenId", "The security token included in the request is invalid"}, want: issuer.ErrRejected, wantAttempts: 1, wantInErr: "credentials are not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			action, params := "AssumeRoleWithWebIdentity", webParams
			if tc.mode == "assume_role" {
				action, params = "AssumeRole", assumeParams
			}
			e.sts.echo = true // the fault echoes the request, token included
			e.sts.fail = func(a string, n int) *awsFault {
				if a != action || (tc.failAttempts > 0 && n > tc.failAttempts) {
					return nil
				}
				f := tc.fault
				return &f
			}
			p := decode(t, e.iss, params)
			l := testLease(20 * time.Minute)
			c, err := e.issue(t, l, p)
			if got := e.sts.attemptsOf(action); got != tc.wantAttempts {
				t.Errorf("STS saw %d attempts; want %d", got, tc.wantAttempts)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				e.verify(t, l, c, p)
				return
			}
			if !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("Issue = %v, %v; want %v", c, err, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, `entitlement "s3-reports-read"`) || !strings.Contains(msg, tc.fault.Code) || !strings.Contains(msg, tc.wantInErr) {
				t.Errorf("error %q; want the entitlement, the code %s and %q", msg, tc.fault.Code, tc.wantInErr)
			}
			if strings.Contains(msg, tc.fault.Message) || strings.Contains(msg, "request was") {
				t.Errorf("error %q carries AWS's message text", msg)
			}
			if !strings.Contains(e.logs.String(), "code="+tc.fault.Code) {
				t.Errorf("the refusal was not logged with its code:\n%s", e.logs.String())
			}
			errs := &errorTexts{}
			errs.add(err)
			e.assertNoSecrets(t, errs)
		})
	}
}

// TestFederationRefusals lets the fakes refuse for real: the trust policy,
// the audience, the provider and the JWKS.
func TestFederationRefusals(t *testing.T) {
	for _, tc := range []struct {
		name      string
		setup     func(e *env)
		mod       func(c *Config)
		want      error
		wantInErr string
	}{
		{name: "sub not in the trust policy", setup: func(e *env) {
			r := e.sts.roles[roleARN]
			r.TrustSubs = []string{"spiffe://example.org/ns/other/*"}
			e.sts.roles[roleARN] = r
		}, want: issuer.ErrRejected, wantInErr: "AccessDenied"},
		{name: "wrong audience", mod: func(c *Config) { c.Audience = "mayfly" }, want: issuer.ErrRejected, wantInErr: "InvalidIdentityToken"},
		{name: "no OIDC provider for the issuer", setup: func(e *env) { e.sts.issuer = "https://other.example.org" }, want: issuer.ErrRejected, wantInErr: "InvalidIdentityToken"},
		{name: "JWKS unreachable", setup: func(e *env) { e.jwt.srv.Close() }, want: issuer.ErrUnavailable, wantInErr: "IDPCommunicationError"},
		{name: "STS unreachable", setup: func(e *env) { e.sts.srv.Close() }, want: issuer.ErrUnavailable, wantInErr: "could not reach AWS"},
		{name: "token source down", setup: func(e *env) { e.jwt.fail = errors.New("jwt: signing key unavailable") }, want: issuer.ErrUnavailable, wantInErr: "web identity token"},
		{name: "token source refuses", setup: func(e *env) { e.jwt.fail = fmt.Errorf("jwt: lifetime too long: %w", issuer.ErrRejected) }, want: issuer.ErrRejected, wantInErr: "web identity token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.mod)
			if tc.setup != nil {
				tc.setup(e)
			}
			p := decode(t, e.iss, webParams)
			c, err := e.issue(t, testLease(20*time.Minute), p)
			if !errors.Is(err, tc.want) || c != nil || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("Issue = %v, %v; want %v containing %q", c, err, tc.want, tc.wantInErr)
			}
			errs := &errorTexts{}
			errs.add(err)
			e.assertNoSecrets(t, errs)
		})
	}
}

func TestCallTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CallTimeout = 300 * time.Millisecond; c.MaxAttempts = 1 })
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	e.sts.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	start := time.Now()
	_, err := e.issue(t, testLease(20*time.Minute), decode(t, e.iss, webParams))
	if !errors.Is(err, issuer.ErrUnavailable) {
		t.Fatalf("Issue against a hanging STS = %v; want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Issue took %v; CallTimeout is 300ms", d)
	}
}

func TestKillSwitch(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()

	off := decode(t, e.iss, webParams)
	if err := e.iss.KillSwitch(ctx, off, time.Now()); !errors.Is(err, ErrKillSwitchDisabled) {
		t.Fatalf("KillSwitch without revoke_sessions_policy = %v; want ErrKillSwitchDisabled", err)
	}
	if _, att := e.iam.state(); att["PutRolePolicy"]+att["GetRolePolicy"] != 0 {
		n := att["PutRolePolicy"] + att["GetRolePolicy"]
		t.Fatalf("IAM called %d times for a disabled kill switch", n)
	}

	on := decode(t, e.iss, webParams+"\nrevoke_sessions_policy: true")
	before := time.Date(2031, 3, 4, 5, 6, 7, 500_000_000, time.UTC)
	if err := e.iss.KillSwitch(ctx, on, before); err != nil {
		t.Fatalf("KillSwitch: %v", err)
	}
	puts, _ := e.iam.state()
	if len(puts) != 1 {
		t.Fatalf("PutRolePolicy called %d times", len(puts))
	}
	put := puts[0]
	if put.RoleName != "reports-read" || put.PolicyName != KillSwitchPolicyName {
		t.Errorf("PutRolePolicy(%q, %q)", put.RoleName, put.PolicyName)
	}
	var doc struct {
		Version   string
		Statement []struct {
			Effect, Action, Resource string
			Condition                map[string]map[string]string
		}
	}
	if err := json.Unmarshal([]byte(put.PolicyDocument), &doc); err != nil {
		t.Fatalf("policy document: %v", err)
	}
	st := doc.Statement[0]
	if doc.Version != "2012-10-17" || len(doc.Statement) != 1 || st.Effect != "Deny" || st.Action != "*" || st.Resource != "*" ||
		st.Condition["DateLessThan"]["aws:TokenIssueTime"] != "2031-03-04T05:06:08Z" {
		t.Errorf("policy %s; want Deny * * with aws:TokenIssueTime < 2031-03-04T05:06:08Z (rounded up)", put.PolicyDocument)
	}

	// An earlier cutoff never weakens the one in place; a later one moves it.
	err := e.iss.KillSwitch(ctx, on, before.Add(-time.Hour))
	if puts, _ := e.iam.state(); err != nil || len(puts) != 1 {
		t.Errorf("earlier KillSwitch = %v, %d puts; want the later policy kept", err, len(puts))
	}
	err = e.iss.KillSwitch(ctx, on, before.Add(time.Hour))
	if puts, _ := e.iam.state(); err != nil || len(puts) != 2 {
		t.Errorf("later KillSwitch = %v, %d puts; want the policy moved", err, len(puts))
	}

	// A role with a path: the role name is the last part.
	if err := e.iss.KillSwitch(ctx, decode(t, e.iss, "role_arn: arn:aws:iam::123456789012:role/team/a/x\nrevoke_sessions_policy: true"), before); err != nil {
		t.Fatalf("KillSwitch on a role with a path: %v", err)
	}
	puts, _ = e.iam.state()
	if got := puts[len(puts)-1].RoleName; got != "x" {
		t.Errorf("RoleName %q; want x", got)
	}
}

func TestKillSwitchErrors(t *testing.T) {
	for _, tc := range []struct {
		name         string
		params       string
		fault        *awsFault
		want         error
		wantInErr    string
		wantAttempts int
	}{
		{name: "no such role", params: "role_arn: arn:aws:iam::123456789012:role/gone\nrevoke_sessions_policy: true", want: issuer.ErrRejected, wantInErr: "the role does not exist", wantAttempts: 1},
		{name: "AccessDenied", fault: &awsFault{403, "AccessDenied", "not authorized to perform iam:PutRolePolicy"}, want: issuer.ErrRejected, wantInErr: "AccessDenied", wantAttempts: 1},
		{name: "Throttling", fault: &awsFault{400, "Throttling", "Rate exceeded"}, want: issuer.ErrUnavailable, wantInErr: "after 3 attempts", wantAttempts: 3},
		{name: "500", fault: &awsFault{500, "ServiceFailure", "oops"}, want: issuer.ErrUnavailable, wantInErr: "HTTP 500", wantAttempts: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			if tc.fault != nil {
				e.iam.fail = func(a string, n int) *awsFault {
					if a == "PutRolePolicy" {
						f := *tc.fault
						return &f
					}
					return nil
				}
			}
			params := tc.params
			if params == "" {
				params = webParams + "\nrevoke_sessions_policy: true"
			}
			err := e.iss.KillSwitch(context.Background(), decode(t, e.iss, params), time.Now())
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantInErr) || !strings.Contains(err.Error(), "kill switch") {
				t.Fatalf("KillSwitch = %v; want %v containing %q", err, tc.want, tc.wantInErr)
			}
			if tc.fault != nil && strings.Contains(err.Error(), tc.fault.Message) {
				t.Errorf("error %q carries AWS's message", err)
			}
			if _, att := e.iam.state(); att["PutRolePolicy"] != tc.wantAttempts {
				got := att["PutRolePolicy"]
				t.Errorf("IAM saw %d PutRolePolicy attempts; want %d", got, tc.wantAttempts)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Region: "Europe"}, "Config.Region"},
		{Config{STSEndpoint: "sts.local"}, "Config.STSEndpoint"},
		{Config{IAMEndpoint: "ftp://x"}, "Config.IAMEndpoint"},
		{Config{MaxAttempts: -1}, "Config.MaxAttempts"},
		{Config{CallTimeout: time.Minute}, "shorter than SkewAllowance"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	iss, err := New(Config{})
	if err != nil {
		t.Fatalf("New(Config{}): %v", err)
	}
	if iss.cfg.Region != DefaultRegion || iss.cfg.Audience != DefaultAudience || iss.cfg.MaxAttempts != DefaultMaxAttempts {
		t.Errorf("defaults: %+v", iss.cfg)
	}
}
