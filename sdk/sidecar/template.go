package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/mayflyhq/mayfly/sdk"
)

// envVars returns the environment variables that carry cred, each name
// starting with prefix, sorted by name:
//
//	<P>ENTITLEMENT, <P>KIND, <P>LEASE_ID, <P>EXPIRES_AT (RFC 3339)
//	jwt, oauth_token:   <P>TOKEN, <P>SCOPES (space-separated)
//	username_password: <P>USERNAME, <P>PASSWORD
//	certificate:       <P>CERT_PEM, <P>KEY_PEM, <P>CHAIN_PEM
//	aws:               <P>AWS_ACCESS_KEY_ID, <P>AWS_SECRET_ACCESS_KEY, <P>AWS_SESSION_TOKEN
//	raw:               <P>FIELD_<KEY> for every field (KEY upper-cased, other
//	                   characters than A-Z and 0-9 replaced by "_")
func envVars(prefix string, cred *sdk.Credential) [][2]string {
	var vars [][2]string
	add := func(name, value string) {
		if value != "" {
			vars = append(vars, [2]string{prefix + name, value})
		}
	}
	add("ENTITLEMENT", cred.Lease.Entitlement)
	add("KIND", cred.Kind)
	add("LEASE_ID", cred.Lease.ID)
	if !cred.ExpiresAt.IsZero() {
		add("EXPIRES_AT", cred.ExpiresAt.UTC().Format(time.RFC3339))
	}
	add("TOKEN", cred.Token)
	add("SCOPES", strings.Join(cred.Scopes, " "))
	add("USERNAME", cred.Username)
	add("PASSWORD", cred.Password)
	add("CERT_PEM", cred.CertPEM)
	add("KEY_PEM", cred.KeyPEM)
	add("CHAIN_PEM", cred.ChainPEM)
	add("AWS_ACCESS_KEY_ID", cred.AccessKeyID)
	add("AWS_SECRET_ACCESS_KEY", cred.SecretAccessKey)
	add("AWS_SESSION_TOKEN", cred.SessionToken)
	for k, v := range cred.Fields {
		add("FIELD_"+envName(k), v)
	}
	slices.SortFunc(vars, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return vars
}

// shellQuote quotes s for a POSIX shell: in single quotes, each single
// quote inside written as quote, backslash, quote, quote.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// credentialJSON is what the json template writes.
type credentialJSON struct {
	Entitlement     string            `json:"entitlement"`
	Kind            string            `json:"kind"`
	LeaseID         string            `json:"lease_id"`
	ExpiresAt       time.Time         `json:"expires_at"`
	Token           string            `json:"token,omitempty"`
	Scopes          []string          `json:"scopes,omitempty"`
	Username        string            `json:"username,omitempty"`
	Password        string            `json:"password,omitempty"`
	CertPEM         string            `json:"cert_pem,omitempty"`
	KeyPEM          string            `json:"key_pem,omitempty"`
	ChainPEM        string            `json:"chain_pem,omitempty"`
	AccessKeyID     string            `json:"access_key_id,omitempty"`
	SecretAccessKey string            `json:"secret_access_key,omitempty"`
	SessionToken    string            `json:"session_token,omitempty"`
	Fields          map[string]string `json:"fields,omitempty"`
}

// render produces the file contents of cred under the template setting
// tmpl (a built-in name or a Go text/template), with envPrefix for the env
// template.
func render(tmpl, envPrefix string, cred *sdk.Credential) ([]byte, error) {
	switch tmpl {
	case TemplateEnv:
		var b bytes.Buffer
		for _, kv := range envVars(envPrefix, cred) {
			fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
		}
		return b.Bytes(), nil
	case TemplateJSON:
		b, err := json.MarshalIndent(credentialJSON{
			Entitlement: cred.Lease.Entitlement, Kind: cred.Kind, LeaseID: cred.Lease.ID,
			ExpiresAt: cred.ExpiresAt.UTC(), Token: cred.Token, Scopes: cred.Scopes,
			Username: cred.Username, Password: cred.Password,
			CertPEM: cred.CertPEM, KeyPEM: cred.KeyPEM, ChainPEM: cred.ChainPEM,
			AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.SecretAccessKey, SessionToken: cred.SessionToken,
			Fields: cred.Fields,
		}, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(b, '\n'), nil
	case TemplateRaw:
		return rawSecret(cred)
	}
	t, err := parseTemplate(tmpl)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, cred); err != nil {
		// The error names the template position, never a value.
		return nil, fmt.Errorf("template: %w", err)
	}
	return b.Bytes(), nil
}

// rawSecret is the bare secret of a credential that has one.
func rawSecret(cred *sdk.Credential) ([]byte, error) {
	switch cred.Kind {
	case sdk.KindJWT, sdk.KindOAuthToken:
		return []byte(cred.Token), nil
	case sdk.KindUsernamePassword:
		return []byte(cred.Password), nil
	case sdk.KindCertificate:
		var parts []string
		for _, p := range []string{cred.CertPEM, cred.ChainPEM, cred.KeyPEM} {
			if p != "" {
				parts = append(parts, strings.TrimRight(p, "\n")+"\n")
			}
		}
		return []byte(strings.Join(parts, "")), nil
	case sdk.KindRaw:
		if len(cred.Fields) == 1 {
			for _, v := range cred.Fields {
				return []byte(v), nil
			}
		}
	}
	return nil, fmt.Errorf("template raw: a %s credential has no single secret; use env, json or a Go template", cred.Kind)
}

// checkTemplate runs a custom template against an empty credential, so a
// template naming a field that does not exist fails when the configuration
// is loaded rather than at the first write.
func checkTemplate(t *template.Template) error {
	var b bytes.Buffer
	return t.Execute(&b, &sdk.Credential{})
}
