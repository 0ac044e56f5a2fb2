package policy

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/authn"
)

var (
	day   = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC) // conditions on the hour pass
	night = time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)  // before 06:00: they fail

	alice    = human("user:alice", "oidc-group:corp/sre")
	aliceCLI = workload("spiffe://td.test/cli/alice")
	lee      = human("user:lee", "oidc-group:corp/leads")
	leeBot   = workload("spiffe://td.test/agents/lee-bot")
	sam      = human("user:sam", "oidc-group:corp/security")
	oscar    = human("user:oscar", "oidc-group:corp/oncall")
	bob      = human("user:bob")
	zed      = human("user:zed")
)

func govPolicy(t testing.TB, repl map[int]string) *Policy {
	t.Helper()
	return mustParse(t, withGov(repl))
}

func reqGrant(id, ent string, pr authn.Principal, start, end time.Time) Grant {
	return Grant{ID: id, Entitlement: ent, Subject: pr.ID, Kind: GrantRequest, Start: start, End: end, Reason: "fix", Ticket: "INC-1"}
}

func codes(rs []Reason) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Code)
	}
	return strings.Join(out, ",")
}

func TestParseGovernanceValues(t *testing.T) {
	p := mustParse(t, withGov(map[int]string{
		4:  `  - {name: corp, issuer: "https://login.example.org", audience: mayfly, username_claim: preferred_username}`,
		15: `  sec: {url: "http://127.0.0.1:9000/hook", secret_env: HOOK_KEY}`,
	}))
	if want := []IdentityProvider{{Name: "corp", Issuer: "https://login.example.org", Audience: "mayfly", GroupsClaim: "groups", UsernameClaim: "preferred_username"}}; !reflect.DeepEqual(p.IdentityProviders, want) {
		t.Errorf("identity providers %+v", p.IdentityProviders)
	}
	if w := p.Webhooks["sec"]; w == nil || *w != (Webhook{Name: "sec", URL: "http://127.0.0.1:9000/hook", SecretEnv: "HOOK_KEY", Format: WebhookJSON}) {
		t.Errorf("webhook %+v", w)
	}
	if want := [][]string{{"user:alice", "spiffe://td.test/cli/alice"}, {"user:lee", "spiffe://td.test/agents/lee-bot"}}; !reflect.DeepEqual(p.Identities, want) {
		t.Errorf("identities %v", p.Identities)
	}
	e := p.Entitlement("db-admin")
	if !reflect.DeepEqual(e.RequestableBy, []string{"group:sre", "group:agents"}) {
		t.Errorf("requestable_by %v", e.RequestableBy)
	}
	a := e.Approval
	if a.Approvals != 2 || !reflect.DeepEqual(a.Approvers, []string{"group:leads", "group:security"}) || !a.DistinctGroups || a.MaxDuration != 4*time.Hour || a.PendingTTL != DefaultPendingTTL {
		t.Errorf("approval %+v", *a)
	}
	if !e.Require.Reason || e.Require.Ticket != "(INC|CHG)-[0-9]+" {
		t.Errorf("require %+v", e.Require)
	}
	if e.When != `request.time.getHours() >= 6 || "oncall" in principal.groups` {
		t.Errorf("when %q", e.When)
	}
	// conflicts_with is symmetric.
	if !reflect.DeepEqual(e.ConflictsWith, []string{"release"}) || !reflect.DeepEqual(p.Entitlement("release").ConflictsWith, []string{"db-admin"}) {
		t.Errorf("conflicts %v / %v", e.ConflictsWith, p.Entitlement("release").ConflictsWith)
	}
	bg := e.BreakGlass
	if !reflect.DeepEqual(bg.Allowed, []string{"group:oncall"}) || bg.MaxTTL != time.Hour || bg.ReviewWithin != 24*time.Hour || !reflect.DeepEqual(bg.Notify, []string{"webhook:sec"}) {
		t.Errorf("break_glass %+v", *bg)
	}
	if !reflect.DeepEqual(e.Notify, []string{"webhook:sec"}) {
		t.Errorf("notify %v", e.Notify)
	}
	r := p.Entitlement("release")
	if r.Approval.Approvals != 0 || r.Approval.MaxDuration != DefaultMaxDuration || r.BreakGlass != nil || r.When != "" {
		t.Errorf("release %+v", *r)
	}
	// No requestable_by: no approval.
	if p := mustParse(t, with(nil)); p.Entitlement("e1").Approval != nil {
		t.Error("approval without requestable_by")
	}
}

