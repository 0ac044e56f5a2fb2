// Package issuertest is the conformance suite of the issuer.Issuer seam.
//
// Every backend (jwt, vault, awssts, ...) runs it in one line from its own
// tests, against the real backend wherever one can run:
//
//	func TestConformance(t *testing.T) {
//		issuertest.Run(t, issuertest.Harness{
//			New:         func(t *testing.T) issuer.Issuer { return newIssuer(t) },
//			ValidParams: []string{"audience: sts.amazonaws.com"},
//			InvalidParams: []issuertest.InvalidParams{
//				{Name: "unknown key", YAML: "audiense: x", WantErr: `unknown key "audiense"`},
//			},
//			Verify: verifyAtBackend,
//		})
//	}
//
// The suite checks the contract written on issuer.Issuer: strict params,
// native expiry no later than the lease, Bind before minting, one handle per
// lease across retries, renewal, idempotent revocation (also of leases the
// backend never saw), redacted String and slog output, and cancelled
// contexts.
package issuertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// Harness is what an implementation gives the suite.
type Harness struct {
	// New returns a fresh Issuer connected to the backend under test. It is
	// called once per subtest; clean up with t.Cleanup.
	New func(t *testing.T) issuer.Issuer

	// ValidParams are entitlement issuer sections (YAML mappings) that
	// DecodeParams must accept. The first one is used for every issuance in
	// the suite, so it must work at the backend. At least one is required.
	ValidParams []string

	// InvalidParams are sections DecodeParams must reject.
	InvalidParams []InvalidParams

	// Verify checks, at the backend, that the credential is real and usable
	// for the lease (a signature and claims check, a login, an API call).
	// It fails t when it is not. Required.
	Verify func(t *testing.T, l *lease.Lease, c *issuer.Credential)

	// IsRevoked reports whether the backend no longer honours the
	// credential. Nil when the backend cannot end a credential before its
	// native expiry (a bearer JWT, an STS session); then the suite only
	// checks that Revoke succeeds and is idempotent.
	IsRevoked func(t *testing.T, l *lease.Lease, c *issuer.Credential) bool

	// UnseenRefs are external references of the backend's shape that the
	// backend never issued (an unknown Vault accessor). Revoke of a lease
	// carrying one must succeed. The suite always also tries an empty
	// reference (a pending lease reaped before Bind).
	UnseenRefs []string

	// TTL is the lease lifetime the suite uses; 15 minutes when zero (the
	// shortest session AWS STS grants). Renewal moves the expiry by TTL/2.
	TTL time.Duration

	// Now is the clock the suite builds leases with; time.Now when nil. It
	// should be the clock the Issuer uses.
	Now func() time.Time

	// Entitlement names the entitlement of the suite's leases;
	// "issuertest" when empty.
	Entitlement string
}

// InvalidParams is one issuer section DecodeParams must reject.
type InvalidParams struct {
	// Name names the subtest.
	Name string
	// YAML is the section (a mapping, or any YAML value).
	YAML string
	// WantErr is a substring the error must contain (say, the offending key).
	WantErr string
}

// knownKinds are the credential shapes the API can carry.
var knownKinds = map[issuer.Kind]bool{
	issuer.KindJWT:              true,
	issuer.KindUsernamePassword: true,
	issuer.KindCertificate:      true,
	issuer.KindAWS:              true,
	issuer.KindOAuthToken:       true,
	issuer.KindRaw:              true,
}

// Run runs the conformance suite against the implementation h describes.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil || h.Verify == nil || len(h.ValidParams) == 0 {
		t.Fatal("issuertest: Harness needs New, Verify and at least one ValidParams")
	}
	s := &suite{h: h}
	if s.h.TTL <= 0 {
		s.h.TTL = 15 * time.Minute
	}
	if s.h.Now == nil {
		s.h.Now = time.Now
	}
	if s.h.Entitlement == "" {
		s.h.Entitlement = "issuertest"
	}

	t.Run("Name", s.testName)
	t.Run("DecodeParams", s.testDecodeParams)
	t.Run("Revocability", s.testRevocability)
	t.Run("Issue", s.testIssue)
	t.Run("BindBeforeMint", s.testBindBeforeMint)
	t.Run("IssueTwiceSameHandle", s.testIssueTwice)
	t.Run("Renew", s.testRenew)
	t.Run("Revoke", s.testRevoke)
	t.Run("RevokeUnseen", s.testRevokeUnseen)
	t.Run("NoSecretInOutput", s.testNoSecret)
	t.Run("CancelledContext", s.testCancelled)
	t.Run("ConcurrentIssue", s.testConcurrent)
}

