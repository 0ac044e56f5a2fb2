package testenv

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// pgInstallHint is what a skipped test tells the developer to run.
	pgInstallHint = "apt-get install -y postgresql"
	// pgUser is the system user that runs PostgreSQL when the tests run as
	// root (the server refuses to run as root).
	pgUser = "mayflytest"
	// pgStartTimeout bounds how long the server may take to accept
	// connections.
	pgStartTimeout = 30 * time.Second
	// pgStopTimeout is how long Stop waits after an immediate shutdown
	// before SIGKILL.
	pgStopTimeout = 5 * time.Second
)

// PostgresServer is one PostgreSQL server owned by a test: a fresh cluster
// in a temporary directory, listening on a free loopback port, with
// password (scram-sha-256) authentication for TCP and a random superuser
// password. The Unix socket, in a directory only the server's user can
// enter, needs no password. fsync and full_page_writes are off: committed
// data survives Stop (the server process dying) but not a crash of the
// machine.
//
// The cluster is a copy of a template that initdb makes once per
// PostgreSQL major version and user, kept in the tools cache next to the
// Vault binary (<cache>/postgres-VERSION-template-v1): initdb takes
// seconds, a copy a fraction of one.
//
// When the tests run as root, the server runs as the system user
// mayflytest (created with useradd --system if missing), because
// PostgreSQL refuses to run as root.
//
// Its methods are safe for concurrent use.
type PostgresServer struct {
	// Host is 127.0.0.1.
	Host string
	// Port is the TCP port.
	Port int
	// User is the superuser, "postgres".
	User string
	// Password is the superuser's random password.
	Password string
	// Database is the database tests use, "postgres".
	Database string

	t      testing.TB
	binDir string
	dir    string // owned by the server's user: data/, sock/, log
	cred   *syscall.Credential
	// fromTemplate: the cluster is a copy of the cached template.
	fromTemplate bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Postgres starts a PostgreSQL server on a free loopback port and stops it
// when the test ends. It skips the test if Debian's PostgreSQL is not
// installed (fails it when CI=true).
func Postgres(t testing.TB) *PostgresServer {
	t.Helper()
	binDir := RequirePostgres(t)
	p := &PostgresServer{t: t, binDir: binDir, Host: "127.0.0.1", User: "postgres", Database: "postgres",
		Password: rand.Text()}

	dir, err := os.MkdirTemp("", "mayfly-pg-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p.dir = dir
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		// PostgreSQL will not run as root: run it as an unprivileged system
		// user that owns the directory. MkdirTemp's 0700 directory sits in
		// the world-searchable temp directory, so the user can reach it.
		p.cred, err = pgSystemUser()
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		if err := os.Chown(dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if err := p.initdb(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var lastErr error
	for range 5 { // a free port can be taken before the server binds it
		p.Port = toolFreePort(t)
		if lastErr = p.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("testenv: %v", lastErr)
	}
	t.Cleanup(p.Stop)
	if p.fromTemplate {
		if err := p.setPassword(); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return p
}

// RequirePostgres returns the directory of Debian's PostgreSQL binaries
// (/usr/lib/postgresql/VERSION/bin, the newest), skipping the test if there
// is none; under CI=true it fails the test instead.
func RequirePostgres(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if toolExecutable(filepath.Join(d, "postgres")) && toolExecutable(filepath.Join(d, "initdb")) {
			return d
		}
	}
	toolSkip(t, "testenv: PostgreSQL not found under /usr/lib/postgresql/*/bin; install it with: "+pgInstallHint)
	return ""
}

// pgMajor is the version number in /usr/lib/postgresql/VERSION/bin.
func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

var pgUserOnce struct {
	sync.Mutex
	cred *syscall.Credential
}

// pgSystemUser returns the credentials of pgUser, creating the system user
// first if it does not exist.
func pgSystemUser() (*syscall.Credential, error) {
	pgUserOnce.Lock()
	defer pgUserOnce.Unlock()
	if pgUserOnce.cred != nil {
		return pgUserOnce.cred, nil
	}
	u, err := user.Lookup(pgUser)
	if err != nil {
		out, cerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", pgUser).CombinedOutput()
		if cerr != nil {
			// Another test process may have created it meanwhile.
			if u, err = user.Lookup(pgUser); err != nil {
				return nil, fmt.Errorf("create system user %s to run PostgreSQL (root cannot): %v: %s", pgUser, cerr, strings.TrimSpace(string(out)))
			}
		} else if u, err = user.Lookup(pgUser); err != nil {
			return nil, err
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %s has uid %q gid %q", pgUser, u.Uid, u.Gid)
	}
	pgUserOnce.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	return pgUserOnce.cred, nil
}

func (p *PostgresServer) dataDir() string { return filepath.Join(p.dir, "data") }
func (p *PostgresServer) sockDir() string { return filepath.Join(p.dir, "sock") }

// LogPath is the server's log file.
func (p *PostgresServer) LogPath() string { return filepath.Join(p.dir, "postgres.log") }

// command runs a PostgreSQL binary as the server's user.
func (p *PostgresServer) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(p.binDir, name), args...)
	cmd.Dir = p.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + p.dir, "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = toolSysProcAttr()
	cmd.SysProcAttr.Credential = p.cred
	return cmd
}

// mkdir creates a directory owned by the server's user.
func (p *PostgresServer) mkdir(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	if p.cred != nil {
		return os.Chown(path, int(p.cred.Uid), int(p.cred.Gid))
	}
	return nil
}

// initdb creates the cluster: a copy of a template cluster kept in the
// tools cache (see the package doc) when that works, since initdb takes
// seconds and a copy a fraction of one; else initdb itself. Either way the
// socket accepts local connections without a password (its directory is
// private to the server's user) and TCP needs scram-sha-256.
func (p *PostgresServer) initdb() error {
	if err := p.mkdir(p.sockDir()); err != nil {
		return err
	}
	if tmpl, err := pgTemplate(p); err == nil {
		if err := p.mkdir(p.dataDir()); err == nil {
			out, err := exec.Command("cp", "-a", tmpl+"/.", p.dataDir()).CombinedOutput()
			if err == nil {
				p.fromTemplate = true
				return nil
			}
			p.t.Logf("testenv: copying the PostgreSQL template failed, running initdb: %v: %s", err, out)
		}
		_ = os.RemoveAll(p.dataDir())
	} else {
		p.t.Logf("testenv: no PostgreSQL template (%v); running initdb", err)
	}
	pwfile := filepath.Join(p.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if p.cred != nil {
		if err := os.Chown(pwfile, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return err
		}
	}
	return pgInitdb(p.command, p.dataDir(), "--pwfile="+pwfile)
}

// pgInitdb runs initdb for dataDir with the settings every test cluster has.
func pgInitdb(command func(string, ...string) *exec.Cmd, dataDir string, extra ...string) error {
	args := append([]string{
		"--pgdata=" + dataDir,
		"--username=postgres",
		"--auth-host=scram-sha-256",
		"--auth-local=trust",
		"--encoding=UTF8",
		"--no-locale",
		"--no-sync",
	}, extra...)
	if out, err := command("initdb", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, toolTail(out, 4000))
	}
	return nil
}

// pgTemplate returns a template cluster for p's PostgreSQL major version
// and user, creating it in the tools cache once. Its superuser has no
// password until setPassword gives it one.
func pgTemplate(p *PostgresServer) (string, error) {
	cache, err := toolCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, fmt.Sprintf("postgres-%d-template-v1", pgMajor(p.binDir)))
	ready := func() bool {
		fi, err := os.Stat(filepath.Join(dir, "PG_VERSION"))
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		return !ok || p.cred == nil || st.Uid == p.cred.Uid
	}
	if ready() {
		return dir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".postgres-template.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if ready() {
		return dir, nil
	}
	// initdb runs as the server's user, who may not enter the cache
	// directory (root's home): build in the temp directory, then copy.
	tmp, err := os.MkdirTemp("", "mayfly-pg-template-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if p.cred != nil {
		if err := os.Chown(tmp, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return "", err
		}
	}
	if err := pgInitdb(p.command, filepath.Join(tmp, "data")); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	staging := fmt.Sprintf("%s.tmp-%d", dir, os.Getpid())
	_ = os.RemoveAll(staging)
	if out, err := exec.Command("cp", "-a", filepath.Join(tmp, "data"), staging).CombinedOutput(); err != nil {
		_ = os.RemoveAll(staging)
		return "", fmt.Errorf("copy the template: %v: %s", err, out)
	}
	if err := os.Rename(staging, dir); err != nil {
		_ = os.RemoveAll(staging)
		return "", err
	}
	return dir, nil
}

// setPassword gives the superuser of a cluster copied from the template
// its password, over the private socket.
func (p *PostgresServer) setPassword() error {
	cmd := p.command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", p.sockDir(), "-p", strconv.Itoa(p.Port), "-U", p.User, "-d", p.Database)
	cmd.Stdin = strings.NewReader("ALTER ROLE " + p.User + " PASSWORD '" + p.Password + "';\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("set the superuser password: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (p *PostgresServer) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(p.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	off, _ := logf.Seek(0, 2)
	cmd := p.command("postgres",
		"-D", p.dataDir(),
		"-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+p.sockDir(),
		"-c", "max_connections=300",
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "password_encryption=scram-sha-256",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	ready := func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		err := p.command("pg_isready", "-q", "-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", p.User, "-d", p.Database).Run()
		return err == nil
	}
	ok := toolWait(pgStartTimeout, ready)
	select {
	case <-exited:
		return fmt.Errorf("postgres exited at start (port %d):\n%s", p.Port, toolLogSince(p.LogPath(), off))
	default:
	}
	if !ok {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("postgres not ready within %v:\n%s", pgStartTimeout, toolLogSince(p.LogPath(), off))
	}
	p.cmd, p.exited = cmd, exited
	return nil
}

// Addr is host:port.
func (p *PostgresServer) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// DSN is a connection URL for the superuser on the test database.
func (p *PostgresServer) DSN() string { return p.DSNFor(p.User, p.Password) }

// DSNFor is a connection URL for another user (a credential under test)
// on the test database, without TLS (loopback only).
func (p *PostgresServer) DSNFor(user, password string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     p.Addr(),
		Path:     "/" + p.Database,
		RawQuery: "sslmode=disable&connect_timeout=5",
	}
	return u.String()
}

// Psql runs SQL with psql as the superuser over TCP and returns its
// unaligned, tuples-only output; for set-up in tests that do not want a
// driver.
func (p *PostgresServer) Psql(sql string) (string, error) {
	cmd := p.command("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", p.User, "-d", p.Database, "-c", sql)
	cmd.Env = append(cmd.Env, "PGPASSWORD="+p.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// Running reports whether the server process is up.
func (p *PostgresServer) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Stop ends the server at once (pg_ctl stop -m immediate), then SIGKILL if
// it has not exited within five seconds. The data directory stays, so
// Start brings the same cluster back. Stopping a stopped server does
// nothing.
func (p *PostgresServer) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	stop := p.command("pg_ctl", "stop", "-D", p.dataDir(), "-m", "immediate", "-w", "-t", "5")
	_ = stop.Run()
	select {
	case <-p.exited:
	case <-time.After(pgStopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// Start starts a stopped server again on the same port with the same data.
func (p *PostgresServer) Start() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatalf("testenv: restart postgres: %v", err)
	}
}