// The worked example in POLICY.md loads once the groups (and the
// entitlement) it names are defined.
func TestPolicyMDExample(t *testing.T) {
	data, err := os.ReadFile("testdata/policy-md.yaml")
	if err != nil {
		t.Fatal(err)
	}
	opts := testOpts()
	opts.Issuers["awssts"] = decodeVault
	p, err := Parse(data, opts)
	if err != nil {
		t.Fatal(err)
	}
	e := p.Entitlement("orders-db-admin")
	if e.Approval.Approvals != 2 || !e.Approval.DistinctGroups || e.BreakGlass.MaxTTL != time.Hour {
		t.Errorf("orders-db-admin %+v", *e)
	}
	// The agent pattern may request; approval is by one lead and one
	// security engineer; at 03:00 only on-call engineers may ask.
	agent := workload("spiffe://prod.example.org/ns/agents/triage")
	d := p.DecideRequest(RequestInput{Principal: agent, Entitlement: "orders-db-admin", Reason: "r", Ticket: "INC-42", Now: day})
	if d.Outcome != NeedsApproval || d.Approval.Needed != 2 {
		t.Errorf("agent request %v %v", d.Outcome, d.Reasons)
	}
	d = p.DecideRequest(RequestInput{Principal: agent, Entitlement: "orders-db-admin", Reason: "r", Ticket: "INC-42", Now: night})
	if codes(d.Reasons) != ReasonConditionFailed {
		t.Errorf("agent at night %v", d.Reasons)
	}
	sre := human("user:bob@example.org", "oidc-group:corp/oncall")
	if d := p.DecideRequest(RequestInput{Principal: sre, Entitlement: "orders-db-admin", Reason: "r", Ticket: "CHG-7", Now: night}); d.Outcome != NeedsApproval {
		t.Errorf("on-call at night %v %v", d.Outcome, d.Reasons)
	}
	if w := p.Webhooks["security"]; w.Format != WebhookSlack || w.SecretEnv != "MAYFLY_WEBHOOK_SECRET" {
		t.Errorf("webhook %+v", w)
	}
	if len(p.IdentityProviders) != 1 || p.IdentityProviders[0].UsernameClaim != "email" {
		t.Errorf("idps %+v", p.IdentityProviders)
	}
}

