package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// base is a valid policy; tests change single lines so that the line
// numbers in expected errors can be read off this listing.
var base = []string{
	/* 1 */ "version: 1",
	/* 2 */ "trust_domains: [prod.example.org, mayfly.test]",
	/* 3 */ "groups:",
	/* 4 */ `  sre: ["user:alice", "oidc-group:corp/sre"]`,
	/* 5 */ "entitlements:",
	/* 6 */ "  e1:",
	/* 7 */ "    description: d",
	/* 8 */ "    owner: group:sre",
	/* 9 */ "    issuer: jwt",
	/* 10 */ "    jwt: {audience: a}",
	/* 11 */ "    ttl: 5m",
	/* 12 */ "    max_ttl: 1h",
	/* 13 */ "    standing:",
	/* 14 */ "      - subject: spiffe://prod.example.org/svc",
	/* 15 */ "        purpose: p",
	/* 16 */ "        until: 2027-06-30",
}

// with returns base with the given 1-based lines replaced. A replacement
// may hold several lines (later line numbers then shift) or be a comment
// to delete a line without shifting the rest.
func with(repl map[int]string) []byte {
	out := make([]string, len(base))
	copy(out, base)
	for n, s := range repl {
		out[n-1] = s
	}
	return lines(out...)
}

func TestBaseIsValid(t *testing.T) {
	if _, err := Parse(with(nil), testOpts()); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	const nameRuleMsg = "(want lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters)"
	tests := []struct {
		name string
		in   []byte
		opts *Options
		want string
	}{
		// The file as a whole.
		{"empty", []byte(""), nil, "policy: empty policy file"},
		{"only comments", []byte("# nothing here\n"), nil, "policy: empty policy file"},
		{"empty document", []byte("---\n"), nil, "policy: empty policy file"},
		{"null document", []byte("~\n"), nil, "policy: empty policy file"},
		{"two documents", lines("version: 1", "---", "version: 1"), nil,
			"policy: line 3: a second YAML document; a policy file holds exactly one"},
		{"not a mapping", lines("- version: 1"), nil,
			"policy: line 1: the file must be a mapping of version, trust_domains, identity_providers, groups, identities, admins, webhooks, entitlements, not a list"},
		{"scalar file", lines("hello"), nil,
			`policy: line 1: the file must be a mapping of version, trust_domains, identity_providers, groups, identities, admins, webhooks, entitlements, not the scalar "hello"`},
		{"yaml syntax", lines("version: 1", "groups: [a", "entitlements: {}"), nil,
			"policy: line 2: invalid YAML: did not find expected ',' or ']'"},
		{"yaml bad indentation", lines("version: 1", "groups:", "  a: []", " b: []"), nil,
			"policy: line 4: invalid YAML: did not find expected key"},
		{"yaml sequence then key", lines("version: 1", "groups:", "  - a", "  b: c"), nil,
			"policy: line 3: invalid YAML: did not find expected '-' indicator"},
		{"yaml parser error after line 1", lines("[a", "b: c"), nil,
			"policy: line 2: invalid YAML: did not find expected ',' or ']'"},
		{"yaml unterminated string", lines("version: 1", `groups: "x`), nil,
			"policy: line 2: invalid YAML: found unexpected end of stream"},
		{"yaml unknown anchor", lines("version: 1", "groups: *g"), nil,
			"policy: invalid YAML: unknown anchor 'g' referenced"},
		{"tab indentation", lines("version: 1", "groups:", "\tsre: []"), nil,
			"policy: line 3: invalid YAML: found character that cannot start any token"},
		{"alias", lines("version: 1", "groups:", "  a: &m [user:x]", "  b: *m"), nil,
			"policy: line 4: YAML aliases (*m) are not allowed in a policy file; write the value out"},
		{"merge key", with(map[int]string{6: "  e0: &e {description: d}\n  e1:\n    <<: *e"}), nil,
			"policy: line 8: YAML aliases (*e) are not allowed in a policy file; write the value out"},

		// version
		{"version 2", with(map[int]string{1: "version: 2"}), nil,
			`policy: line 1: version: unsupported version "2" (this broker reads version 1)`},
		{"version quoted", with(map[int]string{1: `version: "1"`}), nil,
			`policy: line 1: version: unsupported version "1" (this broker reads version 1)`},
		{"version list", with(map[int]string{1: `version: [1]`}), nil,
			`policy: line 1: version: unsupported version "a list" (this broker reads version 1)`},
		{"version missing", with(map[int]string{1: "# no version"}), nil,
			`policy: line 2: missing required key "version"`},

		// Top-level keys.
		{"unknown top key", with(map[int]string{1: "version: 1\nidentity_provider: []"}), nil,
			`policy: line 2: unknown key "identity_provider" (allowed: version, trust_domains, identity_providers, groups, identities, admins, webhooks, entitlements)`},
		{"duplicate top key", with(map[int]string{1: "version: 1\nversion: 1"}), nil,
			`policy: line 2: duplicate key "version" (first at line 1)`},
		{"complex key", with(map[int]string{1: "version: 1\n? [a]\n: b"}), nil,
			`policy: line 2: keys must be plain strings`},

		// trust_domains
		{"trust domain upper case", with(map[int]string{2: "trust_domains: [Prod.example.org]"}), nil,
			`policy: line 2: trust_domains[0]: invalid trust domain "Prod.example.org": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores` + "\n" +
				`policy: line 14: entitlements.e1.standing[0].subject: subject "spiffe://prod.example.org/svc": trust domain "prod.example.org" is not listed in trust_domains`},
		{"trust domain as id", with(map[int]string{2: "trust_domains: [prod.example.org, spiffe://mayfly.test]"}), nil,
			`policy: line 2: trust_domains[1]: write the trust domain name (example.org), not a SPIFFE ID`},
		{"trust domain duplicate", with(map[int]string{2: "trust_domains:\n  - prod.example.org\n  - prod.example.org"}), nil,
			`policy: line 4: trust_domains[1]: duplicate trust domain "prod.example.org" (first at line 3)`},
		{"trust domains not a list", with(map[int]string{2: "trust_domains: prod.example.org\n# shift"}), nil,
			`policy: line 2: trust_domains: must be a list, not the scalar "prod.example.org"` + "\n" +
				`policy: line 15: entitlements.e1.standing[0].subject: subject "spiffe://prod.example.org/svc": trust domain "prod.example.org" is not listed in trust_domains`},
		{"trust domain empty string", with(map[int]string{2: `trust_domains: [prod.example.org, ""]`}), nil,
			`policy: line 2: trust_domains[1]: must not be empty`},

		// groups
		{"group name upper case", with(map[int]string{4: `  sre: []` + "\n" + `  SRE: []`}), nil,
			`policy: line 5: groups: invalid group name "SRE" ` + nameRuleMsg},
		{"group name unicode", with(map[int]string{4: `  sre: []` + "\n" + `  srе: []`}), nil, // Cyrillic е
			`policy: line 5: groups: invalid group name "srе" ` + nameRuleMsg},
		{"group duplicate", with(map[int]string{4: `  sre: []` + "\n" + `  sre: []`}), nil,
			`policy: line 5: groups: duplicate key "sre" (first at line 4)`},
		{"group undefined member", with(map[int]string{4: `  sre: ["group:ops"]`}), nil,
			`policy: line 4: groups.sre[0]: subject "group:ops": undefined group "ops"`},
		{"group cycle", with(map[int]string{4: `  sre: ["group:ops"]` + "\n" + `  ops: ["group:dba"]` + "\n" + `  dba: ["group:sre"]`}), nil,
			`policy: line 6: groups.dba: groups include each other in a cycle: dba -> sre -> ops -> dba`},
		{"group self cycle", with(map[int]string{4: `  sre: ["group:sre"]`}), nil,
			`policy: line 4: groups.sre: groups include each other in a cycle: sre -> sre`},
		{"group oidc bad provider", with(map[int]string{4: `  sre: ["oidc-group:Corp/sre"]`}), nil,
			`policy: line 4: groups.sre[0]: invalid subject "oidc-group:Corp/sre": want oidc-group:PROVIDER/NAME where PROVIDER is lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters`},
		{"group oidc no name", with(map[int]string{4: `  sre: ["oidc-group:corp"]`}), nil,
			`policy: line 4: groups.sre[0]: invalid subject "oidc-group:corp": want oidc-group:PROVIDER/NAME where PROVIDER is lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, at most 63 characters`},
		{"group oidc non-ascii", with(map[int]string{4: `  sre: ["oidc-group:corp/sré"]`}), nil,
			`policy: line 4: groups.sre[0]: invalid subject "oidc-group:corp/sré": group names are printable ASCII`},
		{"group member bare name", with(map[int]string{4: `  sre: ["alice"]`}), nil,
			`policy: line 4: groups.sre[0]: invalid subject "alice" (want spiffe://TRUST_DOMAIN/PATH, user:NAME, group:NAME or oidc-group:PROVIDER/NAME)`},
		{"group oidc leading space", with(map[int]string{4: `  sre: ["oidc-group:corp/ sre"]`}), nil,
			`policy: line 4: groups.sre[0]: invalid subject "oidc-group:corp/ sre": group name starts or ends with a space`},
		{"group oidc inner space ok but user wrong", with(map[int]string{4: `  sre: ["oidc-group:corp/Domain Admins", "user:a b"]`}), nil,
			`policy: line 4: groups.sre[1]: invalid subject "user:a b": user names are printable ASCII without spaces`},
		{"group member td not listed", with(map[int]string{4: `  sre: ["spiffe://other.org/x"]`}), nil,
			`policy: line 4: groups.sre[0]: subject "spiffe://other.org/x": trust domain "other.org" is not listed in trust_domains`},
		{"group duplicate member", with(map[int]string{4: `  sre: ["user:alice", "user:alice"]`}), nil,
			`policy: line 4: groups.sre[1]: duplicate member "user:alice" (first at line 4)`},
		{"group not a list", with(map[int]string{4: `  sre: user:alice`}), nil,
			`policy: line 4: groups.sre: must be a list, not the scalar "user:alice"`},
		{"group member not a string", with(map[int]string{4: `  sre: [[user:alice]]`}), nil,
			`policy: line 4: groups.sre[0]: must be a string, not a list`},
		{"groups not a mapping", with(map[int]string{3: "groups: [sre]", 4: "# gone"}), nil,
			`policy: line 3: groups: must be a mapping, not a list` + "\n" +
				`policy: line 8: entitlements.e1.owner: subject "group:sre": undefined group "sre"`},

		// Entitlement names and keys.
		{"entitlement name upper case", with(map[int]string{6: "  E1:"}), nil,
			`policy: line 6: entitlements: invalid entitlement name "E1" ` + nameRuleMsg},
		{"entitlement name space", with(map[int]string{6: `  "e1 ":`}), nil,
			`policy: line 6: entitlements: invalid entitlement name "e1 " ` + nameRuleMsg},
		{"entitlement name unicode", with(map[int]string{6: "  еx:"}), nil, // Cyrillic е
			`policy: line 6: entitlements: invalid entitlement name "еx" ` + nameRuleMsg},
		{"entitlement name too long", with(map[int]string{6: "  " + strings.Repeat("a", 64) + ":"}), nil,
			`policy: line 6: entitlements: invalid entitlement name "` + strings.Repeat("a", 64) + `" ` + nameRuleMsg},
		{"entitlement name newline", with(map[int]string{6: `  "e\n1": {ttl: 1}` + "\n  e1:"}), nil,
			`policy: line 6: entitlements: invalid entitlement name "e\n1" ` + nameRuleMsg + "\n" +
				`policy: line 6: entitlements."e\n1": missing required keys: description, owner, issuer, max_ttl` + "\n" +
				`policy: line 6: entitlements."e\n1".ttl: invalid duration "1" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"entitlement duplicate", with(map[int]string{16: "        until: 2027-06-30\n  e1: {}"}), nil,
			`policy: line 17: entitlements: duplicate key "e1" (first at line 6)`},
		{"entitlement missing keys", with(map[int]string{6: "  e0: {}\n  e1:"}), nil,
			`policy: line 6: entitlements.e0: missing required keys: description, owner, issuer, ttl, max_ttl`},
		{"entitlement missing one key", with(map[int]string{7: "# no description"}), nil,
			`policy: line 6: entitlements.e1: missing required key "description"`},
		{"entitlement not a mapping", with(map[int]string{6: "  e0: [a]\n  e1:"}), nil,
			`policy: line 6: entitlements.e0: must be a mapping, not a list`},
		{"entitlement unknown key", with(map[int]string{7: "    descripton: d"}), nil,
			`policy: line 6: entitlements.e1: missing required key "description"` + "\n" +
				`policy: line 7: entitlements.e1: unknown key "descripton" (allowed: ` + entKeysMsg + `)`},
		{"entitlement other issuer section", with(map[int]string{10: "    jwt: {audience: a}\n    vault: {path: x}"}), nil,
			`policy: line 11: entitlements.e1: unknown key "vault" (allowed: ` + entKeysMsg + `)`},
		{"entitlement duplicate key", with(map[int]string{12: "    max_ttl: 1h\n    ttl: 10m"}), nil,
			`policy: line 13: entitlements.e1: duplicate key "ttl" (first at line 11)`},
		{"description empty", with(map[int]string{7: `    description: " "`}), nil,
			`policy: line 7: entitlements.e1.description: must not be empty`},
		{"description mapping", with(map[int]string{7: `    description: {a: b}`}), nil,
			`policy: line 7: entitlements.e1.description: must be a string, not a mapping`},
		{"description null", with(map[int]string{7: `    description:`}), nil,
			`policy: line 7: entitlements.e1.description: must be a string, not empty`},

		// issuer and params
		{"unknown issuer", with(map[int]string{9: "    issuer: vualt", 10: "    vualt: {path: x}"}), nil,
			`policy: line 9: entitlements.e1.issuer: unknown issuer "vualt" (known: jwt, vault)`},
		{"no issuers configured", with(nil), &Options{},
			`policy: line 9: entitlements.e1.issuer: unknown issuer "jwt" (known: none configured)`},
		{"issuer case", with(map[int]string{9: "    issuer: JWT"}), nil,
			`policy: line 9: entitlements.e1.issuer: unknown issuer "JWT" (known: jwt, vault)`},
		{"params unknown key", with(map[int]string{10: "    jwt: {audience: a, scope: [x]}"}), nil,
			`policy: line 10: entitlements.e1.jwt: unknown key "scope" (allowed: audience, scopes)`},
		{"params block unknown key", with(map[int]string{10: "    jwt:\n      audience: a\n      scope: [x]"}), nil,
			`policy: line 10: entitlements.e1.jwt: unknown key "scope" (allowed: audience, scopes)`},
		{"params missing section", with(map[int]string{10: "# no params"}), nil,
			`policy: line 6: entitlements.e1.jwt: section is required (audience, scopes)`},
		{"params empty section", with(map[int]string{10: "    jwt:"}), nil,
			`policy: line 10: entitlements.e1.jwt: must be a mapping`},

		// ttl and max_ttl
		{"ttl no unit", with(map[int]string{11: "    ttl: 5"}), nil,
			`policy: line 11: entitlements.e1.ttl: invalid duration "5" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"ttl words", with(map[int]string{11: "    ttl: 5 minutes"}), nil,
			`policy: line 11: entitlements.e1.ttl: invalid duration "5 minutes" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"ttl fractional days", with(map[int]string{11: "    ttl: 1.5d"}), nil,
			`policy: line 11: entitlements.e1.ttl: invalid duration "1.5d" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"ttl days after hours", with(map[int]string{11: "    ttl: 12h1d"}), nil,
			`policy: line 11: entitlements.e1.ttl: invalid duration "12h1d" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"ttl zero", with(map[int]string{11: "    ttl: 0s"}), nil,
			`policy: line 11: entitlements.e1.ttl: must be greater than zero, not "0s"`},
		{"ttl negative", with(map[int]string{11: "    ttl: -5m"}), nil,
			`policy: line 11: entitlements.e1.ttl: must be greater than zero, not "-5m"`},
		{"ttl overflow", with(map[int]string{11: "    ttl: 999999999d"}), nil,
			`policy: line 11: entitlements.e1.ttl: invalid duration "999999999d" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"ttl list", with(map[int]string{11: "    ttl: [5m]"}), nil,
			`policy: line 11: entitlements.e1.ttl: must be a string, not a list`},
		{"max_ttl below ttl", with(map[int]string{12: "    max_ttl: 1m"}), nil,
			`policy: line 12: entitlements.e1.max_ttl: 1m is less than ttl 5m`},
		{"max_ttl missing", with(map[int]string{12: "# no max_ttl"}), nil,
			`policy: line 6: entitlements.e1: missing required key "max_ttl"`},

		// owner
		{"owner workload", with(map[int]string{8: "    owner: spiffe://prod.example.org/x"}), nil,
			`policy: line 8: entitlements.e1.owner: owner "spiffe://prod.example.org/x" must be a person or a group (user:NAME or group:NAME)`},
		{"owner undefined group", with(map[int]string{8: "    owner: group:orders-team"}), nil,
			`policy: line 8: entitlements.e1.owner: subject "group:orders-team": undefined group "orders-team"`},
		{"owner oidc group", with(map[int]string{8: "    owner: oidc-group:corp/sre"}), nil,
			`policy: line 8: entitlements.e1.owner: invalid subject "oidc-group:corp/sre": oidc-group subjects are allowed only inside groups; define a group and use group:NAME`},
		{"owner bare name", with(map[int]string{8: "    owner: alice"}), nil,
			`policy: line 8: entitlements.e1.owner: invalid subject "alice" (want spiffe://TRUST_DOMAIN/PATH, user:NAME or group:NAME)`},

		// standing grants
		{"standing not a list", with(map[int]string{13: "    standing: {subject: x}", 14: "#", 15: "#", 16: "#"}), nil,
			`policy: line 13: entitlements.e1.standing: must be a list, not a mapping`},
		{"grant not a mapping", with(map[int]string{14: "      - spiffe://prod.example.org/svc", 15: "#", 16: "#"}), nil,
			`policy: line 14: entitlements.e1.standing[0]: must be a mapping with subject, purpose, until, not the scalar "spiffe://prod.example.org/svc"`},
		{"grant unknown key", with(map[int]string{16: "        until: 2027-06-30\n        reviewers: [group:sre]"}), nil,
			`policy: line 17: entitlements.e1.standing[0]: unknown key "reviewers" (allowed: id, subject, purpose, until, review_every)`},
		{"grant missing keys", with(map[int]string{15: "#", 16: "#"}), nil,
			`policy: line 14: entitlements.e1.standing[0]: missing required keys: purpose, until`},
		{"grant missing subject", with(map[int]string{14: "      - id: g1"}), nil,
			`policy: line 14: entitlements.e1.standing[0]: missing required key "subject"`},
		{"grant duplicate key", with(map[int]string{16: "        until: 2027-06-30\n        until: 2028-06-30"}), nil,
			`policy: line 17: entitlements.e1.standing[0]: duplicate key "until" (first at line 16)`},
		{"until bad date", with(map[int]string{16: "        until: 2027-13-01"}), nil,
			`policy: line 16: entitlements.e1.standing[0].until: invalid date "2027-13-01" (want a date such as 2027-06-30, which holds through that day UTC, or an RFC 3339 time such as 2027-06-30T17:00:00Z)`},
		{"until space time", with(map[int]string{16: "        until: 2027-06-30 10:00:00"}), nil,
			`policy: line 16: entitlements.e1.standing[0].until: invalid date "2027-06-30 10:00:00" (want a date such as 2027-06-30, which holds through that day UTC, or an RFC 3339 time such as 2027-06-30T17:00:00Z)`},
		{"until no zone", with(map[int]string{16: "        until: 2027-06-30T10:00:00"}), nil,
			`policy: line 16: entitlements.e1.standing[0].until: invalid date "2027-06-30T10:00:00" (want a date such as 2027-06-30, which holds through that day UTC, or an RFC 3339 time such as 2027-06-30T17:00:00Z)`},
		{"review_every bad", with(map[int]string{16: "        until: 2027-06-30\n        review_every: 90days"}), nil,
			`policy: line 17: entitlements.e1.standing[0].review_every: invalid duration "90days" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`},
		{"review_every zero", with(map[int]string{16: "        until: 2027-06-30\n        review_every: 0d"}), nil,
			`policy: line 17: entitlements.e1.standing[0].review_every: must be greater than zero, not "0d"`},
		{"purpose empty", with(map[int]string{15: `        purpose: ""`}), nil,
			`policy: line 15: entitlements.e1.standing[0].purpose: must not be empty`},
		{"grant id invalid", with(map[int]string{14: "      - id: Grant/1\n        subject: spiffe://prod.example.org/svc"}), nil,
			`policy: line 14: entitlements.e1.standing[0].id: invalid grant id "Grant/1" ` + nameRuleMsg},
		{"grant id duplicate", with(map[int]string{14: "      - id: g1\n        subject: spiffe://prod.example.org/a\n        purpose: p\n        until: 2027-06-30\n      - id: g1\n        subject: spiffe://prod.example.org/b"}), nil,
			`policy: line 18: entitlements.e1.standing[1].id: duplicate standing grant id "g1" (first at line 14)`},
		{"grant same subject twice", with(map[int]string{16: "        until: 2027-06-30\n      - subject: spiffe://prod.example.org/svc\n        purpose: q\n        until: 2028-06-30"}), nil,
			`policy: line 17: entitlements.e1.standing[1]: a second standing grant for subject "spiffe://prod.example.org/svc" (first at line 14); merge them or give each an id`},

		// subjects in grants
		{"subject star in middle", with(map[int]string{14: "      - subject: spiffe://prod.example.org/a/*/b"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org/a/*/b": "*" may only stand for whole path segments at the end of the path`},
		{"subject partial star", with(map[int]string{14: "      - subject: spiffe://prod.example.org/ci-*"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org/ci-*": "*" may only stand for whole path segments at the end of the path`},
		{"subject double star in middle", with(map[int]string{14: "      - subject: spiffe://prod.example.org/**/x"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org/**/x": "**" may only be the last path segment`},
		{"subject double star then star", with(map[int]string{14: `      - subject: "spiffe://prod.example.org/a/**/*"`}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org/a/**/*": "**" may only be the last path segment`},
		{"subject star in trust domain", with(map[int]string{14: `      - subject: "spiffe://*.example.org/a"`}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://*.example.org/a": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},
		{"subject no path", with(map[int]string{14: "      - subject: spiffe://prod.example.org"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org": a SPIFFE subject needs a path (the trust domain itself is not a workload)`},
		{"subject trailing slash", with(map[int]string{14: "      - subject: spiffe://prod.example.org/svc/"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org/svc/": path cannot contain empty segments`},
		{"subject dot segment", with(map[int]string{14: "      - subject: spiffe://prod.example.org/a/../b"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org/a/../b": path cannot contain dot segments`},
		{"subject bad path char", with(map[int]string{14: `      - subject: "spiffe://prod.example.org/a b"`}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "spiffe://prod.example.org/a b": path segment characters are limited to letters, numbers, dots, dashes, and underscores`},
		{"subject td not listed", with(map[int]string{14: "      - subject: spiffe://other.org/svc"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: subject "spiffe://other.org/svc": trust domain "other.org" is not listed in trust_domains`},
		{"subject upper scheme", with(map[int]string{14: "      - subject: SPIFFE://prod.example.org/svc"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "SPIFFE://prod.example.org/svc" (want spiffe://TRUST_DOMAIN/PATH, user:NAME or group:NAME)`},
		{"subject empty user", with(map[int]string{14: "      - subject: 'user:'"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "user:": user name is empty`},
		{"subject user with space", with(map[int]string{14: "      - subject: 'user:alice '"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "user:alice ": user names are printable ASCII without spaces`},
		{"subject user confusable", with(map[int]string{14: "      - subject: user:аlice"}), nil, // Cyrillic а
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "user:аlice": user names are printable ASCII without spaces`},
		{"subject undefined group", with(map[int]string{14: "      - subject: group:ops"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: subject "group:ops": undefined group "ops"`},
		{"subject oidc group in grant", with(map[int]string{14: "      - subject: oidc-group:corp/sre"}), nil,
			`policy: line 14: entitlements.e1.standing[0].subject: invalid subject "oidc-group:corp/sre": oidc-group subjects are allowed only inside groups; define a group and use group:NAME`},

		// Several problems are all reported, in line order.
		{"many problems", lines(
			"version: 1",
			"trust_domains: [a.org]",
			"entitlements:",
			"  x:",
			"    description: d",
			"    owner: user:bob",
			"    issuer: jwt",
			"    jwt: {audience: a}",
			"    ttl: 1x",
			"    max_ttl: 1h",
			"    colour: red",
			"    standing:",
			"      - subject: spiffe://b.org/svc",
			"        purpose: p",
			"        until: tomorrow",
		), nil,
			`policy: line 9: entitlements.x.ttl: invalid duration "1x" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)` + "\n" +
				`policy: line 11: entitlements.x: unknown key "colour" (allowed: ` + entKeysMsg + `)` + "\n" +
				`policy: line 13: entitlements.x.standing[0].subject: subject "spiffe://b.org/svc": trust domain "b.org" is not listed in trust_domains` + "\n" +
				`policy: line 15: entitlements.x.standing[0].until: invalid date "tomorrow" (want a date such as 2027-06-30, which holds through that day UTC, or an RFC 3339 time such as 2027-06-30T17:00:00Z)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOpts()
			if tt.opts != nil {
				opts = *tt.opts
			}
			p, err := Parse(tt.in, opts)
			if err == nil {
				t.Fatalf("Parse succeeded, want error\n%s", tt.want)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with its error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got: %s\nwant: %s", got, tt.want)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not an *Error", err)
			}
		})
	}
}

func TestParseErrorCap(t *testing.T) {
	ls := []string{"version: 1", "entitlements:"}
	for i := 0; i < 30; i++ {
		ls = append(ls, "  Bad"+strings.Repeat("x", i)+": {description: d, owner: user:a, issuer: jwt, jwt: {audience: a}, ttl: 1m, max_ttl: 1m}")
	}
	_, err := Parse(lines(ls...), testOpts())
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %T is not an ErrorList", err)
	}
	if len(list) != maxErrors+1 {
		t.Fatalf("got %d errors, want %d", len(list), maxErrors+1)
	}
	if got, want := list[maxErrors].Error(), "policy: 10 more problems not shown"; got != want {
		t.Errorf("last error %q, want %q", got, want)
	}
}

func TestLoadFileErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, with(map[int]string{11: "    ttl: 5"}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(path, testOpts())
	want := "policy: " + path + `:11: entitlements.e1.ttl: invalid duration "5" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got: %v\nwant: %s", err, want)
	}

	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(path, testOpts())
	if want := "policy: " + path + ": empty policy file"; err == nil || err.Error() != want {
		t.Errorf("error:\n got: %v\nwant: %s", err, want)
	}

	missing := filepath.Join(dir, "nope.yaml")
	_, err = LoadFile(missing, testOpts())
	if want := "policy: open " + missing + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("error:\n got: %v\nwant: %s", err, want)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v does not wrap os.ErrNotExist", err)
	}
}

func TestParseExample(t *testing.T) {
	p, err := Parse(ExamplePolicy, testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != 1 || !reflect.DeepEqual(p.TrustDomains, []string{"mayfly.test"}) {
		t.Errorf("version %d, trust domains %v", p.Version, p.TrustDomains)
	}
	wantGroups := map[string][]string{
		"platform":   {"user:alice", "oidc-group:dev/platform"},
		"developers": {"user:bob", "group:platform"},
		"security":   {"user:carol", "oidc-group:dev/security"},
		"agents":     {"spiffe://mayfly.test/agents/*"},
	}
	if !reflect.DeepEqual(p.Groups, wantGroups) {
		t.Errorf("groups %v, want %v", p.Groups, wantGroups)
	}
	if got, want := p.Names(), []string{"ci-deploy-token", "demo-api-admin", "demo-api-read", "demo-api-write", "demo-audit-read"}; !reflect.DeepEqual(got, want) {
		t.Errorf("names %v, want %v", got, want)
	}
	e := p.Entitlement("demo-api-read")
	wantEnt := &Entitlement{
		Name:        "demo-api-read",
		Description: "Read-only token for the demo API, held by the demo workload",
		Owner:       "group:platform",
		Issuer:      "jwt",
		Params:      jwtParams{Audience: "https://demo-api.mayfly.test", Scopes: []string{"demo:read"}},
		TTL:         5 * time.Minute,
		MaxTTL:      time.Hour,
	}
	got := *e
	got.Standing = nil
	got.owner = nil
	if !reflect.DeepEqual(&got, wantEnt) {
		t.Errorf("entitlement\n got %+v\nwant %+v", got, *wantEnt)
	}
	if len(e.Standing) != 1 {
		t.Fatalf("%d standing grants, want 1", len(e.Standing))
	}
	g := e.Standing[0]
	if g.ID != "demo-api-read/standing/a287d8872460" || // sha256("spiffe://mayfly.test/workload/demo")[:12]
		g.Subject != "spiffe://mayfly.test/workload/demo" ||
		g.Purpose != "the demo workload reads orders from the demo API" ||
		!g.Until.Equal(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)) ||
		g.ReviewEvery != 90*24*time.Hour {
		t.Errorf("grant %+v", *g)
	}
	if id := p.Entitlement("ci-deploy-token").Standing[0].ID; id != "ci-runners-deploy" {
		t.Errorf("explicit id %q", id)
	}
	if len(p.Digest) != 64 {
		t.Errorf("digest %q", p.Digest)
	}
}

func TestParseValues(t *testing.T) {
	p, err := Parse(with(map[int]string{
		10: "    jwt:",
		11: "      audience: a\n    ttl: 1d12h",
		12: "    max_ttl: 2d",
		16: "        until: 2027-06-30T17:30:00+02:00\n        review_every: 90d\n        id: orders.api_1",
	}), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	e := p.Entitlement("e1")
	if e.TTL != 36*time.Hour || e.MaxTTL != 48*time.Hour {
		t.Errorf("ttl %v max_ttl %v", e.TTL, e.MaxTTL)
	}
	g := e.Standing[0]
	if want := time.Date(2027, 6, 30, 15, 30, 0, 0, time.UTC); !g.Until.Equal(want) || g.Until.Location() != time.UTC {
		t.Errorf("until %v, want %v", g.Until, want)
	}
	if g.ReviewEvery != 90*24*time.Hour || g.ID != "orders.api_1" {
		t.Errorf("grant %+v", *g)
	}

	// A date holds through the whole day UTC.
	p, err = Parse(with(nil), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Entitlement("e1").Standing[0].Until, time.Date(2027, 7, 1, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("until %v, want %v", got, want)
	}
	if got := p.Entitlement("e1").Standing[0].ReviewEvery; got != 0 {
		t.Errorf("review_every %v, want 0 when absent", got)
	}
}

func TestParseEmptySections(t *testing.T) {
	for _, in := range []string{
		"version: 1",
		"version: 1\ntrust_domains:\ngroups:\nentitlements:",
		"version: 1\ntrust_domains: []\ngroups: {}\nentitlements: {}",
		"version: 1\ngroups: {g: []}\nentitlements:\n  e: {description: d, owner: group:g, issuer: jwt, jwt: {audience: a}, ttl: 1m, max_ttl: 1m, standing: []}",
	} {
		if _, err := Parse([]byte(in), testOpts()); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"15m", 15 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"90d", 90 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"1d12h30m", 36*time.Hour + 30*time.Minute, true},
		{"0d", 0, true},
		{"-1d", -24 * time.Hour, true},
		{"+2d", 48 * time.Hour, true},
		{"1.5h", 90 * time.Minute, true},
		{"", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"12h1d", 0, false},
		{"1d-2h", 0, false},
		{"1dd", 0, false},
		{"1 d", 0, false},
		{"5", 0, false},
		{"106751d", 106751 * 24 * time.Hour, true},
		{"106752d", 0, false},
		{"106751d23h59m", 0, false},
		{"99999999999999999999d", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// The params node handed to a decoder is the section under the issuer name.
func TestParamsNode(t *testing.T) {
	var got []*yaml.Node
	opts := Options{Issuers: map[string]func(*yaml.Node) (any, error){
		"jwt": func(n *yaml.Node) (any, error) { got = append(got, n); return "ok", nil },
	}}
	p, err := Parse(with(map[int]string{8: "    owner: user:alice", 10: "    jwt: {audience: a}"}), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Kind != yaml.MappingNode || got[0].Line != 10 {
		t.Fatalf("decoder got %v", got)
	}
	if p.Entitlement("e1").Params != "ok" {
		t.Errorf("params %v", p.Entitlement("e1").Params)
	}
	got = nil
	if _, err := Parse(with(map[int]string{10: "# none"}), opts); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != nil {
		t.Errorf("decoder got %v, want one nil node", got)
	}
}

// Nested groups that reach one group along many paths stay small.
func TestGroupDiamondsStaySmall(t *testing.T) {
	ls := []string{"version: 1", "trust_domains: [a.org]", "groups:"}
	const layers = 40
	for i := 0; i < layers; i++ {
		ls = append(ls, fmt.Sprintf("  l%d-a: [group:l%d-a, group:l%d-b]", i, i+1, i+1))
		ls = append(ls, fmt.Sprintf("  l%d-b: [group:l%d-a, group:l%d-b]", i, i+1, i+1))
	}
	ls = append(ls, `  l40-a: ["spiffe://a.org/x"]`, `  l40-b: ["spiffe://a.org/x"]`)
	p, err := Parse(lines(ls...), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.groupSets["l0-a"].spiffe); n != 1 {
		t.Errorf("l0-a holds %d patterns, want 1", n)
	}
}

// entKeysMsg is the allowed-keys list of an entitlement whose issuer is jwt.
const entKeysMsg = "description, owner, issuer, ttl, max_ttl, standing, requestable_by, approval, require, when, conflicts_with, break_glass, notify, jwt"
