package testenv

import (
	"bufio"
	"bytes"
	"errors"
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
)

const (
	// redisStartTimeout bounds how long a server may take to answer PING.
	redisStartTimeout = 10 * time.Second
	// redisStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	redisStopTimeout = 5 * time.Second
	// redisSetupTimeout bounds cluster creation and replication set-up.
	redisSetupTimeout = 30 * time.Second
	// redisInstallHint is what a skipped test tells the developer to run.
	redisInstallHint = "apt-get install redis-server redis-tools"
)

// RedisConfig says how StartRedis starts a server. The zero value is a
// plain server without persistence.
type RedisConfig struct {
	// AppendOnly turns the append-only file on (appendfsync everysec), for
	// tests that restart a server and expect their data back.
	AppendOnly bool
	// ReplicaOf makes the server a replica of this "host:port".
	ReplicaOf string
	// Cluster starts the server with cluster mode on (its own nodes.conf and
	// a cluster bus on a second free port).
	Cluster bool
	// Args are extra redis-server arguments, e.g. "--maxmemory", "64mb".
	Args []string
}

// RedisServer is one redis-server process owned by a test (StartRedis) or
// by a program (NewRedisServer). Its methods are safe for concurrent use.
type RedisServer struct {
	t       testing.TB // nil for a server from NewRedisServer
	dir     string
	ownDir  bool // dir was made by NewRedisServer; Close removes it
	port    int
	busPort int
	args    []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// Redis starts a redis-server without persistence on a free loopback port
// and stops it when the test ends. It skips the test if redis-server is not
// installed (fails it when CI=true).
func Redis(t testing.TB) *RedisServer {
	t.Helper()
	return StartRedis(t, RedisConfig{})
}

// StartRedis starts a redis-server configured by cfg on a free loopback
// port and stops it when the test ends. It skips the test if the Redis
// binaries are not installed (fails it when CI=true).
func StartRedis(t testing.TB, cfg RedisConfig) *RedisServer {
	t.Helper()
	RequireRedis(t)
	s, err := startRedis(t, t.TempDir(), cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// NewRedisServer starts a redis-server configured by cfg on a free loopback
// port in a new temporary directory, for programs without a testing.TB (a
// benchmark command, a TestMain). The caller must Close it. It returns an
// error if the Redis binaries are not installed or the server does not
// come up. On such a server, Start and Restart panic if the server cannot
// be started again (a test's server fails the test instead).
func NewRedisServer(cfg RedisConfig) (*RedisServer, error) {
	if err := redisInstalled(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mayfly-redis-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	s, err := startRedis(nil, dir, cfg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("testenv: %w", err)
	}
	s.ownDir = true
	return s, nil
}

// Close stops the server (as Stop does) and, for a server from
// NewRedisServer, removes its directory. A test's server is closed when
// the test ends; calling Close on it as well is harmless.
func (s *RedisServer) Close() error {
	s.Stop()
	if s.ownDir {
		return os.RemoveAll(s.dir)
	}
	return nil
}

// startRedis starts a server in dir on a free port; t may be nil.
func startRedis(t testing.TB, dir string, cfg RedisConfig) (*RedisServer, error) {
	if cfg.ReplicaOf != "" {
		if _, _, err := net.SplitHostPort(cfg.ReplicaOf); err != nil {
			return nil, fmt.Errorf("ReplicaOf %q: %v", cfg.ReplicaOf, err)
		}
	}
	var lastErr error
	// A free port can be taken by someone else between choosing it and
	// redis-server binding it; try a few.
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &RedisServer{t: t, dir: dir, port: port}
		if cfg.Cluster {
			if s.busPort, err = freePort(); err != nil {
				return nil, err
			}
		}
		s.args = s.buildArgs(cfg)
		err = s.start()
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	return nil, lastErr
}

// RequireRedis skips the test unless redis-server and redis-cli are on
// PATH; under CI=true it fails the test instead, because CI must prove the
// whole suite ran.
func RequireRedis(t testing.TB) {
	t.Helper()
	if err := redisInstalled(); err != nil {
		msg := err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a test that needs Redis may not be skipped)")
			return
		}
		t.Skip(msg)
	}
}

// redisInstalled reports, as an error naming the install command, a Redis
// binary missing from PATH.
func redisInstalled() error {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("testenv: %s not found on PATH; install it with: %s", bin, redisInstallHint)
		}
	}
	return nil
}

func (s *RedisServer) buildArgs(cfg RedisConfig) []string {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--loglevel", "notice",
		// A replica gets its first sync at once, not after the default 5s
		// wait for more replicas.
		"--repl-diskless-sync-delay", "0",
	}
	if cfg.AppendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	}
	if cfg.ReplicaOf != "" {
		host, port, _ := net.SplitHostPort(cfg.ReplicaOf) // checked by startRedis
		args = append(args, "--replicaof", host, port)
	}
	if cfg.Cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
			"--cluster-port", strconv.Itoa(s.busPort))
	}
	return append(args, cfg.Args...)
}

