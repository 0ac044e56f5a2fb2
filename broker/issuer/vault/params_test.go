package vault_test

import (
	"context"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mayflyhq/mayfly/broker/issuer/vault"
)

func decode(t *testing.T, text string) (vault.Params, error) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("test YAML %q: %v", text, err)
	}
	if doc.Kind == 0 {
		return vault.DecodeParams(nil)
	}
	return vault.DecodeParams(&doc)
}

func TestDecodeParams(t *testing.T) {
	p, err := decode(t, "path: database/creds/orders-ro\ntoken_policies: [orders-ro, audit]")
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != "database/creds/orders-ro" || strings.Join(p.TokenPolicies, ",") != "orders-ro,audit" || p.PKI != nil {
		t.Fatalf("params = %+v", p)
	}

	p, err = decode(t, `
pki:
  role: workload
  common_name: "{{subject}}"
  alt_names: [orders.internal]
  uri_sans: ["{{subject}}"]
token_policies: [pki-workload]`)
	if err != nil {
		t.Fatal(err)
	}
	if p.PKI == nil || p.PKI.Mount != "pki" || p.PKI.Role != "workload" || p.PKI.CommonName != "{{subject}}" ||
		len(p.PKI.AltNames) != 1 || len(p.PKI.URISANs) != 1 {
		t.Fatalf("pki params = %+v", p.PKI)
	}

	// An anchor reused under another entitlement resolves.
	if _, err := decode(t, "path: &p database/creds/a\ntoken_policies: [x]"); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeParamsErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"nil", "", "params are required"},
		{"not a mapping", "[path]", "must be a mapping"},
		{"unknown key", "path: database/creds/a\ntoken_policies: [x]\npaht: y", `unknown key "paht"`},
		{"unknown pki key", "pki: {role: r, common_name: c, comon: x}\ntoken_policies: [x]", `unknown key "pki.comon"`},
		{"repeated key", "path: database/creds/a\npath: database/creds/b\ntoken_policies: [x]", `key "path" appears twice`},
		{"no secret", "token_policies: [x]", "one of path and pki is required"},
		{"both", "path: database/creds/a\npki: {role: r, common_name: c}\ntoken_policies: [x]", "exclude each other"},
		{"no policies", "path: database/creds/a", "token_policies is required"},
		{"policies scalar", "path: database/creds/a\ntoken_policies: orders-ro", "must be a list"},
		{"root policy", "path: database/creds/a\ntoken_policies: [root]", "root policy"},
		{"bad policy", "path: database/creds/a\ntoken_policies: [\"a b\"]", "not a Vault policy name"},
		{"repeated policy", "path: database/creds/a\ntoken_policies: [a, a]", `"a" appears twice`},
		{"absolute path", "path: /database/creds/a\ntoken_policies: [x]", "must be relative"},
		{"one segment", "path: database\ntoken_policies: [x]", "MOUNT/"},
		{"dot dot", "path: database/../sys/x\ntoken_policies: [x]", "'..'"},
		{"query", "path: database/creds/a?ttl=1h\ntoken_policies: [x]", `contains '?'`},
		{"sys path", "path: sys/leases/lookup\ntoken_policies: [x]", "not a secrets engine path"},
		{"auth path", "path: auth/token/create\ntoken_policies: [x]", "not a secrets engine path"},
		{"path not string", "path: [a]\ntoken_policies: [x]", "path must be a string"},
		{"ssh", "ssh: {mount: ssh, role: r}\ntoken_policies: [x]", "ssh is not supported yet"},
		{"pki no role", "pki: {common_name: c}\ntoken_policies: [x]", "pki.role is required"},
		{"pki no cn", "pki: {role: r}\ntoken_policies: [x]", "pki.common_name is required"},
		{"pki placeholder", "pki: {role: r, common_name: \"{{user}}\"}\ntoken_policies: [x]", "unknown placeholder {{user}}"},
		{"pki unmatched", "pki: {role: r, common_name: \"{{subject}\"}\ntoken_policies: [x]", "unmatched"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decode(t, c.yaml)
			if err == nil {
				t.Fatalf("DecodeParams(%q) = nil error; want %q", c.yaml, c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "vault: ") {
				t.Fatalf("DecodeParams(%q) = %q; want it to start with \"vault: \" and contain %q", c.yaml, err, c.want)
			}
		})
	}
}