type suite struct{ h Harness }

// node parses YAML text into the node DecodeParams gets: the value under
// the issuer's name (a mapping, usually), not the document around it.
func node(t *testing.T, text string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("harness YAML %q does not parse: %v", text, err)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0]
	}
	if doc.Kind == 0 { // empty text
		return nil
	}
	return &doc
}

func (s *suite) params(t *testing.T, iss issuer.Issuer) any {
	t.Helper()
	p, err := iss.DecodeParams(node(t, s.h.ValidParams[0]))
	if err != nil {
		t.Fatalf("DecodeParams(ValidParams[0]): %v", err)
	}
	return p
}

// pending builds a pending lease the way the broker writes it before
// calling the backend.
func (s *suite) pending(iss issuer.Issuer, params any) *lease.Lease {
	now := s.h.Now().Truncate(time.Second)
	revocable, reason := iss.Revocability(params)
	return &lease.Lease{
		ID:              lease.NewID(now),
		Subject:         "spiffe://example.org/issuertest/workload",
		Entitlement:     s.h.Entitlement,
		GrantID:         "grant-issuertest",
		Issuer:          iss.Name(),
		State:           lease.StatePending,
		IssuedAt:        now,
		ExpiresAt:       now.Add(s.h.TTL),
		HardEnd:         now.Add(4 * s.h.TTL),
		DueAt:           now.Add(time.Minute),
		Renewable:       true,
		Revocable:       revocable,
		RevocableReason: reason,
	}
}

// issued is one successful Issue and what the suite saw of it.
type issued struct {
	lease *lease.Lease // the lease as the store holds it after activation
	cred  *issuer.Credential
	bound []string // refs passed to Bind
}

// handle is the backend handle the credential is bound to: the bound
// reference, else the credential's ExternalRef, else the lease id.
func (x issued) handle() string {
	if x.cred.ExternalRef != "" {
		return x.cred.ExternalRef
	}
	if len(x.bound) > 0 {
		return x.bound[len(x.bound)-1]
	}
	return x.lease.ID
}