// Addr is the server's "127.0.0.1:port".
func (s *RedisServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's TCP port; it stays the same across Stop and Start.
func (s *RedisServer) Port() int { return s.port }

// Dir is the server's working directory (its logs, nodes.conf, AOF).
func (s *RedisServer) Dir() string { return s.dir }

// Running reports whether the process is up.
func (s *RedisServer) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// Start starts a stopped server again on the same port, in the same
// directory, with the same arguments, and waits until it answers PING.
// It does nothing if the server is running.
func (s *RedisServer) Start() {
	if s.t != nil {
		s.t.Helper()
	}
	if s.Running() {
		return
	}
	if err := s.start(); err != nil {
		if s.t == nil {
			panic(fmt.Sprintf("testenv: restart: %v", err))
		}
		s.t.Fatalf("testenv: restart: %v", err)
	}
}

// Restart stops the server and starts it again.
func (s *RedisServer) Restart() {
	if s.t != nil {
		s.t.Helper()
	}
	s.Stop()
	s.Start()
}

func (s *RedisServer) start() error {
	logPath := filepath.Join(s.dir, "redis.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	before, _ := logf.Seek(0, io.SeekEnd)

	cmd := exec.Command("redis-server", s.args...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = redisSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.Now().Add(redisStartTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, redisLogTail(logPath, before))
		default:
		}
		if reply, err := s.Do("PING"); err == nil && reply == "PONG" {
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("redis-server on port %d did not answer PING within %s: %s", s.port, redisStartTimeout, redisLogTail(logPath, before))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop ends the server: SIGTERM, then SIGKILL if it has not exited within
// five seconds. It does nothing if the server is not running. Tests call it
// to simulate an outage; t.Cleanup calls it at the end.
func (s *RedisServer) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(redisStopTimeout):
		cmd.Process.Kill()
		<-exited
	}
}

// Kill ends the server with SIGKILL at once, like a crash: nothing is
// flushed.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Do sends one command to the server over a new connection and returns the
// reply as text: a simple or bulk string as is, an integer in decimal, an
// array as its elements one per line, a nil reply as "". A Redis error
// reply is returned as an error. It is meant for test set-up (CONFIG SET,
// FLUSHALL, INFO), not for the code under test.
func (s *RedisServer) Do(args ...string) (string, error) {
	return RedisDo(s.Addr(), args...)
}

// RedisDo sends one command to the Redis server at addr; see RedisServer.Do.
func RedisDo(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return "", err
	}
	return redisReadReply(bufio.NewReader(conn))
}

func redisReadReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("testenv: empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("testenv: bad bulk length %q", line)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("testenv: bad array length %q", line)
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := redisReadReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("testenv: unexpected reply %q", line)
}

// Info returns one field of INFO (e.g. "used_memory" from section
// "memory"), or "" if the server does not report it.
func (s *RedisServer) Info(section, field string) (string, error) {
	out, err := s.Do("INFO", section)
	if err != nil {
		return "", err
	}
	return redisInfoField(out, field), nil
}

func redisInfoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// RedisCluster starts a Redis Cluster of three primaries without replicas
// and returns their addresses once CLUSTER INFO says cluster_state:ok on
// every node. The nodes are stopped when the test ends.
func RedisCluster(t testing.TB) []string {
	t.Helper()
	nodes := RedisClusterNodes(t)
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// RedisClusterNodes is RedisCluster returning the servers, so a test can
// stop and start a node.
func RedisClusterNodes(t testing.TB) []*RedisServer {
	t.Helper()
	nodes := make([]*RedisServer, 3)
	addrs := make([]string, 3)
	for i := range nodes {
		nodes[i] = StartRedis(t, RedisConfig{Cluster: true})
		addrs[i] = nodes[i].Addr()
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cmd := exec.Command("redis-cli", args...)
	cmd.SysProcAttr = redisSysProcAttr()
	done := make(chan struct{})
	timer := time.AfterFunc(redisSetupTimeout, func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
		}
	})
	out, err := cmd.CombinedOutput()
	close(done)
	timer.Stop()
	if err != nil {
		t.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	redisWaitFor(t, "cluster_state:ok on every node", func() bool {
		for _, n := range nodes {
			info, err := n.Do("CLUSTER", "INFO")
			if err != nil || redisInfoField(info, "cluster_state") != "ok" || redisInfoField(info, "cluster_known_nodes") != "3" {
				return false
			}
		}
		return true
	})
	return nodes
}

// RedisReplicated starts a primary and one replica of it (--replicaof),
// waits until the replication link is up, and returns their addresses.
func RedisReplicated(t testing.TB) (primary, replica string) {
	t.Helper()
	p, r := RedisPair(t)
	return p.Addr(), r.Addr()
}

// RedisPair is RedisReplicated returning the servers, so a test can stop
// the replica (then WAIT on the primary times out).
func RedisPair(t testing.TB) (primary, replica *RedisServer) {
	t.Helper()
	primary = Redis(t)
	replica = StartRedis(t, RedisConfig{ReplicaOf: primary.Addr()})
	redisWaitFor(t, "the replica's link to its primary", func() bool {
		r, err := replica.Info("replication", "master_link_status")
		if err != nil || r != "up" {
			return false
		}
		s, err := primary.Info("replication", "slave0")
		return err == nil && strings.Contains(s, "state=online")
	})
	return primary, replica
}

// WaitReplicaLink waits until replica reports its link to the primary up,
// e.g. after the replica was restarted.
func WaitReplicaLink(t testing.TB, replica *RedisServer) {
	t.Helper()
	redisWaitFor(t, "the replica's link to its primary", func() bool {
		r, err := replica.Info("replication", "master_link_status")
		return err == nil && r == "up"
	})
}

func redisWaitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(redisSetupTimeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: timed out after %s waiting for %s", redisSetupTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// redisLogTail returns what a server logged since offset, at most 2 KiB.
func redisLogTail(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if offset > 0 && offset <= int64(len(b)) {
		b = b[offset:]
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return strings.TrimSpace(string(b))
}