func TestDecideGovernance(t *testing.T) {
	p := govPolicy(t, nil)
	g1 := reqGrant("g1", "db-admin", alice, day.Add(-time.Hour), day.Add(time.Hour))
	bg := Grant{ID: "bg1", Entitlement: "db-admin", Subject: alice.ID, Kind: GrantBreakGlass, Start: night.Add(-time.Minute), End: night.Add(time.Hour)}
	needs := func(extra ...string) string { return strings.Join(append(extra, ReasonApprovalRequired), ",") }
	tests := []struct {
		name    string
		in      Input
		outcome Outcome
		codes   string
		grant   string
		ttl     time.Duration
		msg     string // the first reason's message, when set
	}{
		{"requestable without grant", Input{Principal: alice, Entitlement: "db-admin", Now: day}, NeedsApproval, needs(), "", 0,
			`entitlement "db-admin" needs an approved access request: 2 approvals from group:leads, group:security, each from a different entry`},
		{"agent may request", Input{Principal: leeBot, Entitlement: "db-admin", Now: day}, NeedsApproval, needs(), "", 0, ""},
		{"stranger learns nothing", Input{Principal: zed, Entitlement: "db-admin", Now: day}, Deny, ReasonNotGranted, "", 0,
			`no grant allows user:zed to use entitlement "db-admin"`},
		{"request grant", Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{g1}, Now: day}, Allow, ReasonRequestGrant, "g1", 30 * time.Minute,
			`access request grant "g1" lets user:alice use entitlement "db-admin" until 2026-01-01T13:00:00Z`},
		{"request grant caps the TTL", Input{Principal: alice, Entitlement: "db-admin", TTL: 2 * time.Hour, Grants: []Grant{g1}, Now: day.Add(50 * time.Minute)}, Allow,
			ReasonRequestGrant + "," + ReasonTTLClamped, "g1", 10 * time.Minute, ""},
		{"grant of someone else", Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{reqGrant("gz", "db-admin", zed, day.Add(-time.Hour), day.Add(time.Hour))}, Now: day}, NeedsApproval, needs(), "", 0, ""},
		{"grant not started", Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{reqGrant("g2", "db-admin", alice, day.Add(time.Hour), day.Add(2*time.Hour))}, Now: day},
			NeedsApproval, needs(ReasonGrantNotStarted), "", 0, `access request grant "g2" for entitlement "db-admin" starts at 2026-01-01T13:00:00Z`},
		{"grant ended", Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{g1}, Now: day.Add(time.Hour)},
			NeedsApproval, needs(ReasonGrantEnded), "", 0, `access request grant "g1" for entitlement "db-admin" ended at 2026-01-01T13:00:00Z`},
		{"condition fails at night", Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{reqGrant("g1", "db-admin", alice, night, night.Add(time.Hour))}, Now: night},
			Deny, ReasonConditionFailed, "", 0, `the condition of entitlement "db-admin" is not met`},
		{"condition holds for on-call", Input{Principal: human("user:alice", "oidc-group:corp/sre", "oidc-group:corp/oncall"), Entitlement: "db-admin", Grants: []Grant{reqGrant("g1", "db-admin", alice, night, night.Add(time.Hour))}, Now: night},
			Allow, ReasonRequestGrant, "g1", 30 * time.Minute, ""},
		{"break-glass is exempt from the condition", Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{bg}, Now: night}, Allow, ReasonBreakGlassGrant, "bg1", 30 * time.Minute,
			`break-glass grant "bg1" lets user:alice use entitlement "db-admin" until 2026-01-01T04:00:00Z`},
		{"blocked break-glass gives nothing", Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{bg}, BreakGlassBlocked: true, Now: night},
			Deny, ReasonBreakGlassBlocked + "," + ReasonConditionFailed, "", 0, "a break-glass review by user:alice is overdue; break-glass gives nothing until it is completed"},
		{"conflict with a held entitlement", Input{Principal: alice, Entitlement: "db-admin", Held: []string{"release"}, Grants: []Grant{g1}, Now: day}, Deny, ReasonConflictingEntitlement, "", 0,
			`entitlement "db-admin" conflicts with "release", which user:alice holds (segregation of duties)`},
		{"conflict is symmetric and counts grants", Input{Principal: alice, Entitlement: "release", Grants: []Grant{g1}, Now: day}, Deny, ReasonConflictingEntitlement, "", 0,
			`entitlement "release" conflicts with "db-admin", which user:alice holds (segregation of duties)`},
		{"conflict counts standing grants", Input{Principal: bob, Entitlement: "db-admin", Grants: []Grant{reqGrant("g3", "db-admin", bob, day, day.Add(time.Hour))}, Now: day}, Deny, ReasonConflictingEntitlement, "", 0, ""},
		{"break-glass available", Input{Principal: oscar, Entitlement: "db-admin", Now: night}, Deny, ReasonNotGranted + "," + ReasonBreakGlassAvailable, "", 0, ""},
		{"standing without certification tracking", Input{Principal: bob, Entitlement: "release", Now: day}, Allow, ReasonStandingGrant, "rel-bob", 10 * time.Minute, ""},
		{"standing certified", Input{Principal: bob, Entitlement: "release", Certified: map[string]time.Time{"rel-bob": day.Add(-29 * 24 * time.Hour)}, Now: day}, Allow, ReasonStandingGrant, "rel-bob", 10 * time.Minute, ""},
		{"standing lapsed", Input{Principal: bob, Entitlement: "release", Certified: map[string]time.Time{"rel-bob": day.Add(-30 * 24 * time.Hour)}, Now: day}, Deny, ReasonCertificationLapsed, "", 0,
			`standing grant "rel-bob" for entitlement "release" lapsed at 2026-01-01T12:00:00Z: not certified within its review period of 30d`},
		{"standing never certified", Input{Principal: bob, Entitlement: "release", Certified: map[string]time.Time{}, Now: day}, Deny, ReasonCertificationLapsed, "", 0,
			`standing grant "rel-bob" for entitlement "release" has no certification record`},
		{"standing revoked at certification", Input{Principal: bob, Entitlement: "release", Certified: map[string]time.Time{"rel-bob": {}}, Now: day}, Deny, ReasonCertificationLapsed, "", 0,
			`standing grant "rel-bob" for entitlement "release" was revoked by its owner at certification`},
		{"lapsed but requestable", Input{Principal: human("user:bob", "oidc-group:corp/sre"), Entitlement: "release", Certified: map[string]time.Time{}, Now: day}, NeedsApproval, needs(ReasonCertificationLapsed), "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.in)
			if d.Outcome != tt.outcome || codes(d.Reasons) != tt.codes || d.GrantID != tt.grant || d.TTL != tt.ttl {
				t.Fatalf("got %v %s grant %q ttl %v\n%+v", d.Outcome, codes(d.Reasons), d.GrantID, d.TTL, d.Reasons)
			}
			if tt.msg != "" && d.Reasons[0].Message != tt.msg {
				t.Errorf("message\n got %s\nwant %s", d.Reasons[0].Message, tt.msg)
			}
			if d.Outcome == Allow && (d.ExpiresAt.After(d.HardEnd) || d.HardEnd.After(tt.in.Now.Add(d.Entitlement.MaxTTL))) {
				t.Errorf("expiry %v hard end %v", d.ExpiresAt, d.HardEnd)
			}
			if d.Outcome == NeedsApproval && (d.Approval == nil || d.Approval.Needed != d.Entitlement.Approval.Approvals) {
				t.Errorf("approval %+v", d.Approval)
			}
		})
	}
	// A dynamic grant's hard end is its end.
	d := p.Decide(Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{g1}, Now: day})
	if !d.HardEnd.Equal(g1.End) || d.GrantKind != GrantRequest {
		t.Errorf("hard end %v kind %v", d.HardEnd, d.GrantKind)
	}
}

func TestConditionErrorDenies(t *testing.T) {
	p := govPolicy(t, map[int]string{27: `    when: 'principal.groups[3] == "x"'`})
	g := reqGrant("g1", "db-admin", alice, day, day.Add(time.Hour))
	d := p.Decide(Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{g}, Now: day})
	if d.Outcome != Deny || codes(d.Reasons) != ReasonConditionError || !strings.HasPrefix(d.Reasons[0].Message, `the condition of entitlement "db-admin" could not be evaluated: `) {
		t.Fatalf("%v %+v", d.Outcome, d.Reasons)
	}
}

