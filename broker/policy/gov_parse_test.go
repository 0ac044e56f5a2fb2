package policy

import (
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// govBase is a valid policy using every governance key; tests change
// single lines so expected errors read their line numbers off this list.
var govBase = []string{
	/* 1 */ "version: 1",
	/* 2 */ "trust_domains: [td.test]",
	/* 3 */ "identity_providers:",
	/* 4 */ `  - {name: corp, issuer: "https://login.example.org", audience: mayfly}`,
	/* 5 */ "groups:",
	/* 6 */ `  sre: ["user:alice", "oidc-group:corp/sre"]`,
	/* 7 */ `  leads: ["user:lee", "oidc-group:corp/leads"]`,
	/* 8 */ `  security: ["user:sam", "oidc-group:corp/security"]`,
	/* 9 */ `  oncall: ["oidc-group:corp/oncall"]`,
	/* 10 */ `  agents: ["spiffe://td.test/agents/*"]`,
	/* 11 */ "identities:",
	/* 12 */ `  - ["user:alice", "spiffe://td.test/cli/alice"]`,
	/* 13 */ `  - ["user:lee", "spiffe://td.test/agents/lee-bot"]`,
	/* 14 */ "webhooks:",
	/* 15 */ `  sec: {url: "https://hooks.example.org/m", secret_env: HOOK_KEY, format: slack}`,
	/* 16 */ "entitlements:",
	/* 17 */ "  db-admin:",
	/* 18 */ "    description: d",
	/* 19 */ "    owner: group:sre",
	/* 20 */ "    issuer: jwt",
	/* 21 */ "    jwt: {audience: a}",
	/* 22 */ "    ttl: 30m",
	/* 23 */ "    max_ttl: 2h",
	/* 24 */ "    requestable_by: [group:sre, group:agents]",
	/* 25 */ "    approval: {approvals: 2, approvers: [group:leads, group:security], distinct_groups: true, max_duration: 4h}",
	/* 26 */ `    require: {reason: true, ticket: "(INC|CHG)-[0-9]+"}`,
	/* 27 */ `    when: 'request.time.getHours() >= 6 || "oncall" in principal.groups'`,
	/* 28 */ "    conflicts_with: [release]",
	/* 29 */ `    break_glass: {allowed: [group:oncall], max_ttl: 1h, review_within: 24h, notify: ["webhook:sec"]}`,
	/* 30 */ `    notify: ["webhook:sec"]`,
	/* 31 */ "  release:",
	/* 32 */ "    description: d",
	/* 33 */ "    owner: group:sre",
	/* 34 */ "    issuer: jwt",
	/* 35 */ "    jwt: {audience: r}",
	/* 36 */ "    ttl: 10m",
	/* 37 */ "    max_ttl: 1h",
	/* 38 */ "    standing:",
	/* 39 */ `      - {id: rel-bob, subject: "user:bob", purpose: releases, until: 2027-01-01, review_every: 30d}`,
	/* 40 */ "    requestable_by: [group:sre]",
	/* 41 */ "    approval: {approvals: 0}",
}

// withGov returns govBase with the given 1-based lines replaced.
func withGov(repl map[int]string) []byte {
	out := make([]string, len(govBase))
	copy(out, govBase)
	for n, s := range repl {
		out[n-1] = s
	}
	return lines(out...)
}

func TestGovBaseIsValid(t *testing.T) {
	p := mustParse(t, withGov(nil))
	if got := len(p.Entitlements); got != 2 {
		t.Fatalf("%d entitlements", got)
	}
}

func TestParseGovernanceErrors(t *testing.T) {
	tests := []struct {
		name string
		repl map[int]string
		want string
	}{
		// identity_providers
		{"idp http issuer", map[int]string{4: `  - {name: corp, issuer: "http://login.example.org", audience: mayfly}`},
			`policy: line 4: identity_providers[0].issuer: issuer "http://login.example.org" must be an https URL with no credentials, query or fragment`},
		{"idp issuer with query", map[int]string{4: `  - {name: corp, issuer: "https://login.example.org/?tenant=x", audience: mayfly}`},
			`policy: line 4: identity_providers[0].issuer: issuer "https://login.example.org/?tenant=x" must be an https URL with no credentials, query or fragment`},
		{"idp missing audience", map[int]string{4: `  - {name: corp, issuer: "https://login.example.org"}`},
			`policy: line 4: identity_providers[0]: missing required key "audience"`},
		{"idp unknown key", map[int]string{4: `  - {name: corp, issuer: "https://login.example.org", audience: mayfly, client_secret: x}`},
			`policy: line 4: identity_providers[0]: unknown key "client_secret" (allowed: name, issuer, audience, groups_claim, username_claim)`},
		{"idp bad name", map[int]string{4: `  - {name: Corp, issuer: "https://login.example.org", audience: mayfly}`},
			`policy: line 4: identity_providers[0].name: invalid identity provider name "Corp" (want lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters)`},
		{"idp duplicate", map[int]string{4: `  - {name: corp, issuer: "https://a.example.org", audience: m}` + "\n" + `  - {name: corp, issuer: "https://b.example.org", audience: m}`},
			`policy: line 5: identity_providers[1].name: duplicate identity provider "corp" (first at line 4)`},
		{"idp not a mapping", map[int]string{4: `  - corp`},
			`policy: line 4: identity_providers[0]: must be a mapping with name, issuer, audience, not the scalar "corp"`},
		{"oidc group names unknown provider", map[int]string{6: `  sre: ["user:alice", "oidc-group:crop/sre"]`},
			`policy: line 6: groups.sre[1]: subject "oidc-group:crop/sre": identity provider "crop" is not listed in identity_providers`},

		// identities
		{"identity with a group", map[int]string{12: `  - ["user:alice", "group:sre"]`},
			`policy: line 12: identities[0][1]: subject "group:sre": an identity is one person or agent (user:NAME or spiffe://...), not a group`},
		{"identity set of one", map[int]string{12: `  - ["user:alice"]`},
			`policy: line 12: identities[0]: an identity set lists at least two subjects that are one person or agent`},
		{"identity in two sets", map[int]string{13: `  - ["user:lee", "user:alice"]`},
			`policy: line 13: identities[1][1]: subject "user:alice" is already in identities[0]; merge the two sets`},
		{"identity oidc group", map[int]string{12: `  - ["user:alice", "oidc-group:corp/sre"]`},
			`policy: line 12: identities[0][1]: invalid subject "oidc-group:corp/sre": oidc-group subjects are allowed only inside groups; define a group and use group:NAME`},

		// webhooks
		{"webhook http", map[int]string{15: `  sec: {url: "http://hooks.example.org/m", secret_env: HOOK_KEY}`},
			`policy: line 15: webhooks.sec.url: "http://hooks.example.org/m" must be https (http only to a loopback host such as 127.0.0.1)`},
		{"webhook credentials", map[int]string{15: `  sec: {url: "https://u:p@hooks.example.org/m", secret_env: HOOK_KEY}`},
			`policy: line 15: webhooks.sec.url: "https://u:p@hooks.example.org/m" must not carry credentials (the signing key comes from secret_env)`},
		{"webhook relative", map[int]string{15: `  sec: {url: "/hook", secret_env: HOOK_KEY}`},
			`policy: line 15: webhooks.sec.url: "/hook" is not an absolute URL`},
		{"webhook missing secret_env", map[int]string{15: `  sec: {url: "https://hooks.example.org/m"}`},
			`policy: line 15: webhooks.sec: missing required key "secret_env"`},
		{"webhook secret in secret_env", map[int]string{15: `  sec: {url: "https://hooks.example.org/m", secret_env: "s3cr3t-value!"}`},
			`policy: line 15: webhooks.sec.secret_env: "s3cr3t-value!" is not an environment variable name (name the variable that holds the key, not the key)`},
		{"webhook format", map[int]string{15: `  sec: {url: "https://hooks.example.org/m", secret_env: HOOK_KEY, format: xml}`},
			`policy: line 15: webhooks.sec.format: unknown format "xml" (want json or slack)`},
		{"webhook unknown key", map[int]string{15: `  sec: {url: "https://hooks.example.org/m", secret_env: HOOK_KEY, secret: x}`},
			`policy: line 15: webhooks.sec: unknown key "secret" (allowed: url, secret_env, format)`},
		{"webhook name", map[int]string{15: `  Sec: {url: "https://hooks.example.org/m", secret_env: HOOK_KEY}`},
			`policy: line 15: webhooks: invalid webhook name "Sec" (want lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters)` + "\n" +
				`policy: line 29: entitlements.db-admin.break_glass.notify[0]: undefined webhook "sec"` + "\n" +
				`policy: line 30: entitlements.db-admin.notify[0]: undefined webhook "sec"`},
		{"notify not a webhook", map[int]string{30: `    notify: ["slack:sec"]`},
			`policy: line 30: entitlements.db-admin.notify[0]: "slack:sec": want webhook:NAME`},

		// requestable_by and approval
		{"requestable undefined group", map[int]string{24: "    requestable_by: [group:sre, group:bots]"},
			`policy: line 24: entitlements.db-admin.requestable_by[1]: subject "group:bots": undefined group "bots"`},
		{"requestable duplicate", map[int]string{24: "    requestable_by: [group:sre, group:sre]"},
			`policy: line 24: entitlements.db-admin.requestable_by[1]: duplicate subject "group:sre" (first at line 24)`},
		{"requestable without approval", map[int]string{25: "#"},
			`policy: line 17: entitlements.db-admin: requestable_by needs an approval section saying who approves (approvals: 0 approves at once)`},
		{"approval without requestable", map[int]string{24: "#"},
			`policy: line 25: entitlements.db-admin.approval: nobody may request this entitlement; add requestable_by` + "\n" +
				`policy: line 26: entitlements.db-admin.require: applies to access requests; add requestable_by`},
		{"approval unknown key", map[int]string{25: "    approval: {approvals: 1, approver: [group:leads]}"},
			`policy: line 25: entitlements.db-admin.approval: unknown key "approver" (allowed: approvals, approvers, distinct_groups, max_duration, pending_ttl)` + "\n" +
				`policy: line 25: entitlements.db-admin.approval.approvals: 1 approvals need approvers`},
		{"approval missing approvals", map[int]string{25: "    approval: {approvers: [group:leads]}"},
			`policy: line 25: entitlements.db-admin.approval: missing required key "approvals"`},
		{"approvals too many", map[int]string{25: "    approval: {approvals: 11, approvers: [group:leads]}"},
			`policy: line 25: entitlements.db-admin.approval.approvals: must be a whole number from 0 to 10, not "11"`},
		{"approvals not a number", map[int]string{25: "    approval: {approvals: two, approvers: [group:leads]}"},
			`policy: line 25: entitlements.db-admin.approval.approvals: must be a whole number from 0 to 10, not "two"`},
		{"approvals zero with approvers", map[int]string{25: "    approval: {approvals: 0, approvers: [group:leads]}"},
			`policy: line 25: entitlements.db-admin.approval.approvals: 0 approves every request at once, so approvers are never asked; remove them or ask for approvals`},
		{"distinct groups too few entries", map[int]string{25: "    approval: {approvals: 3, approvers: [group:leads, group:security], distinct_groups: true}"},
			`policy: line 25: entitlements.db-admin.approval.approvals: distinct_groups needs an approvers entry for each approval (3 approvals, 2 entries)`},
		{"distinct groups not bool", map[int]string{25: "    approval: {approvals: 1, approvers: [group:leads], distinct_groups: yes}"},
			`policy: line 25: entitlements.db-admin.approval.distinct_groups: must be true or false, not "yes"`},
		{"max_duration bad", map[int]string{25: "    approval: {approvals: 1, approvers: [group:leads], max_duration: 8 hours}"},
			`policy: line 25: entitlements.db-admin.approval.max_duration: invalid duration "8 hours" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"approver oidc group", map[int]string{25: `    approval: {approvals: 1, approvers: ["oidc-group:corp/leads"]}`},
			`policy: line 25: entitlements.db-admin.approval.approvers[0]: invalid subject "oidc-group:corp/leads": oidc-group subjects are allowed only inside groups; define a group and use group:NAME`},

		// require
		{"require bad pattern", map[int]string{26: `    require: {reason: true, ticket: "(INC"}`},
			"policy: line 26: entitlements.db-admin.require.ticket: invalid pattern \"(INC\": error parsing regexp: missing closing ): `^(?:(INC)$`"},
		{"require unknown key", map[int]string{26: `    require: {reason: true, jira: "X-1"}`},
			`policy: line 26: entitlements.db-admin.require: unknown key "jira" (allowed: reason, ticket)`},
		{"require reason not bool", map[int]string{26: `    require: {reason: "yes please"}`},
			`policy: line 26: entitlements.db-admin.require.reason: must be true or false, not "yes please"`},

		// when
		{"when unknown field", map[int]string{27: `    when: 'principal.nme == "x"'`},
			`policy: line 27: entitlements.db-admin.when: invalid condition: undefined field 'nme' (column 10)`},
		{"when not boolean", map[int]string{27: `    when: 'request.duration'`},
			`policy: line 27: entitlements.db-admin.when: invalid condition: must be true or false, not a google.protobuf.Duration`},
		{"when syntax", map[int]string{27: `    when: 'request.time.getHours() >='`},
			`policy: line 27: entitlements.db-admin.when: invalid condition: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} (column 27)`},
		{"when unknown variable", map[int]string{27: `    when: 'user.id == "x"'`},
			`policy: line 27: entitlements.db-admin.when: invalid condition: undeclared reference to 'user' (in container '') (column 1)`},
		{"when multi-line", map[int]string{27: "    when: |\n      request.duration < duration(\"1h\") &&\n      principal.grups.size() > 0"},
			`policy: line 27: entitlements.db-admin.when: invalid condition: undefined field 'grups' (line 2, column 10 of the expression)`},
		{"when empty", map[int]string{27: `    when: ""`},
			`policy: line 27: entitlements.db-admin.when: must not be empty`},

		// conflicts_with
		{"conflicts unknown", map[int]string{28: "    conflicts_with: [release, payments]"},
			`policy: line 28: entitlements.db-admin.conflicts_with[1]: unknown entitlement "payments"`},
		{"conflicts self", map[int]string{28: "    conflicts_with: [db-admin]"},
			`policy: line 28: entitlements.db-admin.conflicts_with[0]: an entitlement cannot conflict with itself`},
		{"conflicts duplicate", map[int]string{28: "    conflicts_with: [release, release]"},
			`policy: line 28: entitlements.db-admin.conflicts_with[1]: duplicate entitlement "release" (first at line 28)`},

		// break_glass
		{"break glass missing keys", map[int]string{29: "    break_glass: {allowed: [group:oncall]}"},
			`policy: line 29: entitlements.db-admin.break_glass: missing required keys: max_ttl, review_within`},
		{"break glass nobody", map[int]string{29: "    break_glass: {allowed: [], max_ttl: 1h, review_within: 24h}"},
			`policy: line 29: entitlements.db-admin.break_glass.allowed: must list who may break glass`},
		{"break glass undefined webhook", map[int]string{29: `    break_glass: {allowed: [group:oncall], max_ttl: 1h, review_within: 24h, notify: ["webhook:pager"]}`},
			`policy: line 29: entitlements.db-admin.break_glass.notify[0]: undefined webhook "pager"`},
		{"break glass unknown key", map[int]string{29: `    break_glass: {allowed: [group:oncall], max_ttl: 1h, review_within: 24h, approvers: [group:leads]}`},
			`policy: line 29: entitlements.db-admin.break_glass: unknown key "approvers" (allowed: allowed, max_ttl, review_within, notify)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(withGov(tt.repl), testOpts())
			if err == nil {
				t.Fatalf("Parse succeeded, want\n%s", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}

type boundedParams struct{}

func (boundedParams) TTLBounds() (time.Duration, time.Duration) { return 16 * time.Minute, time.Hour }

func TestIssuerTTLBounds(t *testing.T) {
	opts := Options{Issuers: map[string]func(*yaml.Node) (any, error){
		"sts": func(*yaml.Node) (any, error) { return boundedParams{}, nil },
	}}
	doc := func(ttl, maxTTL string) string {
		return "version: 1\nentitlements:\n  s3-read:\n    description: d\n    owner: user:ops\n    issuer: sts\n    ttl: " + ttl + "\n    max_ttl: " + maxTTL + "\n"
	}
	if _, err := Parse([]byte(doc("20m", "1h")), opts); err != nil {
		t.Fatalf("within bounds: %v", err)
	}
	_, err := Parse([]byte(doc("10m", "2h")), opts)
	want := "policy: line 7: entitlements.s3-read.ttl: 10m is shorter than the sts issuer allows (at least 16m)\n" +
		"policy: line 8: entitlements.s3-read.max_ttl: 2h is longer than the sts issuer allows (at most 1h)"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n%v\nwant:\n%s", err, want)
	}
}
