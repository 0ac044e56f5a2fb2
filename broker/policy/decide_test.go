package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
)

var decidePolicy = lines(
	"version: 1",
	"trust_domains: [prod.example.org, staging.example.org]",
	"groups:",
	`  sre: ["user:alice", "oidc-group:corp/sre"]`,
	`  leads: ["group:sre", "user:carol"]`,
	`  agents: ["spiffe://prod.example.org/agents/*"]`,
	"entitlements:",
	"  exact:",
	"    description: d",
	"    owner: group:sre",
	"    issuer: jwt",
	"    jwt: {audience: a}",
	"    ttl: 15m",
	"    max_ttl: 1h",
	"    standing:",
	"      - subject: spiffe://prod.example.org/ns/orders/sa/api",
	"        purpose: orders API",
	"        until: 2027-06-30",
	"  star:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: runners, subject: "spiffe://prod.example.org/ci/runner/*", purpose: CI, until: 2027-01-31}]}`,
	"  deep:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: cli, subject: "spiffe://prod.example.org/cli/**", purpose: CLI, until: 2027-01-31}]}`,
	"  twostar:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: ns-sa, subject: "spiffe://prod.example.org/ns/*/*", purpose: p, until: 2027-01-31}]}`,
	"  starstar:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: ns-any, subject: "spiffe://prod.example.org/ns/*/**", purpose: p, until: 2027-01-31}]}`,
	"  humans:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: leads, subject: "group:leads", purpose: leads, until: 2027-01-31}]}`,
	"  bob:",
	"    {description: d, owner: user:bob, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: bob, subject: "user:bob", purpose: bob, until: 2027-01-31}]}`,
	"  agents:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: agents, subject: "group:agents", purpose: agents, until: 2027-01-31}]}`,
	"  ended:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 10m, max_ttl: 30m, standing: [",
	`      {id: old, subject: "spiffe://prod.example.org/svc", purpose: p, until: 2025-12-31},`,
	`      {id: old2, subject: "spiffe://prod.example.org/*", purpose: p, until: "2026-01-01T00:00:00Z"},`,
	`      {id: other, subject: "spiffe://prod.example.org/other", purpose: p, until: 2027-01-01}]}`,
	"  soon:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 15m, max_ttl: 1h, standing: [",
	`      {id: soon, subject: "spiffe://prod.example.org/svc", purpose: p, until: "2026-01-01T00:10:00Z"}]}`,
	"  multi:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 15m, max_ttl: 1h, standing: [",
	`      {id: short, subject: "spiffe://prod.example.org/svc", purpose: p, until: "2026-01-01T00:05:00Z"},`,
	`      {id: longer, subject: "spiffe://prod.example.org/*", purpose: p, until: "2026-01-01T00:20:00Z"},`,
	`      {id: zz-tie, subject: "spiffe://prod.example.org/**", purpose: p, until: "2026-01-01T00:20:00Z"}]}`,
	"  tie:",
	"    {description: d, owner: group:sre, issuer: jwt, jwt: {audience: a}, ttl: 15m, max_ttl: 1h, standing: [",
	`      {id: b-grant, subject: "spiffe://prod.example.org/*", purpose: p, until: 2027-01-01},`,
	`      {id: c-grant, subject: "spiffe://prod.example.org/**", purpose: p, until: 2027-01-01},`,
	`      {id: a-grant, subject: "spiffe://prod.example.org/svc", purpose: p, until: 2028-01-01}]}`,
)

var now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// zeroTime in a test case stands for an unset Input.Now.
var zeroTime = time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)

func workload(id string) authn.Principal {
	return authn.Principal{Kind: authn.KindWorkload, ID: id, Method: authn.MethodX509SVID}
}

func human(id string, groups ...string) authn.Principal {
	return authn.Principal{Kind: authn.KindHuman, ID: id, Groups: groups, Method: authn.MethodOIDC}
}