// Conditions see every documented variable.
func TestConditionVariables(t *testing.T) {
	p := govPolicy(t, map[int]string{27: `    when: >-` + "\n" +
		`      principal.id == "user:alice" && principal.kind == "human" && principal.groups == ["sre"] &&` + "\n" +
		`      principal.idp_groups == ["oidc-group:corp/sre"] && principal.trust_domain == "" &&` + "\n" +
		`      request.entitlement == "db-admin" && request.reason == "fix" && request.ticket == "INC-1" &&` + "\n" +
		`      request.duration == duration("90m") && request.time == timestamp("2026-01-01T12:00:00Z")`})
	in := RequestInput{Principal: alice, Entitlement: "db-admin", Duration: 90 * time.Minute, Reason: "fix", Ticket: "INC-1", Now: day}
	if d := p.DecideRequest(in); d.Outcome != NeedsApproval {
		t.Fatalf("%v %+v", d.Outcome, d.Reasons)
	}
	// At issuance, a grant's reason and ticket stand in for empty ones.
	g := reqGrant("g1", "db-admin", alice, day, day.Add(2*time.Hour))
	if d := p.Decide(Input{Principal: alice, Entitlement: "db-admin", TTL: 90 * time.Minute, Grants: []Grant{g}, Now: day}); d.Outcome != Allow {
		t.Fatalf("%v %+v", d.Outcome, d.Reasons)
	}
	p = govPolicy(t, map[int]string{27: `    when: 'principal.trust_domain == "td.test" && principal.kind == "workload"'`})
	if d := p.DecideRequest(RequestInput{Principal: leeBot, Entitlement: "db-admin", Reason: "r", Ticket: "INC-2", Now: day}); d.Outcome != NeedsApproval {
		t.Fatalf("%v %+v", d.Outcome, d.Reasons)
	}
}

func TestDecideRequest(t *testing.T) {
	p := govPolicy(t, nil)
	ok := RequestInput{Principal: alice, Entitlement: "db-admin", Reason: "fix the index", Ticket: "INC-1234", Now: day}
	mod := func(f func(*RequestInput)) RequestInput { in := ok; f(&in); return in }
	g1 := reqGrant("g1", "db-admin", alice, day.Add(-time.Hour), day.Add(time.Hour))
	tests := []struct {
		name    string
		in      RequestInput
		outcome Outcome
		codes   string
		msgs    []string
	}{
		{"needs approval", ok, NeedsApproval, ReasonApprovalRequired, nil},
		{"agent request waits for humans", mod(func(in *RequestInput) { in.Principal = leeBot }), NeedsApproval, ReasonApprovalRequired, nil},
		{"not requestable", mod(func(in *RequestInput) { in.Principal = zed }), Deny, ReasonNotRequestable,
			[]string{`user:zed may not request entitlement "db-admin"`}},
		{"unknown looks the same", mod(func(in *RequestInput) { in.Principal = zed; in.Entitlement = "nope" }), Deny, ReasonNotRequestable,
			[]string{`user:zed may not request entitlement "nope"`}},
		{"too long", mod(func(in *RequestInput) { in.Duration = 5 * time.Hour }), Deny, ReasonDurationTooLong,
			[]string{`requested duration 5h is longer than the maximum of 4h for entitlement "db-admin"`}},
		{"every problem at once", mod(func(in *RequestInput) { in.Reason = " "; in.Ticket = "INC-12x"; in.Held = []string{"release"} }), Deny,
			ReasonReasonRequired + "," + ReasonTicketMismatch + "," + ReasonConflictingEntitlement,
			[]string{`entitlement "db-admin" requires a reason`,
				`ticket "INC-12x" does not match the pattern "(INC|CHG)-[0-9]+" required by entitlement "db-admin"`,
				`entitlement "db-admin" conflicts with "release", which user:alice holds (segregation of duties)`}},
		{"ticket is anchored", mod(func(in *RequestInput) { in.Ticket = "xINC-1" }), Deny, ReasonTicketMismatch, nil},
		{"ticket missing", mod(func(in *RequestInput) { in.Ticket = "" }), Deny, ReasonTicketMismatch,
			[]string{`entitlement "db-admin" requires a ticket matching "(INC|CHG)-[0-9]+"`}},
		{"other ticket form", mod(func(in *RequestInput) { in.Ticket = "CHG-7" }), NeedsApproval, ReasonApprovalRequired, nil},
		{"condition", mod(func(in *RequestInput) { in.Now = night }), Deny, ReasonConditionFailed, nil},
		{"extension needs approval", mod(func(in *RequestInput) { in.Grants = []Grant{g1} }), NeedsApproval, ReasonApprovalRequired + "," + ReasonExtendsGrant,
			[]string{"", `extends access request grant "g1", which ends at 2026-01-01T13:00:00Z; an extension is approved like a new request`}},
		{"auto-approve", mod(func(in *RequestInput) { in.Entitlement = "release" }), Allow, ReasonAutoApprove,
			[]string{`entitlement "release" approves requests at once (approvals: 0)`}},
		{"negative duration", mod(func(in *RequestInput) { in.Duration = -time.Minute }), Deny, ReasonInvalidDuration, nil},
		{"start too far ahead", mod(func(in *RequestInput) { in.StartAt = day.Add(31 * 24 * time.Hour) }), Deny, ReasonInvalidStart, nil},
		{"control characters", mod(func(in *RequestInput) { in.Reason = "ok\x1b[2Jgone" }), Deny, ReasonInvalidRequest, []string{"reason holds control characters"}},
		{"reason too long", mod(func(in *RequestInput) { in.Reason = strings.Repeat("r", MaxReasonLen+1) }), Deny, ReasonInvalidRequest, nil},
		{"no time", mod(func(in *RequestInput) { in.Now = time.Time{} }), Deny, ReasonInvalidTime, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.DecideRequest(tt.in)
			if d.Outcome != tt.outcome || codes(d.Reasons) != tt.codes {
				t.Fatalf("got %v %s %+v", d.Outcome, codes(d.Reasons), d.Reasons)
			}
			for i, m := range tt.msgs {
				if m != "" && d.Reasons[i].Message != m {
					t.Errorf("reason %d\n got %s\nwant %s", i, d.Reasons[i].Message, m)
				}
			}
		})
	}
	d := p.DecideRequest(ok)
	if d.Duration != 2*time.Hour || !d.ExpiresAt.Equal(day.Add(24*time.Hour)) ||
		!reflect.DeepEqual(d.Approval, &ApprovalRule{Needed: 2, Approvers: []string{"group:leads", "group:security"}, DistinctGroups: true}) {
		t.Errorf("decision %+v", d)
	}
	if d := p.DecideRequest(mod(func(in *RequestInput) { in.Grants = []Grant{g1} })); d.Extends != "g1" {
		t.Errorf("extends %q", d.Extends)
	}
	for code, want := range map[string]bool{ReasonDurationTooLong: true, ReasonTicketMismatch: true, ReasonReasonRequired: true, ReasonConditionFailed: false, ReasonNotRequestable: false, ReasonConflictingEntitlement: false} {
		if IsInvalidArgument(code) != want {
			t.Errorf("IsInvalidArgument(%s) != %v", code, want)
		}
	}
}

