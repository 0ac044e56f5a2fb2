package issuertest_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/issuertest"
	"github.com/mayflyhq/mayfly/broker/lease"
)

// fakeIssuer is a fake backend with revocable username/password
// credentials, to test the suite itself. Its break field turns on one
// contract violation at a time.
type fakeIssuer struct {
	brk string

	mu      sync.Mutex
	secrets map[string]fakeSecret // handle -> secret
}

type fakeSecret struct {
	password string
	exp      time.Time
}

func (f *fakeIssuer) Name() string { return "fake" }

func (f *fakeIssuer) DecodeParams(n *yaml.Node) (any, error) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, errors.New("fake: role is required")
	}
	role := ""
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch k := n.Content[i].Value; k {
		case "role":
			role = n.Content[i+1].Value
		default:
			if f.brk != "lenient-params" {
				return nil, fmt.Errorf("fake: unknown key %q", k)
			}
		}
	}
	if role == "" {
		return nil, errors.New("fake: role is required")
	}
	return role, nil
}

func (f *fakeIssuer) Revocability(any) (bool, string) { return true, "" }

func (f *fakeIssuer) Issue(ctx context.Context, req issuer.Request) (*issuer.Credential, error) {
	if err := ctx.Err(); err != nil && f.brk != "ignore-ctx" {
		return nil, err
	}
	handle := "h-" + req.Lease.ID
	if f.brk == "new-handle" {
		handle = "h-" + rand.Text()
	}
	if err := req.Bind(ctx, handle); err != nil && f.brk != "mint-after-failed-bind" {
		return nil, err
	}
	exp := req.Lease.ExpiresAt
	if f.brk == "exp-past-lease" {
		exp = exp.Add(time.Hour)
	}
	pw := rand.Text()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.secrets == nil {
		f.secrets = map[string]fakeSecret{}
	}
	f.secrets[handle] = fakeSecret{password: pw, exp: exp}
	return &issuer.Credential{Kind: issuer.KindUsernamePassword, ExternalRef: handle, ExpiresAt: exp, Username: handle, Password: pw}, nil
}

func (f *fakeIssuer) Renew(ctx context.Context, l *lease.Lease, _ any, exp time.Time) (*issuer.Credential, error) {
	if err := ctx.Err(); err != nil && f.brk != "ignore-ctx" {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.secrets[l.ExternalRef]
	if !ok {
		return nil, fmt.Errorf("fake: no credential %q: %w", l.ExternalRef, issuer.ErrRejected)
	}
	s.exp = exp
	f.secrets[l.ExternalRef] = s
	return nil, nil
}

func (f *fakeIssuer) Revoke(ctx context.Context, l *lease.Lease) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.brk == "revoke-noop" {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.secrets[l.ExternalRef]; !ok && f.brk == "revoke-not-idempotent" {
		return errors.New("fake: no such credential")
	}
	delete(f.secrets, l.ExternalRef)
	return nil
}

// usable reports whether the backend accepts the credential now.
func (f *fakeIssuer) usable(c *issuer.Credential) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.secrets[c.Username]
	return ok && s.password == c.Password && time.Now().Before(s.exp)
}

func (f *fakeIssuer) revoked(c *issuer.Credential) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.secrets[c.Username]
	return !ok
}

func TestFakeConformance(t *testing.T) {
	brk := os.Getenv("ISSUERTEST_BREAK")
	var cur *fakeIssuer
	issuertest.Run(t, issuertest.Harness{
		New: func(t *testing.T) issuer.Issuer {
			cur = &fakeIssuer{brk: brk}
			return cur
		},
		ValidParams:   []string{"role: reader"},
		InvalidParams: []issuertest.InvalidParams{{Name: "unknown key", YAML: "role: r\nrloe: x", WantErr: `unknown key "rloe"`}},
		Verify: func(t *testing.T, _ *lease.Lease, c *issuer.Credential) {
			if !cur.usable(c) {
				t.Errorf("credential %v not usable at the fake backend", c)
			}
		},
		IsRevoked: func(t *testing.T, _ *lease.Lease, c *issuer.Credential) bool {
			return cur.revoked(c)
		},
		UnseenRefs: []string{"h-never-issued"},
	})
}

// TestSuiteCatches runs the fake with one contract violation at a time, in
// a child process, and checks that the suite fails the right subtest.
func TestSuiteCatches(t *testing.T) {
	if os.Getenv("ISSUERTEST_BREAK") != "" {
		t.Skip("child process")
	}
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	for brk, subtest := range map[string]string{
		"lenient-params":         "DecodeParams/invalid/unknown_key",
		"ignore-ctx":             "CancelledContext",
		"new-handle":             "IssueTwiceSameHandle",
		"mint-after-failed-bind": "BindBeforeMint",
		"exp-past-lease":         "Issue",
		"revoke-not-idempotent":  "RevokeUnseen",
		"revoke-noop":            "Revoke",
	} {
		t.Run(brk, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestFakeConformance$", "-test.v")
			cmd.Env = append(os.Environ(), "ISSUERTEST_BREAK="+brk)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("suite passed an issuer that breaks %q:\n%s", brk, out)
			}
			if want := "--- FAIL: TestFakeConformance/" + subtest + " "; !strings.Contains(string(out), want) {
				t.Errorf("want %q in the output:\n%s", want, out)
			}
		})
	}
}
