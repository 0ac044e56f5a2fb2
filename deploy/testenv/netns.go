package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NetNS is a network namespace of its own joined to the test's namespace
// by a veth pair, so that a test can put a server behind a link it
// impairs (tc netem: latency, loss) without touching any interface of the
// host. The two ends carry only IPv6 link-local addresses (fe80::1 on the
// test's side, fe80::2 in the namespace), which by definition never leave
// the pair: nothing is routed anywhere else. Everything is removed when
// the test ends (deleting the namespace deletes the pair).
//
// It needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2. Without them
// StartNetNS skips the test, or fails it when CI=true.
type NetNS struct {
	// Name is the namespace's name (ip netns).
	Name string
	// HostIf and NSIf are the veth ends: in the test's namespace and in
	// the new one.
	HostIf, NSIf string

	mu    sync.Mutex
	procs []*exec.Cmd
}

// ErrNoNetem says the kernel has no netem queueing discipline (sch_netem):
// latency and loss cannot be set with tc on this machine.
var ErrNoNetem = errors.New("testenv: the kernel has no tc netem (sch_netem is not built in or loaded)")

// StartNetNS creates a namespace and a veth pair, brings both ends up with
// their link-local addresses, and removes them when the test ends. It
// skips the test when network namespaces cannot be made here (fails it
// when CI=true).
func StartNetNS(t testing.TB) *NetNS {
	t.Helper()
	if err := netnsAvailable(); err != nil {
		msg := "testenv: network namespaces are not available: " + err.Error() + " (needs root and iproute2: apt-get install iproute2)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a test that needs them may not be skipped)")
		}
		t.Skip(msg)
	}
	id := strconv.Itoa(10000 + rand.IntN(89999))
	n := &NetNS{Name: "mayfly-" + id, HostIf: "mfh" + id, NSIf: "mfn" + id}
	t.Cleanup(n.close)
	steps := [][]string{
		{"netns", "add", n.Name},
		{"link", "add", n.HostIf, "type", "veth", "peer", "name", n.NSIf},
		{"link", "set", n.NSIf, "netns", n.Name},
		{"-6", "addr", "add", "fe80::1/64", "dev", n.HostIf, "nodad"},
		{"link", "set", n.HostIf, "up"},
		{"netns", "exec", n.Name, "ip", "-6", "addr", "add", "fe80::2/64", "dev", n.NSIf, "nodad"},
		{"netns", "exec", n.Name, "ip", "link", "set", n.NSIf, "up"},
		{"netns", "exec", n.Name, "ip", "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("testenv: ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return n
}

func netnsAvailable() error {
	if _, err := exec.LookPath("ip"); err != nil {
		return err
	}
	if _, err := exec.LookPath("tc"); err != nil {
		return err
	}
	probe := "mayfly-probe-" + strconv.Itoa(rand.IntN(1000000))
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
	return nil
}

// Addr is "[fe80::2%HostIf]:port": a server listening on port inside the
// namespace, as the test's side dials it across the link.
func (n *NetNS) Addr(port int) string {
	return net.JoinHostPort("fe80::2%"+n.HostIf, strconv.Itoa(port))
}

// Netem sets (or replaces) a netem discipline on both ends of the link, so
// that each direction gets args (e.g. "delay", "250ms", "loss", "5%").
// It returns ErrNoNetem when the kernel has none.
func (n *NetNS) Netem(args ...string) error {
	for _, c := range [][]string{
		append([]string{"qdisc", "replace", "dev", n.HostIf, "root", "netem"}, args...),
		append([]string{"-n", n.Name, "qdisc", "replace", "dev", n.NSIf, "root", "netem"}, args...),
	} {
		if out, err := exec.Command("tc", c...).CombinedOutput(); err != nil {
			if strings.Contains(string(out), "qdisc kind is unknown") {
				return ErrNoNetem
			}
			return fmt.Errorf("testenv: tc %s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// ClearNetem removes the disciplines Netem set.
func (n *NetNS) ClearNetem() {
	_ = exec.Command("tc", "qdisc", "del", "dev", n.HostIf, "root").Run()
	_ = exec.Command("tc", "-n", n.Name, "qdisc", "del", "dev", n.NSIf, "root").Run()
}

// Start runs a program inside the namespace (ip netns exec), with its
// output appended to logPath, and kills it when the test ends (or when
// the test binary dies).
func (n *NetNS) Start(t testing.TB, logPath, name string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = redisSysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.procs = append(n.procs, cmd)
	n.mu.Unlock()
	return cmd
}

// StartRedis starts a redis-server inside the namespace, listening on
// port on every address of the namespace (its loopback and its end of
// the link), without persistence, and waits until it answers PING across
// the link. It skips the test if Redis is not installed (fails when
// CI=true).
func (n *NetNS) StartRedis(t testing.TB, port int) string {
	t.Helper()
	RequireRedis(t)
	dir := t.TempDir()
	n.Start(t, dir+"/redis.log", "redis-server",
		"--port", strconv.Itoa(port), "--bind", "::", "0.0.0.0", "--protected-mode", "no",
		"--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no")
	addr := n.Addr(port)
	deadline := time.Now().Add(redisStartTimeout)
	for {
		if reply, err := RedisDo(addr, "PING"); err == nil && reply == "PONG" {
			return addr
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(dir + "/redis.log")
			t.Fatalf("testenv: redis-server in namespace %s did not answer PING at %s: %s", n.Name, addr, strings.TrimSpace(string(b)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *NetNS) close() {
	n.mu.Lock()
	procs := n.procs
	n.mu.Unlock()
	for _, p := range procs {
		_ = p.Process.Signal(syscall.SIGKILL)
		_, _ = p.Process.Wait()
	}
	_ = exec.Command("ip", "link", "del", n.HostIf).Run()
	_ = exec.Command("ip", "netns", "del", n.Name).Run()
}