var approvalPolicy = lines(
	"version: 1",
	"trust_domains: [td.test]",
	"groups:",
	`  leads: ["user:lee", "user:pat", "user:les"]`,
	`  security: ["user:sam", "user:pat", "spiffe://td.test/bots/*"]`,
	`  devs: ["user:dev", "spiffe://td.test/agents/*"]`,
	"identities:",
	`  - ["user:lee", "spiffe://td.test/bots/lee"]`,
	`  - ["user:dev", "spiffe://td.test/agents/dev-bot"]`,
	"entitlements:",
	"  two:",
	"    {description: d, owner: user:lee, issuer: jwt, jwt: {audience: a}, ttl: 1m, max_ttl: 1h,",
	"     requestable_by: [group:devs], approval: {approvals: 2, approvers: [group:leads, group:security], distinct_groups: true}}",
	"  any2:",
	"    {description: d, owner: user:lee, issuer: jwt, jwt: {audience: a}, ttl: 1m, max_ttl: 1h,",
	"     requestable_by: [group:devs, group:leads], approval: {approvals: 2, approvers: [group:leads, group:security]}}",
)

func TestCheckApproval(t *testing.T) {
	p := mustParse(t, approvalPolicy)
	dev, devBot := human("user:dev"), workload("spiffe://td.test/agents/dev-bot")
	lee, les, pat, sam := human("user:lee"), human("user:les"), human("user:pat"), human("user:sam")
	leeBot := workload("spiffe://td.test/bots/lee")
	in := func(ent string, approver authn.Principal, prior ...authn.Principal) ApprovalInput {
		return ApprovalInput{Approver: approver, Requester: dev, Entitlement: ent, Approve: true, Prior: prior, Now: day}
	}
	tests := []struct {
		name      string
		in        ApprovalInput
		outcome   Outcome
		code      string
		counted   []string
		remaining int
		msg       string
	}{
		{"first approval", in("two", lee), Allow, ReasonApprovalCounted, []string{"group:leads"}, 1, "user:lee approves as group:leads; 1 of 2 approvals"},
		{"second from the other group", in("two", sam, lee), Allow, ReasonApprovalCounted, []string{"group:leads", "group:security"}, 0, ""},
		{"matching moves an earlier approval", in("two", lee, pat), Allow, ReasonApprovalCounted, []string{"group:security", "group:leads"}, 0, ""},
		{"same group twice does not count", in("two", les, lee), Deny, ReasonApprovalNotCounted, nil, 0,
			`entitlement "two" needs each approval from a different approvers entry (distinct_groups); user:les approves as group:leads, which is already counted`},
		{"without distinct groups it counts", in("any2", les, lee), Allow, ReasonApprovalCounted, []string{"group:leads", "group:leads"}, 0, ""},
		{"self-approval", func() ApprovalInput { i := in("any2", lee); i.Requester = lee; return i }(), Deny, ReasonSelfApproval, nil, 0,
			"user:lee may not review a request by user:lee: they are the same person or agent"},
		{"self-approval under another identity", func() ApprovalInput { i := in("any2", leeBot); i.Requester = lee; return i }(), Deny, ReasonSelfApproval, nil, 0,
			"spiffe://td.test/bots/lee may not review a request by user:lee: they are the same person or agent"},
		{"a person approving their agent's request", func() ApprovalInput { i := in("two", dev); i.Requester = devBot; return i }(), Deny, ReasonSelfApproval, nil, 0, ""},
		{"a workload approving its own request", func() ApprovalInput { i := in("two", leeBot); i.Requester = leeBot; return i }(), Deny, ReasonSelfApproval, nil, 0, ""},
		{"outsider", in("two", human("user:eve")), Deny, ReasonNotApprover, nil, 0, `user:eve is not an approver for entitlement "two"`},
		{"unknown entitlement", in("nope", lee), Deny, ReasonNotApprover, nil, 0, `user:lee is not an approver for entitlement "nope"`},
		{"twice", in("two", lee, lee), Deny, ReasonAlreadyApproved, nil, 0, "user:lee has already approved this request (as user:lee); one approver counts once"},
		{"twice under two identities", in("any2", leeBot, lee), Deny, ReasonAlreadyApproved, nil, 0,
			"spiffe://td.test/bots/lee has already approved this request (as user:lee); one approver counts once"},
		{"an approver the policy no longer names does not count", in("any2", lee, human("user:gone")), Allow, ReasonApprovalCounted, []string{"", "group:leads"}, 1, ""},
		{"denial", func() ApprovalInput { i := in("two", lee); i.Approve = false; return i }(), Allow, "", nil, 2, ""},
		{"denial by an outsider", func() ApprovalInput { i := in("two", zed); i.Approve = false; return i }(), Deny, ReasonNotApprover, nil, 0, ""},
		{"denial of one's own request", func() ApprovalInput { i := in("two", lee); i.Approve = false; i.Requester = leeBot; return i }(), Deny, ReasonSelfApproval, nil, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.CheckApproval(tt.in)
			if d.Outcome != tt.outcome || codes(d.Reasons) != tt.code || !reflect.DeepEqual(d.Counted, tt.counted) || d.Remaining != tt.remaining {
				t.Fatalf("got %v %s counted %q remaining %d %+v", d.Outcome, codes(d.Reasons), d.Counted, d.Remaining, d.Reasons)
			}
			if d.Approved != (d.Outcome == Allow && tt.in.Approve && d.Remaining == 0) {
				t.Errorf("approved %v", d.Approved)
			}
			if tt.counted != nil && d.CountedAs != tt.counted[len(tt.counted)-1] {
				t.Errorf("counted as %q", d.CountedAs)
			}
			if tt.msg != "" && d.Reasons[0].Message != tt.msg {
				t.Errorf("message\n got %s\nwant %s", d.Reasons[0].Message, tt.msg)
			}
		})
	}
}

