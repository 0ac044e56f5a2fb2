package testenv

// This file runs a real SPIRE (server and agent) for tests.
//
//   - Binaries: spire-server and spire-agent are built once from the tools
//     module deploy/tools/spire (SPIREVersion) into
//     ${MAYFLY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mayfly-tools}/spire-<version>/,
//     under a lock file, to temporary names that are then renamed. The
//     first build takes many minutes (28 on two cores shared with other
//     builds; 1.5 when the Go build cache is already warm); later runs only
//     stat the files.
//   - Each SPIRE call starts its own server (sqlite datastore, memory key
//     manager, loopback port, join_token node attestation) and agent (the
//     server's bundle as bootstrap bundle, unix workload attestor, Workload
//     API socket in a temporary directory every uid can reach), waits for
//     both to pass `healthcheck`, and stops them in t.Cleanup. Startup takes
//     about a second; new entries reach the agent within about a second.
//   - Identities: the unix attestor selects a workload by the uid of the
//     calling process. Everything in the test process shares its uid, so it
//     can hold several SVIDs (ordered by entry ID; the first is the default,
//     and a source can pick another by SPIFFE ID), and a workload with an
//     identity of its own runs as a helper process under another uid:
//     TestBinaryCommand runs the test binary as any uid (root needed; no
//     account is needed for the uid).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// SPIREVersion is the SPIRE release the tests run; it must match the
// versions in deploy/tools/spire/go.mod.
const SPIREVersion = "v1.13.3"

// SPIREOptions configures the SPIRE server and agent a test gets.
type SPIREOptions struct {
	// TrustDomain is the trust domain of the server (default "mayfly.test").
	TrustDomain string
	// X509SVIDTTL is the server's default_x509_svid_ttl (default 1h). The
	// agent rotates an X.509-SVID when about half of its lifetime is gone, so
	// 30s gives a rotation about every 15s.
	X509SVIDTTL time.Duration
	// JWTSVIDTTL is the server's default_jwt_svid_ttl (default 5m).
	JWTSVIDTTL time.Duration
	// CATTL is the lifetime of the server's signing authorities (default 6h).
	CATTL time.Duration
	// AgentTTL is the lifetime of the agent's own SVID (default 1h, capped at
	// CATTL).
	AgentTTL time.Duration
}

// SPIREEnv is a running SPIRE server and agent.
type SPIREEnv struct {
	// TrustDomain is the server's trust domain.
	TrustDomain spiffeid.TrustDomain
	// AgentID is the SPIFFE ID of the agent, the parent of every entry
	// Register creates.
	AgentID spiffeid.ID
	// SocketPath is the agent's Workload API socket. It is reachable by
	// every uid (the directories above it are 0755), so helper processes
	// running as other users can fetch their SVIDs too.
	SocketPath string
	// ServerAddr is the server's host:port on loopback.
	ServerAddr string
	// Dir holds the configs, data and logs; it is removed at the end of
	// the test.
	Dir string

	serverBin, agentBin string
	serverSocket        string
	server, agent       *spireProcess
}

// SocketAddr is the Workload API address for go-spiffe and the SDK:
// "unix://" + SocketPath.
func (s *SPIREEnv) SocketAddr() string { return "unix://" + s.SocketPath }

// SPIREEntry is a registration entry for RegisterEntry.
type SPIREEntry struct {
	// EntryID is the entry's ID; empty lets the server choose one. The
	// Workload API lists a workload's SVIDs ordered by entry ID, and the
	// first is its default SVID (what sdk.WithWorkloadAPI uses).
	EntryID string
	// SPIFFEID is the workload's SPIFFE ID. Required.
	SPIFFEID string
	// Selectors such as "unix:uid:1000". Required.
	Selectors []string
	// X509SVIDTTL and JWTSVIDTTL override the server defaults (whole
	// seconds).
	X509SVIDTTL, JWTSVIDTTL time.Duration
	// DNSNames go into the X.509-SVID's DNS SANs.
	DNSNames []string
}

// spireModDir is the tools module that pins SPIRE, relative to the
// repository root.
const spireModDir = "deploy/tools/spire"

// SPIRECacheDir is where the SPIRE binaries are cached:
// $MAYFLY_TOOLS_CACHE/spire-<version>, by default
// ${XDG_CACHE_HOME:-$HOME/.cache}/mayfly-tools/spire-<version>.
func SPIRECacheDir() (string, error) {
	base, err := toolCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, "spire-"+SPIREVersion), nil
}

