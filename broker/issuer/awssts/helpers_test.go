package awssts

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

const (
	roleARN     = "arn:aws:iam::123456789012:role/reports-read"
	testSubject = "spiffe://example.org/ns/analytics/sa/reports"
)

// env is an Issuer wired to fakeSTS and fakeIAM, with the broker's real
// JWT issuer as its TokenSource.
type env struct {
	jwt  *brokerJWT
	sts  *fakeSTS
	iam  *fakeIAM
	iss  *Issuer
	logs *syncBuffer
	cfg  Config
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	return newEnvAlg(t, jwt.ES256, mod)
}

// newEnvAlg is newEnv with the broker's JWT issuer signing with alg.
func newEnvAlg(t *testing.T, alg string, mod func(*Config)) *env {
	t.Helper()
	e := &env{jwt: newBrokerJWT(t, alg), logs: &syncBuffer{}}
	e.sts = newFakeSTS(t, e.jwt)
	e.sts.roles[roleARN] = fakeRole{
		MaxSession:  time.Hour,
		TrustSubs:   []string{"spiffe://example.org/*"},
		TrustBroker: true,
	}
	e.iam = newFakeIAM(t, "reports-read", "x")
	e.cfg = Config{
		Region:      "eu-west-1",
		STSEndpoint: e.sts.srv.URL,
		IAMEndpoint: e.iam.srv.URL,
		TokenSource: e.jwt.source,
		Credentials: credentials.NewStaticCredentialsProvider(brokerKey.AccessKeyID, brokerKey.SecretAccessKey, ""),
		MaxBackoff:  time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&e.cfg)
	}
	iss, err := New(e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.iss = iss
	return e
}

func decode(t *testing.T, iss *Issuer, text string) Params {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	p, err := iss.DecodeParams(doc.Content[0])
	if err != nil {
		t.Fatalf("DecodeParams(%q): %v", text, err)
	}
	return p.(Params)
}

// testLease is a pending lease as the broker writes it.
func testLease(ttl time.Duration) *lease.Lease {
	now := time.Now().Truncate(time.Second)
	return &lease.Lease{
		ID:          lease.NewID(now),
		Subject:     testSubject,
		Entitlement: "s3-reports-read",
		GrantID:     "grant-1",
		Issuer:      Name,
		State:       lease.StatePending,
		IssuedAt:    now,
		ExpiresAt:   now.Add(ttl),
		HardEnd:     now.Add(4 * ttl),
		DueAt:       now.Add(time.Minute),
		Renewable:   true,
	}
}

func (e *env) issue(t *testing.T, l *lease.Lease, p any) (*issuer.Credential, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return e.iss.Issue(ctx, issuer.Request{
		Lease: l, Params: p,
		Bind: func(context.Context, string) error { t.Error("awssts called Bind"); return nil },
	})
}

// verify checks, at the fake, that c is a live session of l: the session
// the fake minted with these keys, named after the lease, for the caller,
// and usable: GetCallerIdentity signed with it answers with the
// assumed-role ARN that ends in the lease id.
func (e *env) verify(t *testing.T, l *lease.Lease, c *issuer.Credential, p Params) {
	t.Helper()
	if c.Kind != issuer.KindAWS {
		t.Fatalf("Kind %q; want aws", c.Kind)
	}
	s, ok := e.sts.session(c.AccessKeyID)
	if !ok {
		t.Fatalf("access key %q was not minted by STS", c.AccessKeyID)
	}
	if s.creds.SecretAccessKey != c.SecretAccessKey || s.creds.SessionToken != c.SessionToken {
		t.Error("secret key or session token differ from what STS minted")
	}
	if s.call.RoleSessionName != l.ID || s.call.RoleArn != p.RoleARN {
		t.Errorf("session %q of %q; want %q of %q", s.call.RoleSessionName, s.call.RoleArn, l.ID, p.RoleARN)
	}
	if !c.ExpiresAt.Equal(s.expires) || c.ExpiresAt.After(l.ExpiresAt) {
		t.Errorf("ExpiresAt %v, STS expiry %v, lease expiry %v", c.ExpiresAt, s.expires, l.ExpiresAt)
	}
	if c.ExternalRef != s.arn {
		t.Errorf("ExternalRef %q; want the assumed-role ARN %q", c.ExternalRef, s.arn)
	}
	switch p.Mode {
	case ModeWebIdentity:
		if s.sub != l.Subject {
			t.Errorf("token sub %q; want the lease subject %q", s.sub, l.Subject)
		}
		if s.call.Token.ID != l.ID {
			t.Errorf("token jti %q; want the lease id", s.call.Token.ID)
		}
	case ModeAssumeRole:
		if s.call.SourceIdentity != SourceIdentity(l.Subject) {
			t.Errorf("SourceIdentity %q; want %q", s.call.SourceIdentity, SourceIdentity(l.Subject))
		}
		for k, v := range map[string]string{TagLease: l.ID, TagEntitlement: l.Entitlement, TagSubject: l.Subject} {
			if s.call.Tags[k] != v {
				t.Errorf("session tag %s = %q; want %q", k, s.call.Tags[k], v)
			}
		}
		for k, v := range p.SessionTags {
			if s.call.Tags[k] != v {
				t.Errorf("session tag %s = %q; want %q", k, s.call.Tags[k], v)
			}
		}
		if s.call.Signer != brokerKey.AccessKeyID {
			t.Errorf("AssumeRole signed by %q", s.call.Signer)
		}
	}
	if s.call.Policy != p.SessionPolicy {
		t.Errorf("Policy %q; want %q", s.call.Policy, p.SessionPolicy)
	}

	client := sts.New(sts.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(e.sts.srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken),
	})
	out, err := client.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatalf("GetCallerIdentity with the credentials: %v", err)
	}
	if arn := aws.ToString(out.Arn); !strings.HasSuffix(arn, ":assumed-role/"+p.roleName()+"/"+l.ID) {
		t.Errorf("GetCallerIdentity ARN %q; want the role session named after lease %s", arn, l.ID)
	}
}

func node(t *testing.T, text string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return doc.Content[0]
}