func TestAssignApprovalsIsMaximum(t *testing.T) {
	// Three approvals, three entries; a greedy first-fit assignment would
	// count two, the matching counts three.
	people := [][]int{{0, 1}, {0}, {1, 2}}
	got := assignApprovals(people, 3, true)
	if !reflect.DeepEqual(got, []int{1, 0, 2}) {
		t.Errorf("assign %v", got)
	}
	if got := assignApprovals([][]int{{0}, {0}, nil}, 2, true); !reflect.DeepEqual(got, []int{0, -1, -1}) {
		t.Errorf("assign %v", got)
	}
}

func TestDecideBreakGlass(t *testing.T) {
	p := govPolicy(t, nil)
	ok := BreakGlassInput{Principal: oscar, Entitlement: "db-admin", Reason: "orders DB is down", Now: night}
	d := p.DecideBreakGlass(ok)
	if d.Outcome != Allow || d.TTL != time.Hour || !d.End.Equal(night.Add(time.Hour)) || !d.ReviewDue.Equal(night.Add(24*time.Hour)) ||
		!reflect.DeepEqual(d.Notify, []string{"webhook:sec"}) || d.Clamped || codes(d.Reasons) != ReasonBreakGlass {
		t.Fatalf("%+v", d)
	}
	if want := `user:oscar breaks glass for entitlement "db-admin" until 2026-01-01T04:00:00Z; review due by 2026-01-02T03:00:00Z`; d.Reasons[0].Message != want {
		t.Errorf("message %s", d.Reasons[0].Message)
	}
	in := ok
	in.TTL = 3 * time.Hour
	d = p.DecideBreakGlass(in)
	if d.Outcome != Allow || d.TTL != time.Hour || !d.Clamped || codes(d.Reasons) != ReasonBreakGlass+","+ReasonTTLClamped ||
		d.Reasons[1].Message != `TTL reduced from 3h to 1h: break_glass.max_ttl of entitlement "db-admin" is 1h` {
		t.Errorf("clamp %+v", d)
	}
	for name, tc := range map[string]struct {
		f    func(*BreakGlassInput)
		code string
	}{
		"blocked":         {func(in *BreakGlassInput) { in.Blocked = true }, ReasonBreakGlassBlocked},
		"no reason":       {func(in *BreakGlassInput) { in.Reason = "" }, ReasonReasonRequired},
		"not allowed":     {func(in *BreakGlassInput) { in.Principal = alice }, ReasonBreakGlassNotAllowed},
		"unknown":         {func(in *BreakGlassInput) { in.Entitlement = "nope" }, ReasonBreakGlassNotAllowed},
		"no break glass":  {func(in *BreakGlassInput) { in.Entitlement = "release" }, ReasonBreakGlassNotAllowed},
		"conflict":        {func(in *BreakGlassInput) { in.Held = []string{"release"} }, ReasonConflictingEntitlement},
		"negative TTL":    {func(in *BreakGlassInput) { in.TTL = -time.Second }, ReasonInvalidTTL},
		"blocked, silent": {func(in *BreakGlassInput) { in.Blocked = true; in.Reason = "" }, ReasonBreakGlassBlocked + "," + ReasonReasonRequired},
	} {
		in := ok
		tc.f(&in)
		if d := p.DecideBreakGlass(in); d.Outcome != Deny || codes(d.Reasons) != tc.code {
			t.Errorf("%s: %v %+v", name, d.Outcome, d.Reasons)
		}
	}
}

