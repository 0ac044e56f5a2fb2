package awssts

import (
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/broker/issuer"
	"github.com/mayflyhq/mayfly/broker/issuer/issuertest"
	"github.com/mayflyhq/mayfly/broker/lease"
)

var invalidParams = []issuertest.InvalidParams{
	{Name: "unknown key", YAML: "role_arn: " + roleARN + "\nrole: x", WantErr: `unknown key "role"`},
	{Name: "no role", YAML: "mode: assume_role", WantErr: "role_arn is required"},
	{Name: "user ARN", YAML: "role_arn: arn:aws:iam::123456789012:user/alice", WantErr: "not an IAM role ARN"},
	{Name: "bad mode", YAML: "role_arn: " + roleARN + "\nmode: federation", WantErr: `mode "federation"`},
	{Name: "policy not JSON", YAML: "role_arn: " + roleARN + "\nsession_policy: '{\"Statement\": ['", WantErr: "session_policy is not valid JSON"},
	{Name: "tags in web_identity", YAML: "role_arn: " + roleARN + "\nsession_tags: {team: a}", WantErr: "session_tags need mode: assume_role"},
	{Name: "session too long", YAML: "role_arn: " + roleARN + "\nmax_session_duration: 13h", WantErr: "max_session_duration"},
	{Name: "not a mapping", YAML: "[role_arn]", WantErr: "must be a mapping"},
}

func TestConformance(t *testing.T) {
	for _, mode := range []struct {
		name   string
		params string
	}{
		{"web_identity", "role_arn: " + roleARN + "\nsession_policy: '" + `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::reports/*"}]}` + "'"},
		{"assume_role", "role_arn: " + roleARN + "\nmode: assume_role\nsession_tags: {team: analytics, cost-center: \"42\"}\nrevoke_sessions_policy: true"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			var cur *env
			var params Params
			issuertest.Run(t, issuertest.Harness{
				New: func(t *testing.T) issuer.Issuer {
					cur = newEnv(t, nil)
					params = decode(t, cur.iss, mode.params)
					return cur.iss
				},
				ValidParams: []string{
					mode.params,
					"role_arn: arn:aws-cn:iam::123456789012:role/path/to/x\nregion: cn-north-1",
					"role_arn: " + roleARN + "\nmax_session_duration: 12h\nsession_tags: {a: b}\nmode: assume_role",
				},
				InvalidParams: invalidParams,
				Verify: func(t *testing.T, l *lease.Lease, c *issuer.Credential) {
					cur.verify(t, l, c, params)
				},
				IsRevoked:   nil, // an STS session cannot be revoked on its own
				TTL:         20 * time.Minute,
				Entitlement: "s3-reports-read",
			})
		})
	}
}
