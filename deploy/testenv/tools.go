package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tools that are Go programs (Vault) are built from a pinned tools module
// under deploy/tools/ and cached outside the repository, so that a fresh
// clone (CI) reuses the binary. The cache directory is
//
//	${MAYFLY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mayfly-tools}
//
// and a tool lives at <cache>/<name>-<version>/<name>. Several test
// processes (go test ./... runs packages in parallel) may ask at once: a
// lock file serialises the build, the binary is built under a temporary
// name and renamed into place, so nobody ever runs a half-written file.

const (
	// toolVaultModule is the main package of the Vault server.
	toolVaultModule = "github.com/hashicorp/vault"
	// toolVaultModDir is the tools module that pins Vault, relative to
	// the repository root.
	toolVaultModDir = "deploy/tools/vault"
)

var (
	toolMu    sync.Mutex
	toolPaths = map[string]string{} // name -> binary, for this process
)

// toolCacheDir is where built tools are kept between runs.
func toolCacheDir() (string, error) {
	if d := os.Getenv("MAYFLY_TOOLS_CACHE"); d != "" {
		return d, nil
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no MAYFLY_TOOLS_CACHE, XDG_CACHE_HOME or home directory: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "mayfly-tools"), nil
}

// toolRepoRoot finds the repository root: from this source file when the
// build kept its path, else upwards from the working directory.
func toolRepoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if _, err := os.Stat(filepath.Join(root, toolVaultModDir, "go.mod")); err == nil {
			return root, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, toolVaultModDir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no %s/go.mod above the working directory", toolVaultModDir)
		}
		dir = parent
	}
}

// toolModVersion reads the version a tools module pins for module.
func toolModVersion(gomod, module string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "require" {
			fields = fields[1:]
		}
		if len(fields) >= 2 && fields[0] == module && strings.HasPrefix(fields[1], "v") {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s does not require %s", gomod, module)
}

// toolSkip skips the test, or fails it when CI=true (CI must prove that
// the whole suite ran).
func toolSkip(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: a test that needs this service may not be skipped)")
	}
	t.Skip(msg)
}

// toolVault returns the path of the Vault server binary pinned by
// deploy/tools/vault/go.mod, building it once into the tools cache if it
// is not there yet; later runs reuse it. The first build takes 20 minutes
// or more on two cores (47 on a busy one), longer than go test's default
// -timeout of 10m:
// run the first time with -timeout 30m (deploy/scripts/test.sh uses 20m),
// or build it beforehand with
//
//	go build -C deploy/tools/vault -trimpath -o ~/.cache/mayfly-tools/vault-v1.21.0/vault github.com/hashicorp/vault
//
// It skips the test when Go or the tools module is unavailable (fails it
// when CI=true).
func toolVault(t testing.TB) string {
	t.Helper()
	p, err := toolVaultPath(t.Logf)
	if err != nil {
		toolSkip(t, "testenv: Vault binary unavailable: "+err.Error())
	}
	return p
}

// toolVaultPath is toolVault for callers without a testing.TB: it returns
// an error instead of skipping, and reports a build through logf.
func toolVaultPath(logf func(format string, args ...any)) (string, error) {
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolPaths["vault"]; ok {
		return p, nil
	}
	p, err := toolBuild(logf, "vault", toolVaultModule, toolVaultModDir)
	if err != nil {
		return "", err
	}
	toolPaths["vault"] = p
	return p, nil
}

// toolBuild returns <cache>/<name>-<version>/<name>, building pkg from the
// tools module in modDir when the file is missing; logf reports the build.
func toolBuild(logf func(format string, args ...any), name, pkg, modDir string) (string, error) {
	root, err := toolRepoRoot()
	if err != nil {
		return "", err
	}
	moddir := filepath.Join(root, modDir)
	version, err := toolModVersion(filepath.Join(moddir, "go.mod"), pkg)
	if err != nil {
		return "", err
	}
	cache, err := toolCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, name+"-"+version)
	bin := filepath.Join(dir, name)
	if toolExecutable(bin) {
		return bin, nil
	}
	gobin, err := toolGo()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}

	// One builder at a time across processes; the others wait for it and
	// then find the binary.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if toolExecutable(bin) {
		return bin, nil
	}

	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	defer os.Remove(tmp)
	logf("testenv: building %s %s into %s once; this takes a few minutes on a small machine", pkg, version, dir)
	start := time.Now()
	cmd := exec.Command(gobin, "build", "-trimpath", "-o", tmp, pkg)
	cmd.Dir = moddir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly", "CGO_ENABLED=0")
	// If the test binary dies (go test's -timeout), the build dies too
	// rather than run on unseen; the packages it compiled stay in the Go
	// build cache, so the next run carries on from there.
	cmd.SysProcAttr = toolSysProcAttr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s in %s: %v\n%s", pkg, moddir, err, toolTail(out, 4000))
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	logf("testenv: built %s %s in %v", pkg, version, time.Since(start).Round(time.Second))
	return bin, nil
}

func toolExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// toolGo finds the go command: the one that runs this test, else PATH.
func toolGo() (string, error) {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); toolExecutable(p) {
		return p, nil
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("the go command is not on PATH (needed to build the tool once)")
	}
	return p, nil
}

// toolTail is the last n bytes of out, for error messages.
func toolTail(out []byte, n int) string {
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return string(out)
}

// toolSysProcAttr kills a child with SIGKILL if the test binary dies
// before its cleanup ran (Linux parent-death signal; elsewhere t.Cleanup
// alone stops it), so no server outlives the tests.
func toolSysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	// Pdeathsig exists only on Linux and FreeBSD; set it where it does.
	if f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig"); f.IsValid() && f.CanSet() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
	return attr
}

// toolFreePort asks the kernel for a free loopback TCP port.
func toolFreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testenv: no free port: %v", err)
	}
	return port
}

// toolWait polls ok every 50ms until it is true or timeout passes.
func toolWait(timeout time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// toolFileTail returns the last n bytes of a log file, for error messages.
func toolFileTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, 0)
	}
	b := make([]byte, n)
	k, _ := f.Read(b)
	return string(b[:k])
}

// toolLogSince returns what the log file got from offset on (at most 4 KiB).
func toolLogSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return toolFileTail(path, 4096)
	}
	b = b[off:]
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}