func TestReviews(t *testing.T) {
	p := govPolicy(t, nil)
	certified := day.Add(-20 * 24 * time.Hour)
	got := p.Reviews(map[string]time.Time{"rel-bob": certified}, day)
	want := []ReviewItem{{Entitlement: "release", Owner: "group:sre", GrantID: "rel-bob", Subject: "user:bob", Purpose: "releases",
		Until: time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), ReviewEvery: 30 * 24 * time.Hour, PeriodStart: certified, Due: certified.Add(30 * 24 * time.Hour)}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reviews\n got %+v\nwant %+v", got, want)
	}
	if got := p.Reviews(map[string]time.Time{"rel-bob": certified}, day.Add(10*24*time.Hour)); !got[0].Lapsed {
		t.Errorf("not lapsed at due time: %+v", got[0])
	}
	if got := p.Reviews(nil, day); !got[0].Lapsed || !got[0].Due.IsZero() {
		t.Errorf("unknown: %+v", got[0])
	}
	if got := p.Reviews(map[string]time.Time{"rel-bob": {}}, day); !got[0].Revoked || !got[0].Lapsed {
		t.Errorf("revoked: %+v", got[0])
	}
	if ent, g := p.StandingGrant("rel-bob"); ent.Name != "release" || g.Subject != "user:bob" {
		t.Errorf("StandingGrant %v %v", ent, g)
	}
	if ent, g := p.StandingGrant("nope"); ent != nil || g != nil {
		t.Error("StandingGrant of unknown id")
	}
}

func TestMembershipHelpers(t *testing.T) {
	p := govPolicy(t, nil)
	for _, tc := range []struct {
		name string
		got  bool
		want bool
	}{
		{"alice may request", p.CanRequest(alice, "db-admin"), true},
		{"agent may request", p.CanRequest(leeBot, "db-admin"), true},
		{"lee may not request", p.CanRequest(lee, "db-admin"), false},
		{"unknown", p.CanRequest(alice, "nope"), false},
		{"lee approves", p.CanApprove(lee, "db-admin"), true},
		{"sam approves", p.CanApprove(sam, "db-admin"), true},
		{"alice does not approve", p.CanApprove(alice, "db-admin"), false},
		{"nobody approves an auto-approved entitlement", p.CanApprove(lee, "release"), false},
		{"oscar breaks glass", p.CanBreakGlass(oscar, "db-admin"), true},
		{"alice does not", p.CanBreakGlass(alice, "db-admin"), false},
		{"sre owns", p.Owns(alice, "release"), true},
		{"lee does not own", p.Owns(lee, "release"), false},
		{"same person", p.SameIdentity(alice, aliceCLI), true},
		{"same id", p.SameIdentity(lee, lee), true},
		{"person and agent", p.SameIdentity(lee, leeBot), true},
		{"different people", p.SameIdentity(alice, lee), false},
		{"empty ids", p.SameIdentity(authn.Principal{}, authn.Principal{}), false},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %v", tc.name, tc.got)
		}
	}
}