// issue runs Issue for l and checks what every credential must satisfy.
func (s *suite) issue(t *testing.T, iss issuer.Issuer, l *lease.Lease, params any) issued {
	t.Helper()
	var (
		mu    sync.Mutex
		bound []string
	)
	bind := func(ctx context.Context, ref string) error {
		if ctx == nil {
			t.Error("Bind called with a nil context")
		}
		if ref == "" {
			t.Error("Bind called with an empty ref")
		}
		mu.Lock()
		defer mu.Unlock()
		bound = append(bound, ref)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := iss.Issue(ctx, issuer.Request{Lease: l.Clone(), Params: params, Bind: bind})
	if err != nil {
		t.Fatalf("Issue(%s): %v", l.ID, err)
	}
	if c == nil {
		t.Fatalf("Issue(%s) returned nil credential and nil error", l.ID)
	}
	checkCredential(t, l, c)
	mu.Lock()
	defer mu.Unlock()
	if len(bound) > 1 {
		t.Errorf("Bind called %d times in one Issue; want at most once", len(bound))
	}
	if len(bound) == 1 && c.ExternalRef != "" && !strings.HasPrefix(c.ExternalRef, bound[0]) {
		// ExternalRef may be empty, the bound handle, or the bound handle
		// with more after it (what was minted under it); anything else
		// would leave the lease pointing at a handle that revokes nothing.
		t.Errorf("credential ExternalRef %q does not extend the bound ref %q", c.ExternalRef, bound[0])
	}
	// The lease as the store holds it after Activate: the bound handle,
	// replaced by the credential's ExternalRef when that is set.
	active := l.Clone()
	active.State = lease.StateActive
	active.DueAt = active.ExpiresAt
	if len(bound) > 0 {
		active.ExternalRef = bound[0]
	}
	if c.ExternalRef != "" {
		active.ExternalRef = c.ExternalRef
	}
	return issued{lease: active, cred: c, bound: append([]string(nil), bound...)}
}

func checkCredential(t *testing.T, l *lease.Lease, c *issuer.Credential) {
	t.Helper()
	if !knownKinds[c.Kind] {
		t.Errorf("credential Kind %q is not one of the issuer.Kind constants", c.Kind)
	}
	if c.ExpiresAt.IsZero() {
		t.Error("credential ExpiresAt is zero; every credential carries its native expiry")
	}
	if c.ExpiresAt.After(l.ExpiresAt) {
		t.Errorf("credential ExpiresAt %v is after the lease's %v", c.ExpiresAt, l.ExpiresAt)
	}
	if !c.ExpiresAt.After(l.IssuedAt) {
		t.Errorf("credential ExpiresAt %v is not after the lease's IssuedAt %v", c.ExpiresAt, l.IssuedAt)
	}
	var secret bool
	switch c.Kind {
	case issuer.KindJWT, issuer.KindOAuthToken:
		secret = c.Token != ""
	case issuer.KindUsernamePassword:
		secret = c.Username != "" && c.Password != ""
	case issuer.KindCertificate:
		secret = c.CertPEM != "" && c.KeyPEM != ""
	case issuer.KindAWS:
		secret = c.AccessKeyID != "" && c.SecretAccessKey != ""
	case issuer.KindRaw:
		secret = len(c.Fields) > 0
	}
	if !secret {
		t.Errorf("credential of kind %q lacks the fields that kind carries", c.Kind)
	}
}

func (s *suite) testName(t *testing.T) {
	iss := s.h.New(t)
	name := iss.Name()
	if name == "" || name != strings.ToLower(name) || strings.ContainsAny(name, " \t\n") {
		t.Errorf("Name() = %q; want a non-empty lower-case word the policy can use", name)
	}
}

func (s *suite) testDecodeParams(t *testing.T) {
	iss := s.h.New(t)
	for i, text := range s.h.ValidParams {
		t.Run(fmt.Sprintf("valid/%d", i), func(t *testing.T) {
			p, err := iss.DecodeParams(node(t, text))
			if err != nil {
				t.Fatalf("DecodeParams(%q): %v", text, err)
			}
			if p == nil {
				t.Fatalf("DecodeParams(%q) returned nil params and nil error", text)
			}
		})
	}
	for _, c := range s.h.InvalidParams {
		t.Run("invalid/"+c.Name, func(t *testing.T) {
			p, err := iss.DecodeParams(node(t, c.YAML))
			if err == nil {
				t.Fatalf("DecodeParams(%q) = %#v, nil; want an error containing %q", c.YAML, p, c.WantErr)
			}
			if !strings.Contains(err.Error(), c.WantErr) {
				t.Errorf("DecodeParams(%q) error %q; want it to contain %q", c.YAML, err, c.WantErr)
			}
		})
	}
	t.Run("nil node", func(t *testing.T) {
		// An entitlement without the issuer's section: either valid
		// params or an error, never a panic.
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("DecodeParams(nil) panicked: %v", r)
			}
		}()
		_, _ = iss.DecodeParams(nil)
	})
}

func (s *suite) testRevocability(t *testing.T) {
	iss := s.h.New(t)
	revocable, reason := iss.Revocability(s.params(t, iss))
	if !revocable && reason == "" {
		t.Error("Revocability = false with no reason; the API must say why and what is done instead")
	}
	if !revocable && s.h.IsRevoked != nil {
		t.Error("Revocability = false but the harness has IsRevoked; one of them is wrong")
	}
}

