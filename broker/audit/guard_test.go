package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"log/slog"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/jwt"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// realCredentials returns credentials of every kind: a JWT minted by the
// broker's real jwt issuer for l, and the other kinds with secrets shaped
// like the real ones (a PEM key from crypto/ecdsa, AWS-style keys from
// crypto/rand, a Vault-policy-style password).
func realCredentials(t *testing.T, l *lease.Lease) []*issuer.Credential {
	t.Helper()
	iss, err := jwt.New(jwt.Config{IssuerURL: "https://mayfly.example.org", Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Issue(context.Background(), issuer.Request{Lease: l, Params: jwt.Params{Audience: []string{"sts.amazonaws.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok.Token, ".") != 2 {
		t.Fatalf("jwt issuer returned %d dots", strings.Count(tok.Token, "."))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	rnd := func(n int) string {
		b := make([]byte, n)
		rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	}
	return []*issuer.Credential{
		tok,
		{Kind: issuer.KindUsernamePassword, Username: "v-token-db-admin-x1y2", Password: vaultPassword(7), ExpiresAt: l.ExpiresAt},
		{Kind: issuer.KindCertificate, CertPEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", KeyPEM: keyPEM, ExpiresAt: l.ExpiresAt},
		{Kind: issuer.KindAWS, AccessKeyID: "ASIAY34FZKBOKMUTVV7A", SecretAccessKey: rnd(30), SessionToken: "FwoGZXIvYXdzE" + rnd(240), ExpiresAt: l.ExpiresAt},
		{Kind: issuer.KindOAuthToken, Token: "ya29." + strings.NewReplacer("+", "-", "/", "_").Replace(rnd(90)), Scopes: []string{"read"}, ExpiresAt: l.ExpiresAt},
		{Kind: issuer.KindRaw, Fields: map[string]string{"api_key": "sk_live_" + strings.NewReplacer("+", "", "/", "", "=", "").Replace(rnd(24))}, ExpiresAt: l.ExpiresAt},
	}
}

// vaultPassword is a password as Vault's default policy makes them: 20
// characters of letters, digits and '-', at least one of each class, from
// a fixed seed so the test is deterministic.
func vaultPassword(seed uint64) string {
	r := mrand.New(mrand.NewPCG(seed, seed))
	const cs = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
	b := []byte("A1a-")
	for len(b) < 20 {
		b = append(b, cs[r.IntN(len(cs))])
	}
	return string(b)
}

// secretsOf lists every secret value of c, whole.
func secretsOf(c *issuer.Credential) []string {
	var out []string
	for _, v := range []string{c.Token, c.Password, c.KeyPEM, c.SecretAccessKey, c.SessionToken} {
		if v != "" {
			out = append(out, v)
		}
	}
	for _, v := range c.Fields {
		out = append(out, v)
	}
	return out
}

// fragmentsOf is secretsOf plus every line of a multi-line secret (a PEM
// body line leaking on its own is a leak too), for searching outputs.
func fragmentsOf(c *issuer.Credential) []string {
	var out []string
	for _, v := range secretsOf(c) {
		out = append(out, v)
		for _, line := range strings.Split(v, "\n") {
			if len(line) >= 20 && !strings.HasPrefix(line, "-----") {
				out = append(out, line)
			}
		}
	}
	return out
}

func TestLooksLikeSecret(t *testing.T) {
	l := &lease.Lease{ID: lease.NewID(time.Now()), Subject: "spiffe://example.org/ns/prod/sa/billing",
		Entitlement: "db-admin", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	secret := map[string]string{}
	for _, c := range realCredentials(t, l) {
		for i, s := range secretsOf(c) {
			secret[fmt.Sprintf("%s #%d", c.Kind, i)] = s
		}
	}
	for name, s := range map[string]string{
		"password assignment": "connecting with password=hunter2",
		"token colon":         `{"token": "abc"}`,
		"bearer":              "Authorization Bearer abcdefgh12345678",
		"postgres url":        "postgres://admin:s3cr3t@db.internal:5432/app",
		"vault token":         "hvs.CAESIJlU3Kx7vX3zq0pZkX0lW8bQ",
		"github pat":          "ghp_" + strings.Repeat("aB3", 12),
		"rsa key":             "-----BEGIN RSA PRIVATE KEY-----",
		"jwt in prose":        "token was eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln and more",
		"unsecured jwt":       "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
		"pem line 1":          "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkhlz5E79kmnsttVU",
		"pem line 2":          "Nr2+uukDgu6Chkazbtrmp6ZhbwmhRANCAASdD/ZWGNOUSmjhlsOhov3prT9hkVil",
	} {
		secret[name] = s
	}
	for name, s := range secret {
		if shape, ok := LooksLikeSecret(s); !ok {
			t.Errorf("%s: not detected", name)
		} else if testing.Verbose() {
			t.Logf("%s: %s", name, shape)
		}
	}
	for _, s := range []string{
		"", "user:alice", "spiffe://example.org/ns/prod/sa/billing",
		"spiffe://example.org/ns/Prod/sa/Billing2Service", "db-admin", "AWS-Prod-ReadOnly-2024",
		lease.NewID(time.Now()), "01ARZ3NDEKTSV4RRFFQ69G5FAV", "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
		"d2e4ca33332e6a659fc61b6528a1802dfce5313bb08b77899f08763365a44e4a", "550e8400-e29b-41d4-a716-446655440000",
		"vault.prod.example.com", "db.prod.internal.example.org", "2030-01-02T03:04:05.123456789Z", "1h30m0s",
		"needs access to fix INC-1234 on billing-db (the nightly job failed)", "Alice.Smith2@example.com",
		"standing_grant", "not_granted", "kill_switch", "ttl_clamped", jwt.RevocableReason,
		"dial tcp 127.0.0.1:6379: connect: connection refused", "arn:aws:iam::123456789012:role/MayflyReadOnly",
		"v-token-db-admin-x1y2", "ASIAY34FZKBOKMUTVV7A", "ticket JIRA-42: rotate keys",
		"projects/my-project-123/serviceAccounts/deployer@my-project-123.iam.gserviceaccount.com",
	} {
		if shape, ok := LooksLikeSecret(s); ok {
			t.Errorf("%q: taken for %s", s, shape)
		}
	}
}

// TestNoSecretReachesAnySink pushes real credentials through every
// constructor and into every sink (JSONL file, stdout, Redis stream, the
// logs), and proves no token, password or key appears anywhere: the
// constructors that take a Credential read only its kind and expiry, and
// where a secret is pushed into a free-text parameter, Append refuses the
// event with ErrSecret, naming the field but not the value.
func TestNoSecretReachesAnySink(t *testing.T) {
	t.Run("in-process chain", func(t *testing.T) { testNoSecret(t, false) })
	t.Run("redis chain", func(t *testing.T) { testNoSecret(t, true) })
}

func testNoSecret(t *testing.T, withRedis bool) {
	ctx := context.Background()
	now := time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)
	l := &lease.Lease{ID: lease.NewID(now), Subject: "spiffe://example.org/ns/prod/sa/billing", Entitlement: "db-admin",
		GrantID: "g-billing", Issuer: "jwt", State: lease.StateActive, IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		HardEnd: now.Add(4 * time.Hour), DueAt: now.Add(time.Hour), Revocable: false, RevocableReason: jwt.RevocableReason,
		RevokeReason: lease.ReasonKillSwitch, RevokeRequestedAt: now.Add(time.Minute), RevokedAt: now.Add(time.Minute + time.Second)}
	creds := realCredentials(t, l)

	var logs, stdout bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()
	fs, err := NewFileSink(FileConfig{Path: filepath.Join(dir, "audit.jsonl"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Sinks:           []SinkConfig{{Sink: fs}, {Sink: &StdoutSink{W: &stdout}}},
		Signer:          newKey(t),
		Logger:          logger,
		CheckpointEvery: 5,
	}
	var rs *RedisStreamSink
	if withRedis {
		c := redisClient(t)
		rs, err = NewRedisStreamSink(c, RedisConfig{})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Chain = rs
	}
	lg, err := NewLog(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	var secrets []string
	var errText strings.Builder
	for _, c := range creds {
		secrets = append(secrets, fragmentsOf(c)...)
		// The constructors that take a credential.
		for _, e := range []Event{LeaseIssued(l, c), LeaseRenewed(l, c)} {
			if _, err := lg.Append(ctx, e); err != nil {
				t.Fatalf("%s with a %s credential: %v", e.Type, c.Kind, err)
			}
		}
		// Every constructor, with each secret where free text goes. The
		// lease's LastError and a policy error are system text: the
		// constructors redact them rather than fail.
		for _, s := range secretsOf(c) {
			l2 := l.Clone()
			l2.LastError = "backend said: " + s
			events := map[string]Event{
				"RequestCreated":       RequestCreated("r-1", l.Subject, l.Entitlement, time.Hour, s, "JIRA-1"),
				"RequestApproved":      RequestApproved("r-1", s, "g-1"),
				"RequestDenied":        RequestDenied("r-1", "user:bob", s),
				"RequestCancelled":     RequestCancelled(s, "user:alice"),
				"RequestExpired":       RequestExpired(s),
				"Decision":             Decision(DecisionInfo{Subject: l.Subject, Entitlement: l.Entitlement, Outcome: "deny", Reasons: []string{s}}),
				"GrantCreated":         GrantCreated("g-1", "r-1", l.Subject, s, "user:bob", now),
				"GrantEnded":           GrantEnded("g-1", "user:bob", s),
				"LeaseRevokeRequested": LeaseRevokeRequested(l, lease.Reason(s), "user:sec"),
				"LeaseRevoked":         LeaseRevoked(l2),
				"LeaseIrrevocable":     LeaseIrrevocable(l2),
				"BreakGlassUsed":       BreakGlassUsed(l.Subject, l.Entitlement, "g-bg", s, time.Hour, now),
				"ReviewCertified":      ReviewCertified(s, "user:owner", now),
				"ReviewRevoked":        ReviewRevoked("g-1", "user:owner", s),
				"ReviewOverdue":        ReviewOverdue(s, now),
				"PolicyReloaded":       PolicyReloaded("abc", errors.New("line 3: "+s)),
			}
			for name, e := range events {
				_, err := lg.Append(ctx, e)
				switch name {
				case "LeaseRevoked", "LeaseIrrevocable", "PolicyReloaded":
					if err != nil {
						t.Errorf("%s: system text must be redacted, not refused: %v", name, err)
					}
				default:
					if !errors.Is(err, ErrSecret) {
						t.Errorf("%s with a %s secret in free text: err = %v, want ErrSecret", name, c.Kind, err)
					}
				}
				if err != nil {
					errText.WriteString(err.Error() + "\n")
				}
			}
		}
	}
	if err := lg.Close(ctx); err != nil {
		t.Fatal(err)
	}

	outputs := map[string][]byte{"stdout": stdout.Bytes(), "logs": logs.Bytes(), "errors": []byte(errText.String())}
	if outputs["file"], err = os.ReadFile(fs.cfg.Path); err != nil {
		t.Fatal(err)
	}
	if rs != nil {
		outputs["redis"] = []byte(strings.Join(streamRaws(t, rs.c, rs), "\n"))
	}
	for name, out := range outputs {
		if s := findSecret(out, secrets); s != "" {
			t.Errorf("%s holds a secret (%d bytes of it)", name, len(s))
		}
	}
	if n := bytes.Count(outputs["file"], []byte("\n")); n < 2*len(creds) {
		t.Fatalf("file has %d events, want at least %d", n, 2*len(creds))
	}
	if !strings.Contains(errText.String(), "Fields[reason] looks like") {
		t.Errorf("errors do not name the field: %s", errText.String())
	}
	if rep := mustVerify(t, JSONLFile{Path: fs.cfg.Path}, lg.PublicKey()); !rep.OK() {
		t.Fatalf("verify: %s", rep)
	}
}

func TestAppendRefusesBadEvents(t *testing.T) {
	fl := newFileLog(t, nil)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		e    Event
		want error
		msg  string
	}{
		"no type":         {Event{}, ErrInvalid, "audit: invalid event: Type is required"},
		"bad type":        {Event{Type: "Lease Issued"}, ErrInvalid, `audit: invalid event: Type "Lease Issued" is not dotted lower-case words`},
		"reserved type":   {Event{Type: TypeCheckpoint}, ErrInvalid, "audit: invalid event: Type audit.checkpoint is written by the log itself"},
		"seq set":         {Event{Type: "a", Seq: 3}, ErrInvalid, "audit: invalid event: Seq, Prev, Hash and Checkpoint are set by the log"},
		"bad field key":   {Event{Type: "a", Fields: map[string]string{"Bad Key": "x"}}, ErrInvalid, `audit: invalid event: Fields key "Bad Key" is not a lower-case name`},
		"invalid utf8":    {Event{Type: "a", Subject: "\xff"}, ErrInvalid, "audit: invalid event: Subject is not valid UTF-8"},
		"too long":        {Event{Type: "a", Actor: strings.Repeat("a", MaxValueLen+1)}, ErrInvalid, "audit: invalid event: Actor is 4097 bytes, at most 4096"},
		"secret in actor": {Event{Type: "a", Actor: "password=x"}, ErrSecret, "audit: value looks like a secret: Actor looks like a secret assignment"},
		"pem in reasons":  {Event{Type: "a", Reasons: []string{"ok", "-----BEGIN PRIVATE KEY-----"}}, ErrSecret, "audit: value looks like a secret: Reasons[1] looks like a PEM block"},
	} {
		_, err := fl.Append(ctx, tc.e)
		if !errors.Is(err, tc.want) || err.Error() != tc.msg {
			t.Errorf("%s: err = %v, want %q", name, err, tc.msg)
		}
	}
	if st := fl.Stats(); st.Head.Seq != 0 {
		t.Fatalf("refused events were recorded: head %d", st.Head.Seq)
	}
}