func TestWhatIf(t *testing.T) {
	oldP := govPolicy(t, nil)
	newP := govPolicy(t, map[int]string{
		25: "    approval: {approvals: 1, approvers: [group:leads, group:security], max_duration: 4h}",              // fewer approvals
		27: "#",                                                                                                     // no time window
		29: `    break_glass: {allowed: [group:oncall], max_ttl: 30m, review_within: 24h, notify: ["webhook:sec"]}`, // shorter break-glass
		36: "    ttl: 5m",                                                                                           // shorter release tokens
		37: "    max_ttl: 5m",
	})
	rec := func(kind RecordKind, in any) Record {
		r := Record{Kind: kind}
		switch in := in.(type) {
		case Input:
			r.Issue, r.At, r.Result = &in, in.Now, ResultOf(oldP.Decide(in))
		case RequestInput:
			r.Request, r.At, r.Result = &in, in.Now, ResultOf(oldP.DecideRequest(in))
		case ApprovalInput:
			r.Approval, r.At, r.Result = &in, in.Now, ResultOf(oldP.CheckApproval(in))
		case BreakGlassInput:
			r.BreakGlass, r.At, r.Result = &in, in.Now, ResultOf(oldP.DecideBreakGlass(in))
		}
		return r
	}
	records := []Record{
		rec(RecordIssue, Input{Principal: bob, Entitlement: "release", Now: day}),                                                                     // 0: TTL 10m -> 5m
		rec(RecordRequest, RequestInput{Principal: alice, Entitlement: "db-admin", Reason: "r", Ticket: "INC-1", Now: night}),                         // 1: deny -> needs approval
		rec(RecordRequest, RequestInput{Principal: alice, Entitlement: "db-admin", Reason: "r", Ticket: "INC-1", Now: day}),                           // 2: needs 2 -> 1
		rec(RecordIssue, Input{Principal: zed, Entitlement: "db-admin", Now: day}),                                                                    // unchanged
		rec(RecordApproval, ApprovalInput{Approver: lee, Requester: alice, Entitlement: "db-admin", Approve: true, Now: day}),                         // 4: 1 left -> 0 left
		rec(RecordBreakGlass, BreakGlassInput{Principal: oscar, Entitlement: "db-admin", Reason: "down", Now: night}),                                 // 5: 1h -> 30m
		{ID: "broken", Kind: RecordIssue, At: day},                                                                                                    // 6: unreplayable
		rec(RecordIssue, Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{reqGrant("g", "db-admin", alice, night, day)}, Now: night}), // 7: deny -> allow
	}
	// A record the old policy no longer reproduces: it drifted.
	drifted := rec(RecordIssue, Input{Principal: zed, Entitlement: "release", Now: day})
	drifted.Result = Result{Outcome: Allow, TTL: time.Minute, Basis: "old-grant"}
	records = append(records, drifted) // 8: drift, but old and new agree: not a change

	changes := WhatIf(oldP, newP, records)
	type row struct {
		i        int
		changed  string
		old, new Outcome
		tightens bool
		loosens  bool
	}
	var got []row
	for _, c := range changes {
		i := -1
		for j := range records {
			if reflect.DeepEqual(records[j], c.Record) {
				i = j
			}
		}
		got = append(got, row{i, strings.Join(c.Changed, ","), c.Old.Outcome, c.New.Outcome, c.Tightens, c.Loosens})
	}
	want := []row{
		{0, "ttl", Allow, Allow, true, false},
		{1, "outcome,ttl", Deny, NeedsApproval, false, true},
		{2, "approvals", NeedsApproval, NeedsApproval, false, true},
		{4, "approvals", Allow, Allow, false, true},
		{5, "ttl", Allow, Allow, true, false},
		{6, "unreplayable", Deny, Deny, false, false},
		{7, "outcome,ttl", Deny, Allow, false, true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes\n got %+v\nwant %+v", got, want)
	}
	if c := changes[1]; codes(c.New.Reasons) != ReasonApprovalRequired || codes(c.Old.Reasons) != ReasonConditionFailed {
		t.Errorf("reasons old %v new %v", c.Old.Reasons, c.New.Reasons)
	}
	if changes[5].Err != `policy: record "broken" of kind "issue" carries no issue input` {
		t.Errorf("err %q", changes[5].Err)
	}
	s := Summarize(len(records), changes)
	if s.Records != 9 || s.Changed != 7 || s.Tightened != 2 || s.Loosened != 4 || s.Unreplayable != 1 || s.Drifted != 0 ||
		!reflect.DeepEqual(s.Transitions, map[string]int{"request: deny -> needs_approval": 1, "issue: deny -> allow": 1}) {
		t.Errorf("summary %+v", s)
	}

	// With no old policy the recorded results are the baseline, and the
	// drifted record shows up as a change.
	changes = WhatIf(nil, oldP, records[8:])
	if len(changes) != 1 || changes[0].Old.Outcome != Allow || changes[0].New.Outcome != Deny || !changes[0].Tightens {
		t.Errorf("baseline from records: %+v", changes)
	}
	// Drift is flagged when the old policy disagrees with the record.
	changes = WhatIf(oldP, newP, []Record{func() Record { r := records[0]; r.Result.TTL = time.Minute; return r }()})
	if len(changes) != 1 || !changes[0].Drift {
		t.Errorf("drift: %+v", changes)
	}
}

// Records survive JSON (the access store keeps them that way) and replay
// to the same result.
func TestRecordJSON(t *testing.T) {
	p := govPolicy(t, nil)
	in := Input{Principal: alice, Entitlement: "db-admin", Grants: []Grant{reqGrant("g1", "db-admin", alice, day, day.Add(time.Hour))},
		Certified: map[string]time.Time{"rel-bob": day}, Held: []string{"x"}, Now: day}
	r := Record{ID: "r1", Kind: RecordIssue, At: day, PolicyDigest: p.Digest, Issue: &in, Result: ResultOf(p.Decide(in))}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"outcome":"allow"`) {
		t.Errorf("outcome not as text: %s", data)
	}
	var back Record
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	res, err := p.Replay(back)
	if err != nil || !reflect.DeepEqual(res, r.Result) {
		t.Errorf("replay %+v, %v; want %+v", res, err, r.Result)
	}
	var o Outcome
	if err := o.UnmarshalText([]byte("maybe")); err == nil {
		t.Error("unknown outcome accepted")
	}
}