func (s *suite) testIssue(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	l := s.pending(iss, params)
	x := s.issue(t, iss, l, params)
	s.h.Verify(t, x.lease, x.cred)
	if s.h.IsRevoked != nil && s.h.IsRevoked(t, x.lease, x.cred) {
		t.Error("IsRevoked = true for a credential just issued")
	}
}

func (s *suite) testBindBeforeMint(t *testing.T) {
	// What the suite can observe of "Bind before minting": when Bind fails
	// (the lease store is down), Issue fails and hands out nothing.
	iss := s.h.New(t)
	params := s.params(t, iss)
	l := s.pending(iss, params)
	errStore := errors.New("issuertest: lease store unavailable")
	called := 0
	c, err := iss.Issue(context.Background(), issuer.Request{
		Lease:  l.Clone(),
		Params: params,
		Bind: func(ctx context.Context, ref string) error {
			called++
			if ref == "" {
				t.Error("Bind called with an empty ref")
			}
			return errStore
		},
	})
	if called == 0 {
		if err != nil {
			t.Fatalf("Issue without calling Bind failed: %v", err)
		}
		checkCredential(t, l, c)
		return // this backend has no handle before the secret exists
	}
	if err == nil || c != nil {
		t.Fatalf("Issue after a failed Bind = %v, %v; want no credential and an error", c, err)
	}
}

func (s *suite) testIssueTwice(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	l := s.pending(iss, params)
	first := s.issue(t, iss, l, params)
	// The retry sees the lease as the store holds it: still pending, with
	// the handle recorded by the first Bind, if any.
	retry := l.Clone()
	if len(first.bound) > 0 {
		retry.ExternalRef = first.bound[len(first.bound)-1]
	}
	second := s.issue(t, iss, retry, params)
	if first.handle() != second.handle() {
		t.Errorf("two Issue calls for lease %s are bound to %q and %q; want one handle", l.ID, first.handle(), second.handle())
	}
	if first.cred.Kind != second.cred.Kind {
		t.Errorf("two Issue calls for one lease gave kinds %q and %q", first.cred.Kind, second.cred.Kind)
	}
	s.h.Verify(t, second.lease, second.cred)
}

