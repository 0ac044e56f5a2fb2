package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"
)

// Config is the sidecar's configuration file. Unknown keys are errors, and
// so are bad values, reported with their line. Relative paths are taken
// from the directory of the configuration file.
//
//	broker:
//	  addr: mayfly.internal:8443
//	  id: spiffe://example.org/mayfly          # the broker's SPIFFE ID
//	identity:
//	  workload_api:
//	    socket: unix:///run/spire/agent.sock   # empty: $SPIFFE_ENDPOINT_SOCKET
//	  # or SVID files:
//	  # files: {cert: svid.pem, key: svid_key.pem, bundle: bundle.pem}
//	entitlements:
//	  - name: orders-db-ro
//	    ttl: 15m
//	    file:
//	      path: /run/mayfly/orders-db.env
//	      template: env                        # env | json | raw | a Go text/template
//	socket:
//	  path: /run/mayfly/sidecar.sock
//	  allow_uids: [1000]
//	exec:
//	  signal: SIGHUP                           # or restart_on_rotation: true
type Config struct {
	// Broker says where the broker is and who it must be.
	Broker BrokerConfig `yaml:"broker"`
	// Identity is the sidecar's own SPIFFE identity towards the broker.
	Identity IdentityConfig `yaml:"identity"`
	// Entitlements are the credentials to keep. At least one.
	Entitlements []EntitlementConfig `yaml:"entitlements"`
	// Socket, when its path is set, serves mayfly.sidecar.v1.SidecarService
	// to local processes.
	Socket SocketConfig `yaml:"socket"`
	// Exec says what `mayfly-sidecar exec` does to its child when a
	// credential changes.
	Exec ExecConfig `yaml:"exec"`
	// LeaseCheckInterval is how often the sidecar asks the broker whether
	// its leases are still active, to replace a revoked one (kill switch,
	// explicit revoke) without waiting for the next renewal. Default 30s.
	LeaseCheckInterval Duration `yaml:"lease_check_interval"`
	// StartTimeout bounds the wait for the first credentials at start.
	// Default 1m.
	StartTimeout Duration `yaml:"start_timeout"`
}

// BrokerConfig locates the broker.
type BrokerConfig struct {
	// Addr is the broker's gRPC address, host:port. Required.
	Addr string `yaml:"addr"`
	// ID is the SPIFFE ID the broker must present. Empty accepts any member
	// of the sidecar's own trust domain.
	ID string `yaml:"id"`
}

// IdentityConfig chooses where the sidecar's X.509-SVID comes from: exactly
// one of WorkloadAPI and Files.
type IdentityConfig struct {
	// WorkloadAPI takes the SVID from the SPIFFE Workload API (SPIRE agent).
	WorkloadAPI *WorkloadAPIConfig `yaml:"workload_api"`
	// Files takes the SVID from PEM files, reread when they change.
	Files *SVIDFilesConfig `yaml:"files"`
}

// WorkloadAPIConfig names the Workload API socket.
type WorkloadAPIConfig struct {
	// Socket is the Workload API address, e.g.
	// "unix:///run/spire/agent.sock". Empty uses SPIFFE_ENDPOINT_SOCKET.
	Socket string `yaml:"socket"`
}

// SVIDFilesConfig names an X.509-SVID on disk.
type SVIDFilesConfig struct {
	// Cert is the certificate chain, leaf first (PEM). Required.
	Cert string `yaml:"cert"`
	// Key is its private key (PEM). Required.
	Key string `yaml:"key"`
	// Bundle is the trust bundle of the SVID's trust domain (PEM). Required.
	Bundle string `yaml:"bundle"`
}

// EntitlementConfig is one credential the sidecar keeps.
type EntitlementConfig struct {
	// Name of the entitlement at the broker. Required, unique.
	Name string `yaml:"name"`
	// TTL to ask for at issuance and renewal; zero means the entitlement's
	// default.
	TTL Duration `yaml:"ttl"`
	// Reason is recorded with every lease.
	Reason string `yaml:"reason"`
	// EnvPrefix starts the names of the environment variables that carry the
	// credential to an exec child and in the env template. Default
	// "MAYFLY_" with one entitlement; with several, "MAYFLY_<NAME>_" where
	// NAME is the entitlement name in upper case with every other character
	// than A-Z and 0-9 replaced by "_".
	EnvPrefix string `yaml:"env_prefix"`
	// File, when its path is set, is where the credential is written.
	File FileConfig `yaml:"file"`
}

