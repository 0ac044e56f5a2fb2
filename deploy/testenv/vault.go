package testenv

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

const (
	// vaultStartTimeout bounds how long a dev server may take to report
	// itself initialized, unsealed and active.
	vaultStartTimeout = 30 * time.Second
	// vaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	vaultStopTimeout = 5 * time.Second
)

// VaultServer is one `vault server -dev` process owned by a test (Vault)
// or by a program (NewVaultServer): in memory, unsealed, with a known root
// token, on a free loopback port. The Vault binary is built once from
// deploy/tools/vault (see the package doc) and cached.
//
// Dev mode keeps everything in memory: Stop followed by Start gives a
// fresh, empty Vault on the same address and root token. To take Vault
// away and bring it back with its mounts, leases and tokens intact, use
// Pause and Resume (SIGSTOP/SIGCONT): requests hang until their client
// times out, as with a Vault that stopped answering.
//
// Its methods are safe for concurrent use.
type VaultServer struct {
	// Addr is the server's URL, http://127.0.0.1:PORT.
	Addr string
	// RootToken is the dev root token (random per server).
	RootToken string
	// Client is a vault/api client for Addr authenticated with RootToken.
	// Tests use it to configure engines and policies.
	Client *vaultapi.Client

	t    testing.TB // nil for a server from NewVaultServer
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	paused bool
}

// Vault starts a Vault dev server on a free loopback port and stops it when
// the test ends. It skips the test if the Vault binary cannot be built
// (fails it when CI=true).
func Vault(t testing.TB) *VaultServer {
	t.Helper()
	bin := toolVault(t)
	dir, err := os.MkdirTemp("", "mayfly-vault-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	v, err := startVault(t, bin, dir)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(v.Stop)
	return v
}

// RequireVault skips the test unless the Vault binary is in the tools cache
// or can be built into it (building it the first time, which takes many
// minutes); under CI=true it fails the test instead. For tests that start
// Vault through NewVaultServer, e.g. in a program under test.
func RequireVault(t testing.TB) {
	t.Helper()
	toolVault(t)
}

// NewVaultServer starts a Vault dev server on a free loopback port for
// programs without a testing.TB (a benchmark command, a TestMain). The
// caller must Close it. The first call on a machine builds the Vault
// binary into the tools cache (see toolVault: many minutes), reporting
// that through logf (nil: not reported). On such a server, Start panics
// if the server cannot be started again, and Pause and Resume ignore a
// failed signal (a test's server fails the test instead).
func NewVaultServer(logf func(format string, args ...any)) (*VaultServer, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bin, err := toolVaultPath(logf)
	if err != nil {
		return nil, fmt.Errorf("testenv: Vault binary unavailable: %w", err)
	}
	dir, err := os.MkdirTemp("", "mayfly-vault-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	v, err := startVault(nil, bin, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("testenv: %w", err)
	}
	return v, nil
}

// Close stops the server (as Stop does) and removes its directory. A
// test's server is closed when the test ends; calling Close on it as well
// is harmless.
func (v *VaultServer) Close() error {
	v.Stop()
	return os.RemoveAll(v.dir)
}

// startVault starts a dev server from bin in dir on a free port, with a
// client for it; t may be nil.
func startVault(t testing.TB, bin, dir string) (*VaultServer, error) {
	v := &VaultServer{t: t, bin: bin, dir: dir, RootToken: "root-" + rand.Text()}
	var lastErr error
	// A free port can be taken between choosing it and Vault binding it.
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("no free port: %w", err)
		}
		v.port = port
		v.Addr = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(v.port))
		if lastErr = v.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		return nil, lastErr
	}

	cfg := vaultapi.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		v.Stop()
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.SetToken(v.RootToken)
	c.ClearNamespace()
	v.Client = c
	return v, nil
}

// Port is the server's TCP port.
func (v *VaultServer) Port() int { return v.port }

