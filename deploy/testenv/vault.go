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

// VaultServer is one `vault server -dev` process owned by a test: in
// memory, unsealed, with a known root token, on a free loopback port.
// The Vault binary is built once from deploy/tools/vault (see the package
// doc) and cached.
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

	t    testing.TB
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
	v := &VaultServer{t: t, bin: bin, dir: dir, RootToken: "root-" + rand.Text()}
	var lastErr error
	// A free port can be taken between choosing it and Vault binding it.
	for range 5 {
		v.port = toolFreePort(t)
		v.Addr = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(v.port))
		if lastErr = v.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("testenv: %v", lastErr)
	}
	t.Cleanup(v.Stop)

	cfg := vaultapi.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatalf("testenv: vault client: %v", err)
	}
	c.SetToken(v.RootToken)
	c.ClearNamespace()
	v.Client = c
	return v
}

// Port is the server's TCP port.
func (v *VaultServer) Port() int { return v.port }

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
	v.t.Helper()
	if err := v.start(); err != nil {
		v.t.Fatalf("testenv: restart vault: %v", err)
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
		v.t.Errorf("testenv: pause vault: %v", err)
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
		v.t.Errorf("testenv: resume vault: %v", err)
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