// FileConfig is a file the credential is written to, atomically, each time
// it changes, and removed when the sidecar stops or the credential is no
// longer valid.
type FileConfig struct {
	// Path of the file. A missing directory is created with mode 0700.
	Path string `yaml:"path"`
	// Template is "env" (shell-quoted KEY='value' lines, see EnvPrefix),
	// "json", "raw" (the bare secret: a token, a password, PEM for a
	// certificate), or a Go text/template (anything containing "{{") applied
	// to an sdk.Credential, e.g. "{{ .Username }}:{{ .Password }}".
	// Default "json".
	Template string `yaml:"template"`
	// Mode of the file, e.g. "0640". Default "0600". It may not give any
	// permission to others.
	Mode string `yaml:"mode"`
}

// SocketConfig is the unix socket serving the SidecarService.
type SocketConfig struct {
	// Path of the socket; empty serves no socket. Its directory is created
	// with mode 0700 (0710 with Group) if missing, and must otherwise not be
	// accessible to others.
	Path string `yaml:"path"`
	// AllowUIDs are the uids of the processes allowed to call, checked with
	// SO_PEERCRED on every call. Default: the sidecar's own uid.
	AllowUIDs []int `yaml:"allow_uids"`
	// Group, a group name or gid, lets processes of other uids reach the
	// socket: the socket becomes mode 0660 and its directory 0710, both
	// owned by that group. Without it they are 0600 and 0700, and only the
	// sidecar's uid (or root) can connect.
	Group string `yaml:"group"`
}

// ExecConfig says what happens to the child of `mayfly-sidecar exec` when a
// credential's value changes (a new token, a new lease). Set at most one.
type ExecConfig struct {
	// Signal is sent to the child, e.g. "SIGHUP", so it rereads its files.
	Signal string `yaml:"signal"`
	// RestartOnRotation stops the child (SIGTERM, then SIGKILL after
	// StopTimeout) and starts it again with the new credentials in its
	// environment.
	RestartOnRotation bool `yaml:"restart_on_rotation"`
	// StopTimeout is how long the child has to exit after SIGTERM, on
	// restart and on shutdown. Default 10s.
	StopTimeout Duration `yaml:"stop_timeout"`
}

// Duration is a time.Duration written as in Go ("90s", "15m", "1h30m").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as 90s or 15m", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 90s or 15m", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sidecar: config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sidecar: config: %w", err)
	}
	cfg, err := parseConfig(b, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("sidecar: config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig reads and checks a configuration; relative paths in it are
// taken from baseDir.
func ParseConfig(data []byte, baseDir string) (*Config, error) {
	cfg, err := parseConfig(data, baseDir)
	if err != nil {
		return nil, fmt.Errorf("sidecar: config: %w", err)
	}
	return cfg, nil
}

func parseConfig(data []byte, baseDir string) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	if err := cfg.check(baseDir); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// envNameRe is what an environment variable prefix may look like.
var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// check validates the configuration, fills in defaults and makes paths
// absolute.
func (c *Config) check(baseDir string) error {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) || baseDir == "" {
			return p
		}
		return filepath.Join(baseDir, p)
	}
	if c.Broker.Addr == "" {
		return errors.New("broker.addr is required")
	}
	if c.Broker.ID != "" {
		if _, err := spiffeid.FromString(c.Broker.ID); err != nil {
			return fmt.Errorf("broker.id: %w", err)
		}
	}
	switch id := &c.Identity; {
	case id.WorkloadAPI != nil && id.Files != nil:
		return errors.New("identity: set one of workload_api and files, not both")
	case id.WorkloadAPI == nil && id.Files == nil:
		return errors.New("identity: one of workload_api and files is required")
	case id.Files != nil:
		f := id.Files
		if f.Cert == "" || f.Key == "" || f.Bundle == "" {
			return errors.New("identity.files: cert, key and bundle are all required")
		}
		f.Cert, f.Key, f.Bundle = abs(f.Cert), abs(f.Key), abs(f.Bundle)
	}

	if len(c.Entitlements) == 0 {
		return errors.New("entitlements: at least one is required")
	}
	names := map[string]bool{}
	prefixes := map[string]string{}
	files := map[string]string{}
	for i := range c.Entitlements {
		e := &c.Entitlements[i]
		where := fmt.Sprintf("entitlements[%d]", i)
		if e.Name == "" {
			return fmt.Errorf("%s.name is required", where)
		}
		where = fmt.Sprintf("entitlements[%d] (%s)", i, e.Name)
		if names[e.Name] {
			return fmt.Errorf("%s: entitlement listed twice", where)
		}
		names[e.Name] = true
		if e.EnvPrefix == "" {
			e.EnvPrefix = "MAYFLY_"
			if len(c.Entitlements) > 1 {
				e.EnvPrefix = "MAYFLY_" + envName(e.Name) + "_"
			}
		}
		if !envNameRe.MatchString(e.EnvPrefix) {
			return fmt.Errorf("%s.env_prefix: %q is not the start of an environment variable name", where, e.EnvPrefix)
		}
		if other, dup := prefixes[e.EnvPrefix]; dup {
			return fmt.Errorf("%s.env_prefix: %q is also the prefix of %s", where, e.EnvPrefix, other)
		}
		prefixes[e.EnvPrefix] = e.Name
		if e.File.Path == "" {
			if e.File.Template != "" || e.File.Mode != "" {
				return fmt.Errorf("%s.file: template and mode need a path", where)
			}
			continue
		}
		e.File.Path = abs(e.File.Path)
		if other, dup := files[e.File.Path]; dup {
			return fmt.Errorf("%s.file.path: %s is also the file of %s", where, e.File.Path, other)
		}
		files[e.File.Path] = e.Name
		if e.File.Template == "" {
			e.File.Template = TemplateJSON
		}
		if _, err := parseTemplate(e.File.Template); err != nil {
			return fmt.Errorf("%s.file.template: %w", where, err)
		}
		if _, err := e.File.fileMode(); err != nil {
			return fmt.Errorf("%s.file.mode: %w", where, err)
		}
	}

	if c.Socket.Path == "" {
		if len(c.Socket.AllowUIDs) > 0 || c.Socket.Group != "" {
			return errors.New("socket: allow_uids and group need a path")
		}
	} else {
		c.Socket.Path = abs(c.Socket.Path)
		if len(c.Socket.AllowUIDs) == 0 {
			c.Socket.AllowUIDs = []int{os.Getuid()}
		}
		for _, uid := range c.Socket.AllowUIDs {
			if uid < 0 {
				return fmt.Errorf("socket.allow_uids: %d is not a uid", uid)
			}
		}
		if c.Socket.Group != "" {
			if _, err := lookupGroup(c.Socket.Group); err != nil {
				return fmt.Errorf("socket.group: %w", err)
			}
		}
	}

	if c.Exec.Signal != "" {
		if c.Exec.RestartOnRotation {
			return errors.New("exec: set one of signal and restart_on_rotation, not both")
		}
		if _, err := parseSignal(c.Exec.Signal); err != nil {
			return fmt.Errorf("exec.signal: %w", err)
		}
	}
	if c.Exec.StopTimeout == 0 {
		c.Exec.StopTimeout = Duration(10 * time.Second)
	}
	if c.LeaseCheckInterval == 0 {
		c.LeaseCheckInterval = Duration(30 * time.Second)
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = Duration(time.Minute)
	}
	return nil
}

