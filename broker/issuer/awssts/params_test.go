package awssts

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDecodeParams(t *testing.T) {
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}`
	valid := []struct {
		yaml string
		want Params
	}{
		{"role_arn: " + roleARN, Params{RoleARN: roleARN, Mode: ModeWebIdentity, MaxSessionDuration: time.Hour}},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: {team: analytics, \"cost center\": \"42\"}\nregion: eu-west-1\nrevoke_sessions_policy: true\nmax_session_duration: 12h",
			Params{RoleARN: roleARN, Mode: ModeAssumeRole, SessionTags: map[string]string{"team": "analytics", "cost center": "42"}, Region: "eu-west-1", RevokeSessionsPolicy: true, MaxSessionDuration: 12 * time.Hour}},
		{"role_arn: " + roleARN + "\nsession_policy: |\n  {\n    \"Version\": \"2012-10-17\",\n    \"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"s3:GetObject\", \"Resource\": \"*\"}]\n  }\n",
			Params{RoleARN: roleARN, Mode: ModeWebIdentity, SessionPolicy: policy, MaxSessionDuration: time.Hour}},
		{"role_arn: arn:aws-us-gov:iam::123456789012:role/svc/x\nregion: us-gov-west-1", Params{RoleARN: "arn:aws-us-gov:iam::123456789012:role/svc/x", Mode: ModeWebIdentity, Region: "us-gov-west-1", MaxSessionDuration: time.Hour}},
		{"role_arn: " + roleARN + "\nrevoke_sessions_policy: false\nsession_tags: {}\nmode: assume_role", Params{RoleARN: roleARN, Mode: ModeAssumeRole, MaxSessionDuration: time.Hour}},
	}
	for _, tc := range valid {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(tc.yaml), &doc); err != nil {
			t.Fatal(err)
		}
		got, err := DecodeParams(doc.Content[0])
		if err != nil {
			t.Errorf("DecodeParams(%q): %v", tc.yaml, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("DecodeParams(%q) = %+v; want %+v", tc.yaml, got, tc.want)
		}
	}

	long := `{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::` + strings.Repeat("x", 2048) + `"}]}`
	var many strings.Builder
	for i := range 48 {
		fmt.Fprintf(&many, "t%d: v\n", i)
	}
	invalid := []struct{ yaml, want string }{
		{"role_arn: " + roleARN + "\nrole_arn: " + roleARN, `key "role_arn" appears twice`},
		{"role_arn: 42", "role_arn must be a string"},
		{"role_arn: arn:aws:iam::12345678901:role/x", "not an IAM role ARN"},
		{"role_arn: arn:aws:iam::123456789012:role/" + strings.Repeat("x", 65), "not an IAM role ARN"},
		{"role_arn: arn:aws:sts::123456789012:assumed-role/x/y", "not an IAM role ARN"},
		{"role_arn: " + roleARN + "\nmode: Assume_Role", `mode "Assume_Role"`},
		{"role_arn: " + roleARN + "\nsession_policy: '[1]'", "must be a JSON object"},
		{"role_arn: " + roleARN + "\nsession_policy: '{\"Version\":\"2012-10-17\"}'", "has no Statement"},
		{"role_arn: " + roleARN + "\nsession_policy: '{\"Statement\":[]} {}'", "not valid JSON"},
		{"role_arn: " + roleARN + "\nsession_policy: '" + long + "'", "STS allows 2048"},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: {aws:team: x}", "aws: prefix is reserved"},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: {mayfly:lease: x}", "mayfly: prefix"},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: {Team: x, team: y}", "differ only in case"},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: {team: \"a;b\"}", "value must be"},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: {\"a,b\": x}", "key \"a,b\""},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: [a]", "must be a mapping"},
		{"role_arn: " + roleARN + "\nmode: assume_role\nsession_tags:\n" + indent(many.String()), "STS allows 50"},
		{"role_arn: " + roleARN + "\nmax_session_duration: 30m", "from 1h to 12h"},
		{"role_arn: " + roleARN + "\nmax_session_duration: 3600", "max_session_duration must be a string"},
		{"role_arn: " + roleARN + "\nmax_session_duration: one hour", "not a duration"},
		{"role_arn: " + roleARN + "\nregion: EU", `region "EU"`},
		{"role_arn: arn:aws-cn:iam::123456789012:role/x\nregion: eu-west-1", "not in partition aws-cn"},
		{"role_arn: " + roleARN + "\nrevoke_sessions_policy: yes", "true or false"},
		{"", "role_arn is required"},
		{"role_arn: " + roleARN + "\n? [a]\n: b", "keys must be strings"},
	}
	for _, tc := range invalid {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(tc.yaml), &doc); err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		var n *yaml.Node
		if len(doc.Content) > 0 {
			n = doc.Content[0]
		}
		got, err := DecodeParams(n)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "awssts: ") {
			t.Errorf("DecodeParams(%q) = %+v, %v; want an error containing %q", tc.yaml, got, err, tc.want)
		}
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ")
}

func TestDecodeParamsAlias(t *testing.T) {
	text := "a: &p {role_arn: " + roleARN + ", mode: assume_role}\nb: *p\n"
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	p, err := DecodeParams(doc.Content[0].Content[3]) // the alias under b
	if err != nil || p.Mode != ModeAssumeRole || p.RoleARN != roleARN {
		t.Errorf("DecodeParams(alias) = %+v, %v", p, err)
	}
}

func TestParamsBuiltInCode(t *testing.T) {
	e := newEnv(t, nil)
	// A Params built in code is checked and defaulted like a decoded one.
	p := &Params{RoleARN: roleARN, SessionPolicy: `{ "Statement": [] }`}
	if ok, reason := e.iss.Revocability(p); ok || reason != NoKillSwitchReason {
		t.Errorf("Revocability(*Params) = %v, %q", ok, reason)
	}
	l := testLease(20 * time.Minute)
	if _, err := e.issue(t, l, p); err != nil {
		t.Fatalf("Issue with *Params: %v", err)
	}
	if got := e.sts.recorded()[0].Policy; got != `{"Statement":[]}` {
		t.Errorf("Policy %q; want it compacted", got)
	}
	for _, bad := range []any{nil, "role_arn: x", Params{RoleARN: "x"}, (*Params)(nil)} {
		if _, err := e.issue(t, testLease(20*time.Minute), bad); err == nil {
			t.Errorf("Issue with params %#v succeeded", bad)
		}
	}
}