// Pid is the server process's id, or 0 when it is not running (e.g. to
// read its CPU time from /proc).
func (v *VaultServer) Pid() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil || v.cmd.Process == nil {
		return 0
	}
	return v.cmd.Process.Pid
}

// Dir is the server's temporary directory (its HOME and log file).
func (v *VaultServer) Dir() string { return v.dir }

// LogPath is the file the server logs to.
func (v *VaultServer) LogPath() string { return filepath.Join(v.dir, "vault.log") }

func (v *VaultServer) start() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(v.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	off, _ := logf.Seek(0, 2)
	cmd := exec.Command(v.bin, "server", "-dev",
		"-dev-root-token-id="+v.RootToken,
		"-dev-listen-address="+net.JoinHostPort("127.0.0.1", strconv.Itoa(v.port)),
		"-log-level=warn",
	)
	// A clean environment: no VAULT_* variable of the developer's shell,
	// and a HOME of its own for the token helper file.
	cmd.Env = []string{"HOME=" + v.dir, "PATH=" + os.Getenv("PATH")}
	cmd.Dir = v.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = toolSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start vault: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	healthy := func() bool {
		select {
		case <-exited:
			return true // stop waiting; reported below
		default:
		}
		resp, err := http.Get(v.Addr + "/v1/sys/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	ok := toolWait(vaultStartTimeout, healthy)
	select {
	case <-exited:
		return fmt.Errorf("vault server exited at start:\n%s", toolLogSince(v.LogPath(), off))
	default:
	}
	if !ok {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("vault server not healthy within %v:\n%s", vaultStartTimeout, toolLogSince(v.LogPath(), off))
	}
	v.cmd, v.exited, v.paused = cmd, exited, false
	return nil
}

// Running reports whether the server process is up (paused counts as up).
func (v *VaultServer) Running() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cmd != nil
}

// Stop ends the server: SIGTERM, then SIGKILL after five seconds. A dev
// server loses all its state. Stopping a stopped server does nothing.
func (v *VaultServer) Stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil {
		return
	}
	if v.paused {
		_ = v.cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.exited:
	case <-time.After(vaultStopTimeout):
		_ = v.cmd.Process.Kill()
		<-v.exited
	}
	v.cmd, v.paused = nil, false
}

// Start starts a stopped server again on the same address with the same
// root token. It is a new, empty dev server: mounts, policies, tokens and
// leases from before are gone.
func (v *VaultServer) Start() {
	if v.t == nil {
		if err := v.start(); err != nil {
			panic(fmt.Sprintf("testenv: restart vault: %v", err))
		}
		return
	}
	v.t.Helper()
	if err := v.start(); err != nil {
		v.t.Fatalf("testenv: restart vault: %v", err)
	}
}

// errorf reports a failed signal to the test; a program's server has no
// test to fail.
func (v *VaultServer) errorf(format string, args ...any) {
	if v.t != nil {
		v.t.Errorf(format, args...)
	}
}

// Pause freezes the server with SIGSTOP: it keeps its state, and requests
// to it hang (the kernel still accepts connections) until Resume.
func (v *VaultServer) Pause() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil || v.paused {
		return
	}
	if err := v.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		v.errorf("testenv: pause vault: %v", err)
		return
	}
	// kill(2) returns before every thread has stopped: wait until the
	// kernel reports the process stopped, so a request right after Pause
	// cannot still be answered.
	vaultWaitStopped(v.cmd.Process.Pid)
	v.paused = true
}

// vaultWaitStopped waits (up to 2s) for /proc to show pid stopped (T).
func vaultWaitStopped(pid int) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return // not Linux, or gone
		}
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Resume continues a paused server (SIGCONT).
func (v *VaultServer) Resume() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil || !v.paused {
		return
	}
	if err := v.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		v.errorf("testenv: resume vault: %v", err)
		return
	}
	v.paused = false
}

// Paused reports whether the server is frozen by Pause.
func (v *VaultServer) Paused() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.paused
}
