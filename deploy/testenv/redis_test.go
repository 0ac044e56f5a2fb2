package testenv_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/deploy/testenv"
)

func TestRedis(t *testing.T) {
	srv := testenv.Redis(t)
	if got, err := srv.Do("PING"); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	for _, kv := range [][2]string{{"save", ""}, {"appendonly", "no"}, {"bind", "127.0.0.1"}, {"protected-mode", "no"}} {
		got, err := srv.Do("CONFIG", "GET", kv[0])
		if err != nil || got != kv[0]+"\n"+kv[1] {
			t.Errorf("CONFIG GET %s = %q, %v; want %q", kv[0], got, err, kv[1])
		}
	}
	if _, err := srv.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Do("NOSUCHCOMMAND"); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown command: %v", err)
	}
	if v, err := srv.Info("server", "tcp_port"); err != nil || v != strings.Split(srv.Addr(), ":")[1] {
		t.Errorf("INFO tcp_port = %q, %v; want the port of %s", v, err, srv.Addr())
	}

	srv.Stop()
	if srv.Running() {
		t.Fatal("Running after Stop")
	}
	if c, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("port still accepting after Stop")
	}
	srv.Start()
	if got, err := srv.Do("GET", "k"); err != nil || got != "" {
		t.Fatalf("GET after restart without persistence = %q, %v; want nothing", got, err)
	}
	srv.Restart()
	if !srv.Running() {
		t.Fatal("not running after Restart")
	}
}

func TestRedisAppendOnlyKeepsData(t *testing.T) {
	srv := testenv.StartRedis(t, testenv.RedisConfig{AppendOnly: true})
	if _, err := srv.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	if got, err := srv.Do("GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET after restart with the append-only file = %q, %v; want v", got, err)
	}
}

func TestRedisCluster(t *testing.T) {
	addrs := testenv.RedisCluster(t)
	if len(addrs) != 3 {
		t.Fatalf("%d nodes, want 3", len(addrs))
	}
	for _, a := range addrs {
		info, err := testenv.RedisDo(a, "CLUSTER", "INFO")
		if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384") {
			t.Errorf("CLUSTER INFO on %s = %q, %v", a, info, err)
		}
	}
	if n, err := testenv.RedisDo(addrs[0], "CLUSTER", "COUNTKEYSINSLOT", "0"); err != nil && !strings.Contains(err.Error(), "MOVED") {
		t.Errorf("cluster node answers: %q, %v", n, err)
	}
}

func TestRedisReplicated(t *testing.T) {
	primary, replica := testenv.RedisReplicated(t)
	if _, err := testenv.RedisDo(primary, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	// (WAIT would need the connection that wrote; RedisDo dials anew.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := testenv.RedisDo(replica, "GET", "k")
		if err == nil && got == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET on the replica = %q, %v; want v", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := testenv.RedisDo(replica, "SET", "k", "w"); err == nil || !strings.HasPrefix(err.Error(), "READONLY") {
		t.Fatalf("SET on the replica: %v, want READONLY", err)
	}
}

// recorder is a testing.TB that records Skip and Fatal instead of ending
// the goroutine.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()           {}
func (r *recorder) Skip(args ...any)  { r.skipped = strings.TrimSpace(fmtArgs(args)) }
func (r *recorder) Fatal(args ...any) { r.failed = strings.TrimSpace(fmtArgs(args)) }
func fmtArgs(args []any) (s string) {
	for _, a := range args {
		s += a.(string) + " "
	}
	return s
}

// TestRequireRedis: without the binaries a test is skipped with the
// install command, unless CI=true, where it fails.
func TestRequireRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	testenv.RequireRedis(r)
	if !strings.Contains(r.skipped, "apt-get install redis-server") || r.failed != "" {
		t.Errorf("without CI: skipped %q, failed %q; want a skip naming apt-get install redis-server", r.skipped, r.failed)
	}
	t.Setenv("CI", "true")
	r = &recorder{TB: t}
	testenv.RequireRedis(r)
	if r.skipped != "" || !strings.Contains(r.failed, "apt-get install redis-server") {
		t.Errorf("with CI=true: skipped %q, failed %q; want a failure", r.skipped, r.failed)
	}
}
