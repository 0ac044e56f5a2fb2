package chaos

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	"github.com/mayflyhq/mayfly/broker/devca"
	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
)

// TrustDomain is the trust domain of the processes ServeEnv starts.
const TrustDomain = "mayfly.test"

// BrokerID is the SPIFFE ID of every broker ServeEnv starts.
var BrokerID = spiffeid.RequireFromString("spiffe://" + TrustDomain + "/mayfly")

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// MayflydBinary builds cmd/mayflyd once per test binary and returns its
// path; CleanupBuild removes it. The environment variable
// MAYFLY_CHAOS_MAYFLYD names a prebuilt binary to use instead (to replay a
// case against another build).
func MayflydBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("MAYFLY_CHAOS_MAYFLYD"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "mayfly-chaos-bin-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "mayflyd")
		cmd := exec.Command("go", "build", "-o", buildBin, "github.com/mayflyhq/mayfly/cmd/mayflyd")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build cmd/mayflyd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// CleanupBuild removes what MayflydBinary built; TestMain calls it.
func CleanupBuild() {
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
}

// ServeOptions configure the `mayflyd serve` processes of a ServeEnv.
type ServeOptions struct {
	// Policy is the policy YAML.
	Policy string
	// RedisAddr is the Redis that holds the leases ("host:port").
	RedisAddr string
	// Prefix is the lease key prefix (default "chaos").
	Prefix string
	// PendingTimeout of leases (default 3s).
	PendingTimeout time.Duration
	// Extra is more top-level YAML for the config file.
	Extra string
}

// ServeEnv runs real `mayflyd serve` processes that share one config: a
// dev CA whose SVIDs they serve and accept, a policy, JWT keys on disk (a
// restarted broker signs with the same key) and a Redis lease store.
type ServeEnv struct {
	// CA is the trust domain's CA; clients get SVIDs from it.
	CA *devca.CA
	// Dir holds the CA, keys, policy, configs and broker logs.
	Dir  string
	opts ServeOptions
	bin  string
	cert string
	key  string
	pol  string
}

// NewServeEnv builds mayflyd (once) and writes everything its processes
// need under a temporary directory.
func NewServeEnv(t testing.TB, opts ServeOptions) *ServeEnv {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = "chaos"
	}
	if opts.PendingTimeout == 0 {
		opts.PendingTimeout = 3 * time.Second
	}
	e := &ServeEnv{Dir: t.TempDir(), opts: opts, bin: MayflydBinary(t)}
	ca, err := devca.Open(filepath.Join(e.Dir, "ca"), spiffeid.RequireTrustDomainFromString(TrustDomain))
	if err != nil {
		t.Fatal(err)
	}
	e.CA = ca
	svid, err := ca.MintX509SVIDWithDNS(BrokerID, 24*time.Hour, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if e.cert, e.key, err = ca.WriteSVID("broker", svid); err != nil {
		t.Fatal(err)
	}
	e.pol = filepath.Join(e.Dir, "policy.yaml")
	if err := os.WriteFile(e.pol, []byte(opts.Policy), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// Process is one `mayflyd serve`.
type Process struct {
	Name string
	// Addr is its gRPC address.
	Addr string
	// Log is its stderr (level error).
	Log string

	cmd    *exec.Cmd
	exited chan struct{}
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start starts a broker named name listening on addr (FreeAddr for a new
// one; the address of a killed one to take its place). It does not wait
// for it to serve: WaitServing does. The process is killed when the test
// ends.
func (e *ServeEnv) Start(t testing.TB, name, addr string) *Process {
	t.Helper()
	cfg := filepath.Join(e.Dir, name+".yaml")
	body := fmt.Sprintf(`listen: %s
trust_domains: [%s]
policy: %s
identity: {cert: %s, key: %s, bundle: %s}
jwt: {issuer_url: "https://127.0.0.1:7444", key_dir: %s}
leases: {store: redis, pending_timeout: %s, redis: {addrs: [%q], prefix: %s}}
log: {level: error}
%s`, addr, TrustDomain, e.pol, e.cert, e.key, e.CA.BundlePath(), filepath.Join(e.Dir, "jwt-keys"),
		e.opts.PendingTimeout, e.opts.RedisAddr, e.opts.Prefix, e.opts.Extra)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(e.Dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(e.bin, "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: name, Addr: addr, Log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.Kill)
	return p
}

// Kill ends the process with SIGKILL, like a crash, and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Alive reports whether the process still runs.
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// LogTail is the end of the process's log, for failure messages.
func (p *Process) LogTail() string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(bytes.TrimSpace(b))
}

// ClientTLS is an mTLS config presenting an X.509-SVID for id that
// authorises the broker by its SPIFFE ID.
func ClientTLS(t testing.TB, ca *devca.CA, id string) *tls.Config {
	t.Helper()
	svid, err := ca.MintX509SVID(spiffeid.RequireFromString(id), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc := tlsconfig.MTLSClientConfig(svid, ca.X509Bundle(), tlsconfig.AuthorizeID(BrokerID))
	tc.MinVersion = tls.VersionTLS13
	return tc
}

// Dial connects to addr as id. The connection redials quickly (every 50 to
// 250 ms) after the broker went away, as a client that wants its broker
// back would, and is closed when the test ends.
func Dial(t testing.TB, ca *devca.CA, addr, id string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(ClientTLS(t, ca, id))),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.5, Jitter: 0.2, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// LeaseStore opens the lease store a ServeEnv's brokers use, on its own
// client, for the test to inspect.
func (e *ServeEnv) LeaseStore(t testing.TB) *leaseredis.Store {
	t.Helper()
	return RedisLeaseStore(t, e.opts.RedisAddr, e.opts.Prefix)
}

// RedisLeaseStore opens a lease store on the Redis at addr with prefix,
// through the store's exported API only.
func RedisLeaseStore(t testing.TB, addr, prefix string) *leaseredis.Store {
	t.Helper()
	rc := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = rc.Close() })
	s, err := leaseredis.New(rc, leaseredis.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// WaitFor polls ok every 20 ms until it is true or timeout passes, and
// returns how long it took and whether it became true.
func WaitFor(timeout time.Duration, ok func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if ok() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
