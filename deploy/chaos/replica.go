package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/brokertest"
	"github.com/mayflyhq/mayfly/broker/issuer"
	leaseredis "github.com/mayflyhq/mayfly/broker/lease/redis"
	"github.com/mayflyhq/mayfly/broker/revoker"
)

// replicaEnv carries a ReplicaConfig to a replica process.
const replicaEnv = "MAYFLY_CHAOS_REPLICA"

// ReplicaConfig configures a broker replica process: a real broker
// (broker.New through brokertest, the same composition as mayflyd) whose
// lease store is the shared Redis and whose extra issuer is a Probe that
// reports every Revoke on stdout. Fault cases start replicas as separate
// processes of the test binary so that they can SIGKILL one.
type ReplicaConfig struct {
	Name      string `json:"name"`
	RedisAddr string `json:"redis_addr"`
	Prefix    string `json:"prefix"`
	// Hold is the revoker's claim hold (the claim deadline).
	Hold time.Duration `json:"hold"`
	// Batch and Concurrency tune the revoker.
	Batch       int `json:"batch"`
	Concurrency int `json:"concurrency"`
	// RevokeMin and RevokeMax bound how long each probe Revoke takes.
	RevokeMin time.Duration `json:"revoke_min"`
	RevokeMax time.Duration `json:"revoke_max"`
}

// IsReplica reports whether this process was started as a replica.
func IsReplica() bool { return os.Getenv(replicaEnv) != "" }

// ServeReplica runs the replica this process was started as, until it is
// killed; TestMain calls it. It prints "ready" once the broker runs.
func ServeReplica() int {
	var cfg ReplicaConfig
	if err := json.Unmarshal([]byte(os.Getenv(replicaEnv)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "replica: bad config:", err)
		return 2
	}
	rc := goredis.NewClient(&goredis.Options{Addr: cfg.RedisAddr, ContextTimeoutEnabled: true})
	store, err := leaseredis.New(rc, leaseredis.Options{Prefix: cfg.Prefix})
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		return 2
	}
	out := &syncWriter{w: bufio.NewWriter(os.Stdout)}
	probe := &Probe{Out: out, Delay: func() time.Duration {
		if cfg.RevokeMax <= cfg.RevokeMin {
			return cfg.RevokeMin
		}
		return cfg.RevokeMin + rand.N(cfg.RevokeMax-cfg.RevokeMin)
	}}
	env, err := brokertest.New(brokertest.Options{
		Store:   store,
		Issuers: []issuer.Issuer{probe},
		Revoker: revoker.Config{Hold: cfg.Hold, Batch: cfg.Batch, Concurrency: cfg.Concurrency},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "replica:", err)
		return 2
	}
	defer env.Close()
	fmt.Fprintln(out, "ready")
	out.Flush()
	sig := make(chan os.Signal, 1)
	// SIGKILL cannot be caught: that is the point. SIGTERM stops cleanly.
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return 0
}

// syncWriter writes whole lines and flushes each, so that what a killed
// replica reported before it died is in the pipe.
type syncWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.w.Write(p)
	if err == nil {
		err = s.w.Flush()
	}
	return n, err
}

func (s *syncWriter) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.w.Flush()
}

// Replica is a replica process seen from the test.
type Replica struct {
	Name string

	cmd    *exec.Cmd
	exited chan struct{}
	ready  chan struct{}

	mu      sync.Mutex
	revokes []RevokeCall
}

// StartReplica starts a replica process and waits until its broker runs.
// It is killed when the test ends.
func StartReplica(t testing.TB, cfg ReplicaConfig) *Replica {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), replicaEnv+"="+string(b))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = childAttr()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &Replica{Name: cfg.Name, cmd: cmd, exited: make(chan struct{}), ready: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if line == "ready" {
				close(r.ready)
				continue
			}
			f := strings.Fields(line)
			if len(f) != 4 || f[0] != "revoke" {
				continue
			}
			fence, _ := strconv.ParseInt(f[2], 10, 64)
			ns, _ := strconv.ParseInt(f[3], 10, 64)
			r.mu.Lock()
			r.revokes = append(r.revokes, RevokeCall{LeaseID: f[1], Fence: fence, At: time.Unix(0, ns), By: r.Name})
			r.mu.Unlock()
		}
		_ = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(r.Kill)
	select {
	case <-r.ready:
	case <-r.exited:
		t.Fatalf("replica %s exited before it was ready", cfg.Name)
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s not ready within 30 s", cfg.Name)
	}
	return r
}

// Kill ends the replica with SIGKILL and waits until it is gone.
func (r *Replica) Kill() {
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
}

// Revokes returns the Revoke calls the replica reported.
func (r *Replica) Revokes() []RevokeCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RevokeCall(nil), r.revokes...)
}