func mustParse(t testing.TB, data []byte) *Policy {
	t.Helper()
	p, err := Parse(data, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// allow builds the expected allow decision for a grant.
func allow(ent, grant, subject, purpose string, until time.Time, ttl, maxTTL time.Duration, clamp string) Decision {
	d := Decision{
		Outcome:   Allow,
		GrantID:   grant,
		GrantKind: GrantStanding,
		TTL:       ttl,
		ExpiresAt: now.Add(ttl),
		HardEnd:   now.Add(maxTTL),
		Reasons: []Reason{{ReasonStandingGrant, "standing grant \"" + grant + "\" lets " + subject + " use entitlement \"" + ent + "\" until " +
			until.Format(time.RFC3339) + " (purpose: " + purpose + ")"}},
	}
	if until.Before(d.HardEnd) {
		d.HardEnd = until
	}
	if clamp != "" {
		d.Clamped = true
		d.Reasons = append(d.Reasons, Reason{ReasonTTLClamped, clamp})
	}
	return d
}

func denied(pr authn.Principal, ent string) Decision {
	return Decision{Outcome: Deny, Reasons: []Reason{{ReasonNotGranted, "no grant allows " + pr.ID + " to use entitlement \"" + ent + "\""}}}
}

func TestDecide(t *testing.T) {
	p := mustParse(t, decidePolicy)
	api := "spiffe://prod.example.org/ns/orders/sa/api"
	end2027 := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)
	exactID := p.Entitlement("exact").Standing[0].ID

	tests := []struct {
		name string
		pr   authn.Principal
		ent  string
		ttl  time.Duration
		now  time.Time // zero: now
		want Decision
	}{
		// Exact SPIFFE ID.
		{"exact", workload(api), "exact", 0, time.Time{},
			allow("exact", exactID, api, "orders API", time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC), 15*time.Minute, time.Hour, "")},
		{"exact shorter ttl", workload(api), "exact", time.Minute, time.Time{},
			allow("exact", exactID, api, "orders API", time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC), time.Minute, time.Hour, "")},
		{"exact clamped to max_ttl", workload(api), "exact", 2 * time.Hour, time.Time{},
			allow("exact", exactID, api, "orders API", time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC), time.Hour, time.Hour,
				`TTL reduced from 2h to 1h: max_ttl of entitlement "exact" is 1h`)},
		{"exact sibling", workload(api + "2"), "exact", 0, time.Time{}, denied(workload(api+"2"), "exact")},
		{"exact child", workload(api + "/x"), "exact", 0, time.Time{}, denied(workload(api+"/x"), "exact")},
		{"exact parent", workload("spiffe://prod.example.org/ns/orders/sa"), "exact", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/ns/orders/sa"), "exact")},
		{"exact other trust domain", workload("spiffe://staging.example.org/ns/orders/sa/api"), "exact", 0, time.Time{},
			denied(workload("spiffe://staging.example.org/ns/orders/sa/api"), "exact")},
		{"exact case", workload("spiffe://prod.example.org/ns/orders/sa/API"), "exact", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/ns/orders/sa/API"), "exact")},
		{"exact trailing space", workload(api + " "), "exact", 0, time.Time{}, denied(workload(api+" "), "exact")},
		{"exact trailing slash", workload(api + "/"), "exact", 0, time.Time{}, denied(workload(api+"/"), "exact")},
		{"exact confusable", workload("spiffe://prod.example.org/ns/оrders/sa/api"), "exact", 0, time.Time{}, // Cyrillic о
			denied(workload("spiffe://prod.example.org/ns/оrders/sa/api"), "exact")},
		{"exact as human", human(api), "exact", 0, time.Time{}, denied(human(api), "exact")},
		{"exact unknown kind", authn.Principal{ID: api}, "exact", 0, time.Time{}, denied(authn.Principal{ID: api}, "exact")},

		// One "*" is exactly one segment.
		{"star one segment", workload("spiffe://prod.example.org/ci/runner/r1"), "star", 0, time.Time{},
			allow("star", "runners", "spiffe://prod.example.org/ci/runner/*", "CI", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"star two segments", workload("spiffe://prod.example.org/ci/runner/r1/x"), "star", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/ci/runner/r1/x"), "star")},
		{"star no segment", workload("spiffe://prod.example.org/ci/runner"), "star", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/ci/runner"), "star")},
		{"star other trust domain", workload("spiffe://staging.example.org/ci/runner/r1"), "star", 0, time.Time{},
			denied(workload("spiffe://staging.example.org/ci/runner/r1"), "star")},
		{"star prefix case", workload("spiffe://prod.example.org/CI/runner/r1"), "star", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/CI/runner/r1"), "star")},
		{"two stars", workload("spiffe://prod.example.org/ns/a/b"), "twostar", 0, time.Time{},
			allow("twostar", "ns-sa", "spiffe://prod.example.org/ns/*/*", "p", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"two stars one segment", workload("spiffe://prod.example.org/ns/a"), "twostar", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/ns/a"), "twostar")},
		{"two stars three segments", workload("spiffe://prod.example.org/ns/a/b/c"), "twostar", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/ns/a/b/c"), "twostar")},

		// "**" is one or more segments.
		{"deep one segment", workload("spiffe://prod.example.org/cli/alice"), "deep", 0, time.Time{},
			allow("deep", "cli", "spiffe://prod.example.org/cli/**", "CLI", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"deep three segments", workload("spiffe://prod.example.org/cli/a/b/c"), "deep", 0, time.Time{},
			allow("deep", "cli", "spiffe://prod.example.org/cli/**", "CLI", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"deep no segment", workload("spiffe://prod.example.org/cli"), "deep", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/cli"), "deep")},
		{"deep prefix is whole segment", workload("spiffe://prod.example.org/client/a"), "deep", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/client/a"), "deep")},
		{"deep other trust domain", workload("spiffe://staging.example.org/cli/a"), "deep", 0, time.Time{},
			denied(workload("spiffe://staging.example.org/cli/a"), "deep")},
		{"star then deep", workload("spiffe://prod.example.org/ns/a/b"), "starstar", 0, time.Time{},
			allow("starstar", "ns-any", "spiffe://prod.example.org/ns/*/**", "p", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"star then deep too short", workload("spiffe://prod.example.org/ns/a"), "starstar", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/ns/a"), "starstar")},

		// Humans and groups.
		{"nested group user", human("user:alice"), "humans", 0, time.Time{},
			allow("humans", "leads", "group:leads", "leads", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"group user", human("user:carol"), "humans", 0, time.Time{},
			allow("humans", "leads", "group:leads", "leads", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"nested group via idp group", human("user:dave", "oidc-group:corp/other", "oidc-group:corp/sre"), "humans", 0, time.Time{},
			allow("humans", "leads", "group:leads", "leads", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"idp group case", human("user:dave", "oidc-group:corp/SRE"), "humans", 0, time.Time{},
			denied(human("user:dave"), "humans")},
		{"idp group whitespace", human("user:dave", "oidc-group:corp/sre "), "humans", 0, time.Time{},
			denied(human("user:dave"), "humans")},
		{"idp group without prefix", human("user:dave", "sre"), "humans", 0, time.Time{},
			denied(human("user:dave"), "humans")},
		{"idp group other provider", human("user:dave", "oidc-group:other/sre"), "humans", 0, time.Time{},
			denied(human("user:dave"), "humans")},
		{"user case", human("user:Alice"), "humans", 0, time.Time{}, denied(human("user:Alice"), "humans")},
		{"user whitespace", human("user:alice "), "humans", 0, time.Time{}, denied(human("user:alice "), "humans")},
		{"user confusable", human("user:аlice"), "humans", 0, time.Time{}, denied(human("user:аlice"), "humans")}, // Cyrillic а
		{"group as workload", workload("user:alice"), "humans", 0, time.Time{}, denied(workload("user:alice"), "humans")},
		{"idp group on workload", authn.Principal{Kind: authn.KindWorkload, ID: "spiffe://prod.example.org/x", Groups: []string{"oidc-group:corp/sre"}}, "humans", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/x"), "humans")},
		{"user subject", human("user:bob"), "bob", 0, time.Time{},
			allow("bob", "bob", "user:bob", "bob", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"user subject as workload", workload("user:bob"), "bob", 0, time.Time{}, denied(workload("user:bob"), "bob")},
		{"user subject unknown kind", authn.Principal{ID: "user:bob"}, "bob", 0, time.Time{}, denied(authn.Principal{ID: "user:bob"}, "bob")},
		{"workload in group", workload("spiffe://prod.example.org/agents/a1"), "agents", 0, time.Time{},
			allow("agents", "agents", "group:agents", "agents", end2027, 10*time.Minute, 30*time.Minute, "")},
		{"workload group pattern miss", workload("spiffe://prod.example.org/agents/a1/x"), "agents", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/agents/a1/x"), "agents")},
		{"human not in workload group", human("user:alice", "oidc-group:corp/sre"), "agents", 0, time.Time{},
			denied(human("user:alice"), "agents")},

		// Ended grants.
		{"ended", workload("spiffe://prod.example.org/svc"), "ended", 0, time.Time{},
			Decision{Outcome: Deny, Reasons: []Reason{
				{ReasonGrantEnded, `standing grant "old" for entitlement "ended" ended at 2026-01-01T00:00:00Z`},
				{ReasonGrantEnded, `standing grant "old2" for entitlement "ended" ended at 2026-01-01T00:00:00Z`},
			}}},
		{"ended not mine", workload("spiffe://prod.example.org/a/b"), "ended", 0, time.Time{},
			denied(workload("spiffe://prod.example.org/a/b"), "ended")},
		{"not yet ended", workload("spiffe://prod.example.org/svc"), "ended", 0, now.Add(-time.Nanosecond),
			Decision{Outcome: Allow, GrantID: "old", GrantKind: GrantStanding, TTL: time.Nanosecond, ExpiresAt: now, HardEnd: now, Clamped: true, Reasons: []Reason{
				{ReasonStandingGrant, `standing grant "old" lets spiffe://prod.example.org/svc use entitlement "ended" until 2026-01-01T00:00:00Z (purpose: p)`},
				{ReasonTTLClamped, `TTL reduced from 10m to 1ns: standing grant "old" ends at 2026-01-01T00:00:00Z`},
			}}},

		// Clamping to the grant end.
		{"clamped to grant end", workload("spiffe://prod.example.org/svc"), "soon", 0, time.Time{},
			allow("soon", "soon", "spiffe://prod.example.org/svc", "p", now.Add(10*time.Minute), 10*time.Minute, time.Hour,
				`TTL reduced from 15m to 10m: standing grant "soon" ends at 2026-01-01T00:10:00Z`)},
		{"clamped to grant end before max_ttl", workload("spiffe://prod.example.org/svc"), "soon", 2 * time.Hour, time.Time{},
			allow("soon", "soon", "spiffe://prod.example.org/svc", "p", now.Add(10*time.Minute), 10*time.Minute, time.Hour,
				`TTL reduced from 2h to 10m: standing grant "soon" ends at 2026-01-01T00:10:00Z`)},
		{"short request within grant", workload("spiffe://prod.example.org/svc"), "soon", 5 * time.Minute, time.Time{},
			allow("soon", "soon", "spiffe://prod.example.org/svc", "p", now.Add(10*time.Minute), 5*time.Minute, time.Hour, "")},

		// Several grants: longest effective TTL, then grant id.
		{"longest ttl wins", workload("spiffe://prod.example.org/svc"), "multi", 0, time.Time{},
			allow("multi", "longer", "spiffe://prod.example.org/*", "p", now.Add(20*time.Minute), 15*time.Minute, time.Hour, "")},
		{"longest ttl wins clamped", workload("spiffe://prod.example.org/svc"), "multi", time.Hour, time.Time{},
			allow("multi", "longer", "spiffe://prod.example.org/*", "p", now.Add(20*time.Minute), 20*time.Minute, time.Hour,
				`TTL reduced from 1h to 20m: standing grant "longer" ends at 2026-01-01T00:20:00Z`)},
		{"tie by id", workload("spiffe://prod.example.org/svc"), "tie", 0, time.Time{},
			allow("tie", "a-grant", "spiffe://prod.example.org/svc", "p", time.Date(2028, 1, 2, 0, 0, 0, 0, time.UTC), 15*time.Minute, time.Hour, "")},
		{"tie by id among patterns", workload("spiffe://prod.example.org/other"), "tie", 0, time.Time{},
			allow("tie", "b-grant", "spiffe://prod.example.org/*", "p", time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), 15*time.Minute, time.Hour, "")},

		// Unknown entitlements answer like not granted.
		{"unknown entitlement", workload(api), "nope", 0, time.Time{}, denied(workload(api), "nope")},
		{"entitlement name case", workload(api), "Exact", 0, time.Time{}, denied(workload(api), "Exact")},
		{"entitlement name whitespace", workload(api), "exact ", 0, time.Time{}, denied(workload(api), "exact ")},
		{"entitlement name confusable", workload(api), "еxact", 0, time.Time{}, denied(workload(api), "еxact")}, // Cyrillic е

		// Caller bugs.
		{"negative ttl", workload(api), "exact", -time.Second, time.Time{},
			Decision{Outcome: Deny, Reasons: []Reason{{ReasonInvalidTTL, "requested TTL -1s is negative"}}}},
		{"negative ttl unknown entitlement", workload(api), "nope", -time.Second, time.Time{},
			Decision{Outcome: Deny, Reasons: []Reason{{ReasonInvalidTTL, "requested TTL -1s is negative"}}}},
		{"zero time", workload(api), "exact", 0, zeroTime,
			Decision{Outcome: Deny, Reasons: []Reason{{ReasonInvalidTime, "the decision time is not set"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := tt.now
			switch {
			case at.Equal(zeroTime):
				at = time.Time{}
			case at.IsZero():
				at = now
			}
			got := p.Decide(Input{Principal: tt.pr, Entitlement: tt.ent, TTL: tt.ttl, Now: at})
			if want := p.Entitlement(tt.ent); got.Entitlement != want {
				t.Errorf("Entitlement = %v, want %v", got.Entitlement, want)
			}
			got.Entitlement = nil
			want := tt.want
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Decide:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// Unknown and not granted must be indistinguishable in what the caller sees.
func TestDecideUnknownLooksLikeNotGranted(t *testing.T) {
	p := mustParse(t, decidePolicy)
	pr := workload("spiffe://prod.example.org/intruder")
	known := p.Decide(Input{Principal: pr, Entitlement: "exact", Now: now})
	p2 := mustParse(t, decidePolicy)
	delete(p2.Entitlements, "exact")
	unknown := p2.Decide(Input{Principal: pr, Entitlement: "exact", Now: now})
	if known.Entitlement == nil || unknown.Entitlement != nil {
		t.Fatalf("Entitlement: known %v, unknown %v", known.Entitlement, unknown.Entitlement)
	}
	known.Entitlement = nil
	if !reflect.DeepEqual(known, unknown) {
		t.Errorf("known %+v\nunknown %+v", known, unknown)
	}
}

// The chosen grant does not depend on file order.
func TestDecideDeterministic(t *testing.T) {
	reordered := lines(
		"version: 1",
		"trust_domains: [prod.example.org]",
		"entitlements:",
		"  tie:",
		"    {description: d, owner: user:x, issuer: jwt, jwt: {audience: a}, ttl: 15m, max_ttl: 1h, standing: [",
		`      {id: c-grant, subject: "spiffe://prod.example.org/**", purpose: p, until: 2027-01-01},`,
		`      {id: a-grant, subject: "spiffe://prod.example.org/svc", purpose: p, until: 2028-01-01},`,
		`      {id: b-grant, subject: "spiffe://prod.example.org/*", purpose: p, until: 2027-01-01}]}`,
	)
	for _, data := range [][]byte{decidePolicy, reordered} {
		p := mustParse(t, data)
		for i := 0; i < 20; i++ {
			d := p.Decide(Input{Principal: workload("spiffe://prod.example.org/other"), Entitlement: "tie", Now: now})
			if d.GrantID != "b-grant" {
				t.Fatalf("grant %q, want b-grant", d.GrantID)
			}
		}
	}
}

func TestExplain(t *testing.T) {
	p := mustParse(t, decidePolicy)
	in := Input{Principal: workload("spiffe://prod.example.org/svc"), Entitlement: "multi", TTL: time.Hour, Now: now.Add(10 * time.Minute)}
	ex := p.Explain(in)
	if !reflect.DeepEqual(ex.Decision, p.Decide(in)) {
		t.Errorf("Explain decision %+v differs from Decide", ex.Decision)
	}
	want := []GrantCheck{
		{GrantID: "short", Kind: GrantStanding, Subject: "spiffe://prod.example.org/svc", Matches: true, Ended: true},
		{GrantID: "longer", Kind: GrantStanding, Subject: "spiffe://prod.example.org/*", Matches: true, TTL: 10 * time.Minute},
		{GrantID: "zz-tie", Kind: GrantStanding, Subject: "spiffe://prod.example.org/**", Matches: true, TTL: 10 * time.Minute},
	}
	if !reflect.DeepEqual(ex.Grants, want) {
		t.Errorf("grants\n got %+v\nwant %+v", ex.Grants, want)
	}
	if ex.Decision.GrantID != "longer" {
		t.Errorf("grant %q, want longer (tie broken by id)", ex.Decision.GrantID)
	}

	ex = p.Explain(Input{Principal: human("user:zed"), Entitlement: "exact", Now: now})
	if len(ex.Grants) != 1 || ex.Grants[0].Matches || ex.Decision.Outcome != Deny {
		t.Errorf("explain %+v", ex)
	}
	if ex = p.Explain(Input{Principal: human("user:zed"), Entitlement: "nope", Now: now}); ex.Grants != nil {
		t.Errorf("explain unknown %+v", ex)
	}
}

func TestUsable(t *testing.T) {
	p := mustParse(t, decidePolicy)
	got := p.Usable(workload("spiffe://prod.example.org/svc"), now)
	type row struct {
		ent, grant string
		ttl        time.Duration
		hardEnd    time.Time
	}
	var rows []row
	for _, u := range got {
		rows = append(rows, row{u.Entitlement.Name, u.GrantID, u.TTL, u.HardEnd})
	}
	want := []row{
		{"multi", "longer", 15 * time.Minute, now.Add(20 * time.Minute)},
		{"soon", "soon", 10 * time.Minute, now.Add(10 * time.Minute)},
		{"tie", "a-grant", 15 * time.Minute, now.Add(time.Hour)},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("Usable\n got %+v\nwant %+v", rows, want)
	}

	got = p.Usable(human("user:dave", "oidc-group:corp/sre"), now)
	if len(got) != 1 || got[0].Entitlement.Name != "humans" || got[0].GrantID != "leads" {
		t.Errorf("Usable human %+v", got)
	}
	if got := p.Usable(human("user:nobody"), now); got != nil {
		t.Errorf("Usable nobody %+v", got)
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{Deny: "deny", Allow: "allow", NeedsApproval: "needs_approval", 7: "outcome(7)"} {
		if got := o.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(o), got, want)
		}
	}
	var d Decision
	if d.Outcome != Deny {
		t.Errorf("zero Decision is %v, want deny", d.Outcome)
	}
}

func TestExamplePolicyDecisions(t *testing.T) {
	p := mustParse(t, ExamplePolicy)
	tests := []struct {
		pr    authn.Principal
		ent   string
		allow bool
	}{
		{workload("spiffe://mayfly.test/workload/demo"), "demo-api-read", true},
		{workload("spiffe://mayfly.test/workload/demo"), "demo-api-write", false},
		{workload("spiffe://mayfly.test/ci/runner-1"), "ci-deploy-token", true},
		{workload("spiffe://mayfly.test/ci/runner-1/x"), "ci-deploy-token", false},
		{workload("spiffe://mayfly.test/cli/alice"), "demo-api-write", true},
		{workload("spiffe://mayfly.test/cli/alice/laptop"), "demo-api-write", true},
		{human("user:bob"), "demo-api-write", true},
		{human("user:eve", "oidc-group:dev/platform"), "demo-api-write", true},
		{human("user:eve"), "demo-api-write", false},
		{human("user:alice"), "demo-api-read", false},
	}
	for _, tt := range tests {
		d := p.Decide(Input{Principal: tt.pr, Entitlement: tt.ent, Now: now})
		if (d.Outcome == Allow) != tt.allow {
			t.Errorf("%s on %s: %v %v", tt.pr.ID, tt.ent, d.Outcome, d.Reasons)
		}
	}
}

// The dev example shows the governance keys working together.
func TestExamplePolicyGovernance(t *testing.T) {
	p := mustParse(t, ExamplePolicy)
	bob, alice, carol := human("user:bob"), human("user:alice", "oidc-group:dev/platform"), human("user:carol", "oidc-group:dev/security")
	agent := workload("spiffe://mayfly.test/agents/triage")
	day := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

	// The dev CLI still holds demo-api-write by standing grant and is an admin.
	cli := workload("spiffe://mayfly.test/cli/dev")
	if d := p.Decide(Input{Principal: cli, Entitlement: "demo-api-write", Now: day}); d.Outcome != Allow || d.GrantKind != GrantStanding {
		t.Errorf("dev CLI: %v %v", d.Outcome, d.Reasons)
	}
	if !p.IsAdmin(cli) {
		t.Error("dev CLI is not an admin")
	}
	// Developers and agents request demo-api-admin; platform or security approve.
	for _, pr := range []authn.Principal{bob, agent} {
		d := p.DecideRequest(RequestInput{Principal: pr, Entitlement: "demo-api-admin", Reason: "migrate", Ticket: "DEMO-1", Duration: time.Hour, Now: day})
		if d.Outcome != NeedsApproval || d.Approval.Needed != 1 {
			t.Errorf("%s request: %v %v", pr.ID, d.Outcome, d.Reasons)
		}
	}
	// Longer than 2h only for the platform team (the condition).
	if d := p.DecideRequest(RequestInput{Principal: bob, Entitlement: "demo-api-admin", Reason: "r", Ticket: "DEMO-1", Duration: 3 * time.Hour, Now: day}); d.Outcome != Deny || d.Reasons[0].Code != ReasonConditionFailed {
		t.Errorf("3h for bob: %v %v", d.Outcome, d.Reasons)
	}
	if d := p.DecideRequest(RequestInput{Principal: alice, Entitlement: "demo-api-admin", Reason: "r", Ticket: "DEMO-1", Duration: 3 * time.Hour, Now: day}); d.Outcome != NeedsApproval {
		t.Errorf("3h for alice: %v %v", d.Outcome, d.Reasons)
	}
	if d := p.CheckApproval(ApprovalInput{Approver: carol, Requester: bob, Entitlement: "demo-api-admin", Approve: true, Now: day}); !d.Approved {
		t.Errorf("carol approves bob: %+v", d)
	}
	if d := p.CheckApproval(ApprovalInput{Approver: workload("spiffe://mayfly.test/cli/alice"), Requester: alice, Entitlement: "demo-api-admin", Approve: true, Now: day}); d.Outcome != Deny {
		t.Errorf("alice approves herself through her CLI identity: %+v", d)
	}
	// Audit reads are approved at once, for people only, and conflict with admin.
	if d := p.DecideRequest(RequestInput{Principal: carol, Entitlement: "demo-audit-read", Reason: "audit", Now: day}); d.Outcome != Allow {
		t.Errorf("carol audit: %v %v", d.Outcome, d.Reasons)
	}
	if d := p.DecideRequest(RequestInput{Principal: bob, Entitlement: "demo-audit-read", Reason: "audit", Held: []string{"demo-api-admin"}, Now: day}); d.Outcome != Deny || d.Reasons[0].Code != ReasonConflictingEntitlement {
		t.Errorf("bob audit while admin: %v %v", d.Outcome, d.Reasons)
	}
	// Platform may break glass, capped to 30m.
	if d := p.DecideBreakGlass(BreakGlassInput{Principal: alice, Entitlement: "demo-api-admin", Reason: "outage", TTL: time.Hour, Now: day}); d.Outcome != Allow || d.TTL != 30*time.Minute || d.Notify[0] != "webhook:security" {
		t.Errorf("alice break-glass: %+v", d)
	}
	if w := p.Webhooks["security"]; w == nil || w.URL != "http://127.0.0.1:8099/mayfly" {
		t.Errorf("webhook %+v", w)
	}
}

func TestIsAdmin(t *testing.T) {
	p, err := Parse([]byte(`
version: 1
trust_domains: [td.test]
groups:
  ops: ["user:carol", "oidc-group:corp/ops"]
admins: ["spiffe://td.test/cli/**", "group:ops", "user:alice"]
entitlements: {}
`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Admins, ","); got != "spiffe://td.test/cli/**,group:ops,user:alice" {
		t.Fatalf("Admins = %s", got)
	}
	for _, tc := range []struct {
		pr   authn.Principal
		want bool
	}{
		{authn.Principal{Kind: authn.KindWorkload, ID: "spiffe://td.test/cli/dev"}, true},
		{authn.Principal{Kind: authn.KindWorkload, ID: "spiffe://td.test/workload/demo"}, false},
		{authn.Principal{Kind: authn.KindHuman, ID: "user:alice"}, true},
		{authn.Principal{Kind: authn.KindHuman, ID: "user:Alice"}, false},
		{authn.Principal{Kind: authn.KindHuman, ID: "user:carol"}, true},
		{authn.Principal{Kind: authn.KindHuman, ID: "user:dave", Groups: []string{"oidc-group:corp/ops"}}, true},
		{authn.Principal{Kind: authn.KindHuman, ID: "user:dave"}, false},
	} {
		if got := p.IsAdmin(tc.pr); got != tc.want {
			t.Errorf("IsAdmin(%s) = %v, want %v", tc.pr.ID, got, tc.want)
		}
	}
	_, err = Parse([]byte("version: 1\nadmins: [\"group:nope\"]\n"), Options{})
	if err == nil || !strings.Contains(err.Error(), `admins[0]: subject "group:nope": undefined group "nope"`) {
		t.Fatalf("undefined admin group: %v", err)
	}
}