var (
	spireBuildMu   sync.Mutex
	spireBins      [2]string // spire-server, spire-agent once built
	spireBuildTime time.Duration
)

// SPIREBinaries returns the paths of spire-server and spire-agent, building
// them from the tools module deploy/tools/spire on first use (several
// minutes on two cores) into SPIRECacheDir, where later runs find them.
// Concurrent test processes wait for one builder (a lock file); a build
// writes temporary names and renames them, so a binary in the cache is
// always complete. When they cannot be built it skips the test (fails it
// when CI=true). spire-server is built with cgo: its sqlite datastore
// needs it.
func SPIREBinaries(t testing.TB) (server, agent string) {
	t.Helper()
	spireBuildMu.Lock()
	defer spireBuildMu.Unlock()
	if spireBins[0] == "" {
		bins, err := spireBuild(t)
		if err != nil {
			toolSkip(t, "testenv: SPIRE binaries unavailable: "+err.Error())
		}
		spireBins = bins
	}
	return spireBins[0], spireBins[1]
}

func spireBuild(t testing.TB) ([2]string, error) {
	var bins [2]string
	dir, err := SPIRECacheDir()
	if err != nil {
		return bins, err
	}
	names := [2]string{"spire-server", "spire-agent"}
	for i, n := range names {
		bins[i] = filepath.Join(dir, n)
	}
	present := func() bool { return toolExecutable(bins[0]) && toolExecutable(bins[1]) }
	if present() {
		return bins, nil
	}
	root, err := toolRepoRoot()
	if err != nil {
		return bins, err
	}
	moddir := filepath.Join(root, spireModDir)
	if v, err := toolModVersion(filepath.Join(moddir, "go.mod"), "github.com/spiffe/spire"); err != nil {
		return bins, err
	} else if v != SPIREVersion {
		return bins, fmt.Errorf("%s/go.mod pins SPIRE %s, testenv.SPIREVersion is %s", spireModDir, v, SPIREVersion)
	}
	gobin, err := toolGo()
	if err != nil {
		return bins, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return bins, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return bins, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return bins, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if present() { // another process built them while we waited
		return bins, nil
	}
	t.Logf("testenv: building SPIRE %s into %s once; this takes several minutes on a small machine", SPIREVersion, dir)
	start := time.Now()
	for i, n := range names {
		if toolExecutable(bins[i]) {
			continue
		}
		tmp := fmt.Sprintf("%s.tmp-%d", bins[i], os.Getpid())
		cmd := exec.Command(gobin, "build", "-o", tmp, "github.com/spiffe/spire/cmd/"+n)
		cmd.Dir = moddir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly", "CGO_ENABLED=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			_ = os.Remove(tmp)
			return bins, fmt.Errorf("go build %s in %s: %v\n%s", n, moddir, err, toolTail(out, 4000))
		}
		if err := os.Rename(tmp, bins[i]); err != nil {
			_ = os.Remove(tmp)
			return bins, err
		}
	}
	spireBuildTime = time.Since(start)
	t.Logf("testenv: built SPIRE %s in %v", SPIREVersion, spireBuildTime.Round(time.Second))
	return bins, nil
}

// spireProcess is a running spire-server or spire-agent.
type spireProcess struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // valid after done
}

