package sidecar

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/sdk"
)

const fullConfig = `
broker:
  addr: 127.0.0.1:8443
  id: spiffe://mayfly.test/mayfly
identity:
  files:
    cert: certs/svid.pem
    key: certs/svid_key.pem
    bundle: /etc/bundle.pem
entitlements:
  - name: demo-api-read
    ttl: 10m
    reason: orders API
    file:
      path: demo.env
      template: env
      mode: "0640"
  - name: orders-db
    env_prefix: DB_
    file:
      path: /run/db.tpl
      template: "{{ .Username }}:{{ .Password }}"
  - name: plain
socket:
  path: run/sidecar.sock
  allow_uids: [1000, 1001]
exec:
  signal: hup
lease_check_interval: 5s
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(fullConfig), "/etc/mayfly")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Identity.Files.Cert != "/etc/mayfly/certs/svid.pem" || cfg.Identity.Files.Bundle != "/etc/bundle.pem" {
		t.Errorf("identity paths not made absolute: %+v", cfg.Identity.Files)
	}
	e := cfg.Entitlements
	if e[0].TTL.Std() != 10*time.Minute || e[0].File.Path != "/etc/mayfly/demo.env" || e[0].EnvPrefix != "MAYFLY_DEMO_API_READ_" {
		t.Errorf("entitlement 0: %+v", e[0])
	}
	if e[1].EnvPrefix != "DB_" || e[1].File.Mode != "" {
		t.Errorf("entitlement 1: %+v", e[1])
	}
	if e[2].EnvPrefix != "MAYFLY_PLAIN_" || e[2].File.Path != "" {
		t.Errorf("entitlement 2: %+v", e[2])
	}
	if cfg.Socket.Path != "/etc/mayfly/run/sidecar.sock" || len(cfg.Socket.AllowUIDs) != 2 {
		t.Errorf("socket: %+v", cfg.Socket)
	}
	if cfg.LeaseCheckInterval.Std() != 5*time.Second || cfg.StartTimeout.Std() != time.Minute || cfg.Exec.StopTimeout.Std() != 10*time.Second {
		t.Errorf("durations: %v %v %v", cfg.LeaseCheckInterval, cfg.StartTimeout, cfg.Exec.StopTimeout)
	}

	one, err := ParseConfig([]byte("broker: {addr: x:1}\nidentity: {workload_api: {}}\nentitlements: [{name: a}]\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if one.Entitlements[0].EnvPrefix != "MAYFLY_" || one.Identity.WorkloadAPI == nil || one.Socket.AllowUIDs != nil {
		t.Errorf("single entitlement defaults: %+v", one)
	}
}

func TestParseConfigErrors(t *testing.T) {
	base := "broker: {addr: x:1}\nidentity: {workload_api: {}}\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"empty", "", "the file is empty"},
		{"unknown key", base + "entitlements: [{name: a}]\nsocket: {path: s, mode: 0777}\n", "line 4: field mode not found"},
		{"unknown top key", base + "entitlements: [{name: a}]\nbrokers: {}\n", "line 4: field brokers not found"},
		{"two documents", base + "entitlements: [{name: a}]\n---\nbroker: {}\n", "more than one YAML document"},
		{"no addr", "identity: {workload_api: {}}\nentitlements: [{name: a}]\n", "broker.addr is required"},
		{"bad broker id", "broker: {addr: x:1, id: mayfly}\nidentity: {workload_api: {}}\nentitlements: [{name: a}]\n", "broker.id: scheme is missing or invalid"},
		{"no identity", "broker: {addr: x:1}\nentitlements: [{name: a}]\n", "identity: one of workload_api and files is required"},
		{"two identities", "broker: {addr: x:1}\nidentity: {workload_api: {}, files: {cert: a, key: b, bundle: c}}\nentitlements: [{name: a}]\n", "identity: set one of workload_api and files, not both"},
		{"files incomplete", "broker: {addr: x:1}\nidentity: {files: {cert: a}}\nentitlements: [{name: a}]\n", "identity.files: cert, key and bundle are all required"},
		{"no entitlements", base, "entitlements: at least one is required"},
		{"no name", base + "entitlements: [{ttl: 1m}]\n", "entitlements[0].name is required"},
		{"duplicate", base + "entitlements: [{name: a}, {name: a}]\n", "entitlements[1] (a): entitlement listed twice"},
		{"bad ttl", base + "entitlements: [{name: a, ttl: soon}]\n", `line 3: "soon" is not a duration such as 90s or 15m`},
		{"bad template", base + "entitlements: [{name: a, file: {path: f, template: yaml}}]\n", `entitlements[0] (a).file.template: "yaml" is neither env, json nor raw`},
		{"template field typo", base + "entitlements: [{name: a, file: {path: f, template: '{{ .Tokn }}'}}]\n", "can't evaluate field Tokn"},
		{"world-readable file", base + "entitlements: [{name: a, file: {path: f, mode: '0644'}}]\n", "entitlements[0] (a).file.mode: 0644 gives others access to a secret"},
		{"template without path", base + "entitlements: [{name: a, file: {template: env}}]\n", "entitlements[0] (a).file: template and mode need a path"},
		{"same file twice", base + "entitlements: [{name: a, file: {path: f}}, {name: b, file: {path: f}}]\n", "is also the file of a"},
		{"same prefix twice", base + "entitlements: [{name: a, env_prefix: X_}, {name: b, env_prefix: X_}]\n", `entitlements[1] (b).env_prefix: "X_" is also the prefix of a`},
		{"bad prefix", base + "entitlements: [{name: a, env_prefix: 'A-B'}]\n", `"A-B" is not the start of an environment variable name`},
		{"uids without socket", base + "entitlements: [{name: a}]\nsocket: {allow_uids: [1]}\n", "socket: allow_uids and group need a path"},
		{"unknown group", base + "entitlements: [{name: a}]\nsocket: {path: s, group: no-such-group-here}\n", "socket.group: group: unknown group no-such-group-here"},
		{"signal and restart", base + "entitlements: [{name: a}]\nexec: {signal: HUP, restart_on_rotation: true}\n", "exec: set one of signal and restart_on_rotation, not both"},
		{"bad signal", base + "entitlements: [{name: a}]\nexec: {signal: SIGFOO}\n", `exec.signal: unknown signal "SIGFOO"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml), "/base")
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			if !strings.HasPrefix(err.Error(), "sidecar: config: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(path, []byte("broker: {addr: x:1}\nidentity: {files: {cert: c.pem, key: k.pem, bundle: b.pem}}\nentitlements: [{name: a}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Identity.Files.Cert != filepath.Join(dir, "c.pem") {
		t.Errorf("relative path not taken from the config's directory: %s", cfg.Identity.Files.Cert)
	}
	_, err = LoadConfig(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.HasPrefix(err.Error(), "sidecar: config: open "+dir) {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(path, []byte("broker: {addr: x:1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(path)
	if want := "sidecar: config " + path + ": identity: one of workload_api and files is required"; err == nil || err.Error() != want {
		t.Errorf("error %v\nwant %s", err, want)
	}
}

func TestRender(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	lease := sdk.Lease{ID: "lease1", Entitlement: "ent", ExpiresAt: exp}
	jwtCred := &sdk.Credential{Lease: lease, Kind: sdk.KindJWT, Token: "tok'en", Scopes: []string{"a", "b"}, ExpiresAt: exp}
	upCred := &sdk.Credential{Lease: lease, Kind: sdk.KindUsernamePassword, Username: "u", Password: "p w", ExpiresAt: exp}
	certCred := &sdk.Credential{Lease: lease, Kind: sdk.KindCertificate, CertPEM: "CERT\n", ChainPEM: "CHAIN", KeyPEM: "KEY\n", ExpiresAt: exp}
	awsCred := &sdk.Credential{Lease: lease, Kind: sdk.KindAWS, AccessKeyID: "AK", SecretAccessKey: "SK", SessionToken: "ST", ExpiresAt: exp}
	rawCred := &sdk.Credential{Lease: lease, Kind: sdk.KindRaw, Fields: map[string]string{"api-key": "k1"}, ExpiresAt: exp}

	for _, tc := range []struct {
		name, tmpl string
		cred       *sdk.Credential
		want       string
	}{
		{"env jwt", "env", jwtCred, "P_ENTITLEMENT='ent'\nP_EXPIRES_AT='2030-01-02T03:04:05Z'\nP_KIND='jwt'\nP_LEASE_ID='lease1'\nP_SCOPES='a b'\nP_TOKEN='tok'\\''en'\n"},
		{"env aws", "env", awsCred, "P_AWS_ACCESS_KEY_ID='AK'\nP_AWS_SECRET_ACCESS_KEY='SK'\nP_AWS_SESSION_TOKEN='ST'\nP_ENTITLEMENT='ent'\nP_EXPIRES_AT='2030-01-02T03:04:05Z'\nP_KIND='aws'\nP_LEASE_ID='lease1'\n"},
		{"env raw", "env", rawCred, "P_ENTITLEMENT='ent'\nP_EXPIRES_AT='2030-01-02T03:04:05Z'\nP_FIELD_API_KEY='k1'\nP_KIND='raw'\nP_LEASE_ID='lease1'\n"},
		{"raw jwt", "raw", jwtCred, "tok'en"},
		{"raw password", "raw", upCred, "p w"},
		{"raw certificate", "raw", certCred, "CERT\nCHAIN\nKEY\n"},
		{"raw single field", "raw", rawCred, "k1"},
		{"custom", "postgres://{{ .Username }}:{{ .Password }}@db/{{ .Lease.Entitlement }}", upCred, "postgres://u:p w@db/ent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := render(tc.tmpl, "P_", tc.cred)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}

	got, err := render("json", "", upCred)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	if m["username"] != "u" || m["password"] != "p w" || m["lease_id"] != "lease1" || m["expires_at"] != "2030-01-02T03:04:05Z" || m["token"] != nil {
		t.Errorf("json = %s", got)
	}

	if _, err := render("raw", "", awsCred); err == nil || err.Error() != "template raw: a aws credential has no single secret; use env, json or a Go template" {
		t.Errorf("raw aws: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	a := &sdk.Credential{Lease: sdk.Lease{ID: "l1", ExpiresAt: time.Unix(1, 0)}, Kind: sdk.KindJWT, Token: "t"}
	moved := *a
	moved.Lease.ExpiresAt = time.Unix(2, 0)
	moved.ExpiresAt = time.Unix(2, 0)
	if fingerprint(a) != fingerprint(&moved) {
		t.Error("a renewal that only moved the expiry counts as a rotation")
	}
	for _, change := range []func(c *sdk.Credential){
		func(c *sdk.Credential) { c.Token = "u" },
		func(c *sdk.Credential) { c.Lease.ID = "l2" },
		func(c *sdk.Credential) { c.Fields = map[string]string{"a": "b"} },
	} {
		b := *a
		change(&b)
		if fingerprint(a) == fingerprint(&b) {
			t.Errorf("change not seen: %+v", b)
		}
	}
	if fingerprint(nil) != [32]byte{} {
		t.Error("nil credential has a fingerprint")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	for i, mode := range []os.FileMode{0o600, 0o640} {
		data := []byte(strings.Repeat("x", i+1))
		if err := writeFileAtomic(path, data, mode); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("mode %04o, want %04o", fi.Mode().Perm(), mode)
		}
		got, _ := os.ReadFile(path)
		if string(got) != string(data) {
			t.Errorf("contents %q", got)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file", len(entries))
	}
	if err := writeFileAtomic(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("no error writing into a missing directory")
	}
	if err := removeFile(path); err != nil {
		t.Fatal(err)
	}
	if err := removeFile(path); err != nil {
		t.Errorf("removing a removed file: %v", err)
	}
}

// The example configuration in examples/sidecar is valid.
func TestExampleConfig(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "..", "examples", "sidecar", "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Entitlements[0].EnvPrefix != "MAYFLY_" || cfg.Exec.Signal != "SIGHUP" || !strings.HasSuffix(cfg.Identity.Files.Cert, filepath.Join("examples", "sidecar", ".dev", "workload.crt.pem")) {
		t.Errorf("example config: %+v", cfg)
	}
}