// envName turns an entitlement name into environment-variable characters.
func envName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(name) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// fileMode parses Mode; the default is 0600, and no bit for others may be
// set.
func (f FileConfig) fileMode() (os.FileMode, error) {
	if f.Mode == "" {
		return 0o600, nil
	}
	v, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode such as 0600", f.Mode)
	}
	if v&0o007 != 0 {
		return 0, fmt.Errorf("%s gives others access to a secret; use 0600 or 0640", f.Mode)
	}
	if v&0o600 != 0o600 {
		return 0, fmt.Errorf("%s does not let the owner read and write the file", f.Mode)
	}
	return os.FileMode(v), nil
}

// signals are the names exec.signal accepts.
var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2, "SIGTERM": syscall.SIGTERM,
	"SIGWINCH": syscall.SIGWINCH, "SIGCONT": syscall.SIGCONT,
}

func parseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	sig, ok := signals[n]
	if !ok {
		return 0, fmt.Errorf("unknown signal %q; use one of SIGHUP, SIGUSR1, SIGUSR2, SIGINT, SIGQUIT, SIGTERM, SIGWINCH, SIGCONT", name)
	}
	return sig, nil
}

// Built-in file templates.
const (
	// TemplateEnv writes KEY='value' lines a shell can source.
	TemplateEnv = "env"
	// TemplateJSON writes a JSON object.
	TemplateJSON = "json"
	// TemplateRaw writes the bare secret.
	TemplateRaw = "raw"
)

// parseTemplate checks a template setting; it returns the parsed template
// for a custom one and nil for a built-in one.
func parseTemplate(s string) (*template.Template, error) {
	switch s {
	case TemplateEnv, TemplateJSON, TemplateRaw:
		return nil, nil
	}
	if !strings.Contains(s, "{{") {
		return nil, fmt.Errorf("%q is neither env, json nor raw, nor a Go text/template (none contains \"{{\")", s)
	}
	t, err := template.New("file").Option("missingkey=error").Parse(s)
	if err != nil {
		return nil, err
	}
	if err := checkTemplate(t); err != nil {
		return nil, err
	}
	return t, nil
}