func spireStart(name, bin, logPath string, args ...string) (*spireProcess, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Die with the test process even if it is killed before its cleanups run.
	cmd.SysProcAttr = toolSysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &spireProcess{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *spireProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, and SIGKILL after a grace period.
func (p *spireProcess) stop() {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail returns the end of the process's log, for failure messages.
func (p *spireProcess) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// spireSeconds formats d for SPIRE's HCL config ("90s").
func spireSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "s"
}

// spireLogLevel is WARN, or DEBUG with MAYFLY_TEST_LOG set.
func spireLogLevel() string {
	if os.Getenv("MAYFLY_TEST_LOG") != "" {
		return "DEBUG"
	}
	return "WARN"
}

// SPIRE starts a SPIRE server and an agent attested to it with a join
// token, waits until both are healthy, and stops them when the test ends.
// It skips the test when SPIRE cannot be built or run here (and fails it
// when CI=true).
func SPIRE(t testing.TB, opts SPIREOptions) *SPIREEnv {
	t.Helper()
	serverBin, agentBin := SPIREBinaries(t)
	if opts.TrustDomain == "" {
		opts.TrustDomain = "mayfly.test"
	}
	if opts.X509SVIDTTL <= 0 {
		opts.X509SVIDTTL = time.Hour
	}
	if opts.JWTSVIDTTL <= 0 {
		opts.JWTSVIDTTL = 5 * time.Minute
	}
	if opts.CATTL <= 0 {
		opts.CATTL = 6 * time.Hour
	}
	if opts.AgentTTL <= 0 {
		opts.AgentTTL = time.Hour
	}
	opts.AgentTTL = min(opts.AgentTTL, opts.CATTL)
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		t.Fatalf("testenv: SPIRE trust domain: %v", err)
	}

	// Not t.TempDir: its parents are 0700, and workloads running as other
	// uids must reach the agent socket.
	dir, err := os.MkdirTemp("", "mayfly-spire-")
	if err != nil {
		t.Fatal(err)
	}
	s := &SPIREEnv{TrustDomain: td, Dir: dir, serverBin: serverBin, agentBin: agentBin,
		serverSocket: filepath.Join(dir, "server", "api.sock"),
		SocketPath:   filepath.Join(dir, "public", "api.sock")}
	t.Cleanup(func() {
		s.agent.stop()
		s.server.stop()
		if t.Failed() {
			for _, p := range []*spireProcess{s.server, s.agent} {
				if p != nil {
					t.Logf("testenv: %s log (%s):\n%s", p.name, p.logPath, p.logTail())
				}
			}
		}
		_ = os.RemoveAll(dir)
	})
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o755}, {filepath.Join(dir, "server"), 0o700}, {filepath.Join(dir, "agent"), 0o700}, {filepath.Join(dir, "public"), 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.startServer(t, opts); err != nil {
		toolSkip(t, "testenv: SPIRE: "+err.Error())
	}
	if err := s.startAgent(opts); err != nil {
		toolSkip(t, "testenv: SPIRE: "+err.Error())
	}
	return s
}

func (s *SPIREEnv) startServer(t testing.TB, opts SPIREOptions) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a port taken meanwhile: try another
		port := toolFreePort(t)
		data := filepath.Join(s.Dir, "server", "data")
		conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%d"
    socket_path = %q
    trust_domain = %q
    data_dir = %q
    log_level = %q
    ca_key_type = "ec-p256"
    ca_ttl = %q
    default_x509_svid_ttl = %q
    default_jwt_svid_ttl = %q
    agent_ttl = %q
    experimental {
        # New and deleted entries reach the agent within about a second
        # (default 5s).
        cache_reload_interval = "500ms"
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %q
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
}
`, port, s.serverSocket, s.TrustDomain.Name(), data, spireLogLevel(),
			spireSeconds(opts.CATTL), spireSeconds(opts.X509SVIDTTL), spireSeconds(opts.JWTSVIDTTL), spireSeconds(opts.AgentTTL),
			filepath.Join(data, "datastore.sqlite3"))
		confPath := filepath.Join(s.Dir, "server", "server.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			return err
		}
		p, err := spireStart("spire-server", s.serverBin, filepath.Join(s.Dir, "server", "server.log"), "run", "-config", confPath)
		if err != nil {
			return fmt.Errorf("start spire-server: %w", err)
		}
		s.server = p
		s.ServerAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.waitHealthy(p, s.serverBin, s.serverSocket); lastErr == nil {
			return nil
		}
		p.stop()
		_ = os.RemoveAll(data)
	}
	return lastErr
}

// waitHealthy polls `<bin> healthcheck` until it passes, the process exits,
// or 60 seconds pass.
func (s *SPIREEnv) waitHealthy(p *spireProcess, bin, socket string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.logTail())
		}
		out, err := exec.Command(bin, "healthcheck", "-socketPath", socket).CombinedOutput()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after 60s: %v: %s\n%s", p.name, err, bytes.TrimSpace(out), p.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *SPIREEnv) startAgent(opts SPIREOptions) error {
	bundle, err := s.serverCLI("bundle", "show")
	if err != nil {
		return err
	}
	bundlePath := filepath.Join(s.Dir, "agent", "bootstrap.crt")
	if err := os.WriteFile(bundlePath, bundle, 0o600); err != nil {
		return err
	}
	out, err := s.serverCLI("token", "generate", "-ttl", "600", "-output", "json")
	if err != nil {
		return err
	}
	var tok struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(out, &tok); err != nil || tok.Value == "" {
		return fmt.Errorf("spire-server token generate: unexpected output %q: %v", out, err)
	}
	s.AgentID = spiffeid.RequireFromPath(s.TrustDomain, "/spire/agent/join_token/"+tok.Value)

	host, port, _ := net.SplitHostPort(s.ServerAddr)
	conf := fmt.Sprintf(`agent {
    data_dir = %q
    log_level = %q
    server_address = %q
    server_port = %q
    socket_path = %q
    trust_bundle_path = %q
    trust_domain = %q
    join_token = %q
    experimental {
        sync_interval = "1s"
    }
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`, filepath.Join(s.Dir, "agent", "data"), spireLogLevel(), host, port, s.SocketPath, bundlePath, s.TrustDomain.Name(), tok.Value)
	confPath := filepath.Join(s.Dir, "agent", "agent.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := spireStart("spire-agent", s.agentBin, filepath.Join(s.Dir, "agent", "agent.log"), "run", "-config", confPath)
	if err != nil {
		return fmt.Errorf("start spire-agent: %w", err)
	}
	s.agent = p
	return s.waitHealthy(p, s.agentBin, s.SocketPath)
}

// serverCLI runs a spire-server subcommand against this server's admin
// socket.
func (s *SPIREEnv) serverCLI(args ...string) ([]byte, error) {
	// Flags go after the subcommand path: find where the words end.
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	full := append(append(append([]string{}, args[:i]...), "-socketPath", s.serverSocket), args[i:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.serverBin, full...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("spire-server %s: %v: %s%s", strings.Join(args, " "), err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes(), nil
}

// ServerCLI runs `spire-server ARGS -socketPath …` against this server and
// returns its standard output; a failure fails the test.
func (s *SPIREEnv) ServerCLI(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := s.serverCLI(args...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return out
}

// Register creates an entry for spiffeID, child of the agent, selected by
// the unix uid of the workload process, and returns its entry ID. The agent
// picks it up within about a second; WaitX509SVID waits for it when uid is
// the test's own.
func (s *SPIREEnv) Register(t testing.TB, spiffeID string, uid int) string {
	t.Helper()
	return s.RegisterEntry(t, SPIREEntry{SPIFFEID: spiffeID, Selectors: []string{"unix:uid:" + strconv.Itoa(uid)}})
}

// RegisterEntry creates a registration entry, child of the agent, and
// returns its entry ID.
func (s *SPIREEnv) RegisterEntry(t testing.TB, e SPIREEntry) string {
	t.Helper()
	args := []string{"entry", "create", "-parentID", s.AgentID.String(), "-spiffeID", e.SPIFFEID, "-output", "json"}
	if e.EntryID != "" {
		args = append(args, "-entryID", e.EntryID)
	}
	for _, sel := range e.Selectors {
		args = append(args, "-selector", sel)
	}
	if e.X509SVIDTTL > 0 {
		args = append(args, "-x509SVIDTTL", strconv.Itoa(int(e.X509SVIDTTL/time.Second)))
	}
	if e.JWTSVIDTTL > 0 {
		args = append(args, "-jwtSVIDTTL", strconv.Itoa(int(e.JWTSVIDTTL/time.Second)))
	}
	for _, dns := range e.DNSNames {
		args = append(args, "-dns", dns)
	}
	out := s.ServerCLI(t, args...)
	var resp struct {
		Results []struct {
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || len(resp.Results) != 1 {
		t.Fatalf("testenv: spire-server entry create: unexpected output %q: %v", out, err)
	}
	r := resp.Results[0]
	if r.Status.Code != 0 || r.Entry.ID == "" {
		t.Fatalf("testenv: spire-server entry create %s: code %d: %s", e.SPIFFEID, r.Status.Code, r.Status.Message)
	}
	return r.Entry.ID
}

// DeleteEntry deletes a registration entry; the agent stops serving its
// SVID within about a second.
func (s *SPIREEnv) DeleteEntry(t testing.TB, entryID string) {
	t.Helper()
	s.ServerCLI(t, "entry", "delete", "-entryID", entryID)
}

// Bundle returns the server's current X.509 trust bundle.
func (s *SPIREEnv) Bundle(t testing.TB) *x509bundle.Bundle {
	t.Helper()
	out := s.ServerCLI(t, "bundle", "show")
	b, err := x509bundle.Parse(s.TrustDomain, out)
	if err != nil {
		t.Fatalf("testenv: spire-server bundle show: %v", err)
	}
	return b
}

// SPIREAuthority is one X.509 signing authority of the server.
type SPIREAuthority struct {
	// AuthorityID is the authority's subject key ID, as the
	// `localauthority x509` commands name it.
	AuthorityID string `json:"authority_id"`
	// ExpiresAt is the authority's expiry, Unix seconds.
	ExpiresAt string `json:"expires_at"`
}

// X509Authorities returns the server's active, prepared and old X.509
// authorities (`localauthority x509 show`); an absent one has an empty
// AuthorityID.
func (s *SPIREEnv) X509Authorities(t testing.TB) (active, prepared, old SPIREAuthority) {
	t.Helper()
	out := s.ServerCLI(t, "localauthority", "x509", "show", "-output", "json")
	var resp struct {
		Active   SPIREAuthority `json:"active"`
		Prepared SPIREAuthority `json:"prepared"`
		Old      SPIREAuthority `json:"old"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("testenv: localauthority x509 show: unexpected output %q: %v", out, err)
	}
	return resp.Active, resp.Prepared, resp.Old
}