func TestParseRef(t *testing.T) {
	r, err := vault.ParseRef("hmZ3nRz2wqG6WqYh3dDQ0a2p|database/creds/orders-ro/AbC123")
	if err != nil || r.Accessor != "hmZ3nRz2wqG6WqYh3dDQ0a2p" || r.LeaseID != "database/creds/orders-ro/AbC123" {
		t.Fatalf("ParseRef = %+v, %v", r, err)
	}
	if r.String() != "hmZ3nRz2wqG6WqYh3dDQ0a2p|database/creds/orders-ro/AbC123" {
		t.Fatalf("String() = %q", r.String())
	}
	if r, err := vault.ParseRef("hmZ3nRz2wqG6WqYh3dDQ0a2p.ns1"); err != nil || r.LeaseID != "" || r.String() != "hmZ3nRz2wqG6WqYh3dDQ0a2p.ns1" {
		t.Fatalf("bare accessor: %+v, %v", r, err)
	}
	for _, bad := range []string{"", "|database/creds/a/b", "acc ess|x", "acc|lease id", "a/b|c"} {
		if _, err := vault.ParseRef(bad); err == nil {
			t.Errorf("ParseRef(%q) = nil error", bad)
		}
	}
}

func TestNewConfigErrors(t *testing.T) {
	ok := vault.Auth{Token: "t"}
	src := func(context.Context) (string, error) { return "jwt", nil }
	for _, c := range []struct {
		name string
		cfg  vault.Config
		want string
	}{
		{"no address", vault.Config{Auth: ok}, "Config.Address is required"},
		{"bad scheme", vault.Config{Address: "ftp://vault", Auth: ok}, "must be an http(s) URL"},
		{"remote http", vault.Config{Address: "http://vault.example.com:8200", Auth: ok}, "plain http is only allowed"},
		{"no auth", vault.Config{Address: "http://127.0.0.1:8200"}, "exactly one of Token, AppRole and JWT"},
		{"two auths", vault.Config{Address: "http://127.0.0.1:8200", Auth: vault.Auth{Token: "t", JWT: &vault.JWTAuth{Role: "r", TokenSource: src}}}, "exactly one"},
		{"approle no role id", vault.Config{Address: "http://127.0.0.1:8200", Auth: vault.Auth{AppRole: &vault.AppRole{SecretID: "s"}}}, "RoleID is required"},
		{"approle two secrets", vault.Config{Address: "http://127.0.0.1:8200", Auth: vault.Auth{AppRole: &vault.AppRole{RoleID: "r", SecretID: "s", SecretIDFile: "f"}}}, "exactly one of SecretID and SecretIDFile"},
		{"jwt no source", vault.Config{Address: "http://127.0.0.1:8200", Auth: vault.Auth{JWT: &vault.JWTAuth{Role: "r"}}}, "TokenSource is required"},
		{"bad token role", vault.Config{Address: "http://127.0.0.1:8200", Auth: ok, TokenRole: "a/b"}, "Config.TokenRole"},
		{"tls on http", vault.Config{Address: "http://127.0.0.1:8200", Auth: ok, TLS: vault.TLSConfig{CAFile: "ca.pem"}}, "not https"},
		{"missing ca", vault.Config{Address: "https://vault.example.com", Auth: ok, TLS: vault.TLSConfig{CAFile: "/nonexistent/ca.pem"}}, "CAFile"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := vault.New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "vault: ") {
				t.Fatalf("New = %v; want an error with %q", err, c.want)
			}
		})
	}
	if _, err := vault.New(vault.Config{Address: "https://vault.example.com:8200", Auth: vault.Auth{JWT: &vault.JWTAuth{Role: "mayfly", TokenSource: src}}}); err != nil {
		t.Fatalf("New with JWT auth: %v", err)
	}
}
