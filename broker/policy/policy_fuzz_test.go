package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, every
// error line must carry the package prefix, and whatever loads must answer
// Decide, Explain, Usable, DecideRequest, DecideBreakGlass, CheckApproval
// and Reviews without panicking.
func FuzzParse(f *testing.F) {
	f.Add(ExamplePolicy)
	f.Add(with(nil))
	f.Add(withGov(nil))
	f.Add(approvalPolicy)
	for _, s := range []string{
		"",
		"version: 1",
		"version: 1\n---\nversion: 1",
		"version: 1\ngroups:\n  a: [group:b]\n  b: [group:a]",
		"version: 1\ngroups:\n  a: &x [user:a]\n  b: *x",
		"version: 1\ngroups: [a\n",
		"version: 1\ntrust_domains: [spiffe://x]\n",
		"- 1\n- 2",
		"version: 1\nentitlements:\n  e: {ttl: 99999999999999d, max_ttl: -1d}",
		"version: 1\nentitlements:\n  e:\n    standing:\n      - subject: spiffe://a/**/b\n        until: 2027-02-30",
		"version: 1\ntrust_domains: [a]\nentitlements:\n  e: {description: d, owner: user:x, issuer: jwt, jwt: {audience: a}, ttl: 1m, max_ttl: 1m, standing: [{subject: 'spiffe://a/*', purpose: p, until: '2027-06-30T00:00:00+14:00'}]}",
		"? [a]\n: b",
		"version: !!binary AQ==\n",
		"\ufeffversion: 1",
		"version: 1\x00",
		"version: 1\nentitlements:\n  e: {when: 'request.time.getHours() >= 6 || \"x\" in principal.groups'}",
		"version: 1\nentitlements:\n  e: {when: '[1,2,3].all(x, [1,2,3].all(y, [1,2,3].all(z, x+y+z > 0)))'}",
		"version: 1\nwebhooks: {a: {url: 'http://[::1]:80/x', secret_env: A}}\nidentities: [[user:a, user:b]]",
		"version: 1\nentitlements:\n  e: {conflicts_with: [f]}\n  f: {conflicts_with: [e]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, testOpts())
		if err != nil {
			if p != nil {
				t.Fatal("policy returned with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "policy: ") {
					t.Fatalf("error line without prefix: %q", line)
				}
			}
			return
		}
		if p.Version != 1 || len(p.Digest) != 64 {
			t.Fatalf("bad policy %+v", p)
		}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		for _, pr := range []struct {
			w  bool
			id string
		}{
			{true, "spiffe://a/b"}, {true, "spiffe://mayfly.test/workload/demo"}, {false, "user:x"}, {false, "user:alice"},
		} {
			principal := human(pr.id, "oidc-group:corp/sre")
			if pr.w {
				principal = workload(pr.id)
			}
			_ = p.Usable(principal, now)
			for _, name := range p.Names() {
				d := p.Decide(Input{Principal: principal, Entitlement: name, TTL: time.Hour, Now: now})
				if d.Outcome == Allow && (d.TTL <= 0 || d.TTL > d.Entitlement.MaxTTL || d.ExpiresAt.After(d.HardEnd)) {
					t.Fatalf("bad allow %+v", d)
				}
				_ = p.Explain(Input{Principal: principal, Entitlement: name, Now: now, Certified: map[string]time.Time{},
					Grants: []Grant{{ID: "g", Entitlement: name, Subject: principal.ID, Kind: GrantRequest, Start: now, End: now.Add(time.Hour)}}})
				rd := p.DecideRequest(RequestInput{Principal: principal, Entitlement: name, Reason: "r", Ticket: "INC-1", Now: now})
				if rd.Outcome == Allow && rd.Duration <= 0 {
					t.Fatalf("bad request decision %+v", rd)
				}
				bd := p.DecideBreakGlass(BreakGlassInput{Principal: principal, Entitlement: name, Reason: "r", TTL: 48 * time.Hour, Now: now})
				if bd.Outcome == Allow && (bd.TTL <= 0 || bd.TTL > bd.Entitlement.BreakGlass.MaxTTL) {
					t.Fatalf("bad break-glass decision %+v", bd)
				}
				_ = p.CheckApproval(ApprovalInput{Approver: principal, Requester: human("user:x"), Entitlement: name, Approve: true, Prior: []authn.Principal{principal}, Now: now})
			}
			_ = p.Reviews(nil, now)
		}
	})
}