// PrepareX509Authority generates a new X.509 signing authority and adds it
// to the trust bundle without using it yet (`localauthority x509 prepare`);
// it returns the new authority's ID.
func (s *SPIREEnv) PrepareX509Authority(t testing.TB) string {
	t.Helper()
	out := s.ServerCLI(t, "localauthority", "x509", "prepare", "-output", "json")
	var resp struct {
		PreparedAuthority SPIREAuthority `json:"prepared_authority"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || resp.PreparedAuthority.AuthorityID == "" {
		t.Fatalf("testenv: localauthority x509 prepare: unexpected output %q: %v", out, err)
	}
	return resp.PreparedAuthority.AuthorityID
}

// ActivateX509Authority makes a prepared authority the one that signs new
// X.509-SVIDs; the previously active one becomes "old" and stays in the
// bundle.
func (s *SPIREEnv) ActivateX509Authority(t testing.TB, authorityID string) {
	t.Helper()
	s.ServerCLI(t, "localauthority", "x509", "activate", "-authorityID", authorityID)
}

// TaintX509Authority marks the old authority as tainted: agents rotate
// every SVID it signed at once.
func (s *SPIREEnv) TaintX509Authority(t testing.TB, authorityID string) {
	t.Helper()
	s.ServerCLI(t, "localauthority", "x509", "taint", "-authorityID", authorityID)
}

// RevokeX509Authority removes a tainted authority from the trust bundle:
// SVIDs it signed no longer verify anywhere the bundle is used.
func (s *SPIREEnv) RevokeX509Authority(t testing.TB, authorityID string) {
	t.Helper()
	s.ServerCLI(t, "localauthority", "x509", "revoke", "-authorityID", authorityID)
}

// WaitX509SVID waits, for at most 30 seconds, until the Workload API serves
// the test process an X.509-SVID with the given SPIFFE ID, and returns it.
// Only entries selecting the test's own uid can match.
func (s *SPIREEnv) WaitX509SVID(t testing.TB, spiffeID string) *x509svid.SVID {
	t.Helper()
	want, err := spiffeid.FromString(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(s.SocketAddr()))
		for _, svid := range svids {
			if svid.ID == want {
				return svid
			}
		}
		if err != nil {
			lastErr = err
		} else {
			lastErr = fmt.Errorf("the Workload API serves %d other SVIDs", len(svids))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("testenv: no X.509-SVID %s from the Workload API after 30s: %v", spiffeID, lastErr)
	return nil
}

// TestBinaryCommand returns a command that runs the current test binary as
// another user (cred), running only the tests matching run (e.g.
// "^TestHelperProcess$") with env added to the environment. The binary is
// copied to a directory every user can read, removed when the test ends.
// It needs root; otherwise it skips the test (fails it under CI=true).
func TestBinaryCommand(t testing.TB, cred *syscall.Credential, run string, env ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		toolSkip(t, "testenv: running a process as another user needs root")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "mayfly-testbin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	// A hard link needs no open file descriptor. A copy does, and a process
	// forked meanwhile by a parallel test inherits it until it execs, which
	// makes exec of the copy fail with "text file busy"; give it a moment.
	if err := os.Link(self, bin); err != nil {
		if err := spireCopyFile(self, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run="+run, "-test.count=1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "HOME="+dir, "GOCOVERDIR="), env...)
	cmd.SysProcAttr = toolSysProcAttr()
	cmd.SysProcAttr.Credential = cred
	return cmd
}

func spireCopyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