func (s *suite) testRenew(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	l := s.pending(iss, params)
	x := s.issue(t, iss, l, params)

	newExp := x.lease.ExpiresAt.Add(s.h.TTL / 2)
	if newExp.After(x.lease.HardEnd) {
		t.Fatalf("suite bug: renewal %v past hard end %v", newExp, x.lease.HardEnd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := iss.Renew(ctx, x.lease.Clone(), params, newExp)
	if err != nil {
		t.Fatalf("Renew to %v: %v", newExp, err)
	}
	renewed := x.lease.Clone()
	renewed.ExpiresAt = newExp
	renewed.DueAt = newExp
	if c == nil {
		// The existing credential stays valid.
		s.h.Verify(t, renewed, x.cred)
		return
	}
	checkCredential(t, renewed, c)
	if c.Kind != x.cred.Kind {
		t.Errorf("renewed credential kind %q; issued %q", c.Kind, x.cred.Kind)
	}
	if c.ExpiresAt.Before(x.cred.ExpiresAt) {
		t.Errorf("renewed credential expires %v, before the issued one (%v)", c.ExpiresAt, x.cred.ExpiresAt)
	}
	if c.ExternalRef != "" && c.ExternalRef != x.lease.ExternalRef {
		t.Errorf("renewed credential ExternalRef %q; the lease holds %q", c.ExternalRef, x.lease.ExternalRef)
	}
	s.h.Verify(t, renewed, c)
}

func (s *suite) testRevoke(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	l := s.pending(iss, params)
	x := s.issue(t, iss, l, params)
	// The revoker holds the lease in StateRevoking.
	r := x.lease.Clone()
	r.State = lease.StateRevoking
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := iss.Revoke(ctx, r.Clone()); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if s.h.IsRevoked != nil && !s.h.IsRevoked(t, r, x.cred) {
		t.Error("IsRevoked = false after Revoke succeeded")
	}
	if err := iss.Revoke(ctx, r.Clone()); err != nil {
		t.Fatalf("second Revoke: %v (revocation is at-least-once; already gone is success)", err)
	}
}

func (s *suite) testRevokeUnseen(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	refs := append([]string{""}, s.h.UnseenRefs...)
	for _, ref := range refs {
		t.Run(fmt.Sprintf("ref=%q", ref), func(t *testing.T) {
			l := s.pending(iss, params)
			l.ExternalRef = ref
			l.State = lease.StateRevoking
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := iss.Revoke(ctx, l); err != nil {
				t.Errorf("Revoke of a lease the backend never saw: %v", err)
			}
		})
	}
}

func (s *suite) testNoSecret(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	l := s.pending(iss, params)
	x := s.issue(t, iss, l, params)
	c := x.cred

	secrets := map[string]string{
		"Token":           c.Token,
		"Password":        c.Password,
		"KeyPEM":          c.KeyPEM,
		"SecretAccessKey": c.SecretAccessKey,
		"SessionToken":    c.SessionToken,
	}
	for k, v := range c.Fields {
		secrets["Fields["+k+"]"] = v
	}

	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("issued", "credential", c, "lease", l.ID)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("issued", slog.Any("credential", c))
	outputs := map[string]string{
		"String()":  c.String(),
		"%v":        fmt.Sprintf("%v", c),
		"%+v":       fmt.Sprintf("%+v", c),
		"%s":        fmt.Sprintf("%s", c),
		"%#v":       fmt.Sprintf("%#v", c),
		"value %v":  fmt.Sprintf("%v", *c),
		"value %#v": fmt.Sprintf("%#v", *c),
		"slog value": func() string {
			var b bytes.Buffer
			slog.New(slog.NewTextHandler(&b, nil)).Info("issued", "credential", *c)
			return b.String()
		}(),
		"slog text": text.String(),
		"slog json": js.String(),
		"error":     fmt.Errorf("wrapped: %v", c).Error(),
	}
	for where, out := range outputs {
		for field, secret := range secrets {
			if len(secret) < 4 { // too short to tell a leak from chance
				continue
			}
			if strings.Contains(out, secret) {
				t.Errorf("%s of the credential contains its %s", where, field)
			}
		}
	}
}

func (s *suite) testCancelled(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic with a cancelled context: %v", r)
		}
	}()
	l := s.pending(iss, params)
	c, err := iss.Issue(ctx, issuer.Request{
		Lease: l.Clone(), Params: params,
		Bind: func(context.Context, string) error { return nil },
	})
	if err == nil {
		t.Errorf("Issue with a cancelled context = %v, nil; want an error", c)
	}
	if err != nil && c != nil {
		t.Errorf("Issue returned a credential with its error %v", err)
	}

	x := s.issue(t, iss, s.pending(iss, params), params)
	if c, err := iss.Renew(ctx, x.lease.Clone(), params, x.lease.ExpiresAt.Add(s.h.TTL/2)); err == nil {
		t.Errorf("Renew with a cancelled context = %v, nil; want an error", c)
	}
	// Revoke may fail (retried later) or succeed; it must not panic.
	r := x.lease.Clone()
	r.State = lease.StateRevoking
	_ = iss.Revoke(ctx, r)
}

func (s *suite) testConcurrent(t *testing.T) {
	iss := s.h.New(t)
	params := s.params(t, iss)
	const n = 8
	leases := make([]*lease.Lease, n)
	creds := make([]*issuer.Credential, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		leases[i] = s.pending(iss, params)
		wg.Go(func() {
			creds[i], errs[i] = iss.Issue(context.Background(), issuer.Request{
				Lease: leases[i].Clone(), Params: params,
				Bind: func(context.Context, string) error { return nil },
			})
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("concurrent Issue %d: %v", i, errs[i])
			continue
		}
		checkCredential(t, leases[i], creds[i])
		active := leases[i].Clone()
		active.State = lease.StateActive
		active.ExternalRef = creds[i].ExternalRef
		s.h.Verify(t, active, creds[i])
	}
}
