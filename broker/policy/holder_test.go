package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type reloadEvent struct {
	p   *Policy
	err error
}

// syncBuffer is a log sink safe for the Run goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the JSON log records written so far.
func (b *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

type holderFixture struct {
	h      *Holder
	path   string
	events chan reloadEvent
	logs   *syncBuffer
}

// policyV returns a valid policy whose ttl is ttl, so versions differ.
func policyV(ttl string) []byte {
	return with(map[int]string{11: "    ttl: " + ttl})
}

func newFixture(t *testing.T, path string) *holderFixture {
	t.Helper()
	f := &holderFixture{path: path, events: make(chan reloadEvent, 100), logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(f.logs, nil))
	h, err := NewHolder(path, testOpts(), logger, func(p *Policy, err error) {
		f.events <- reloadEvent{p, err}
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

// run starts Run and waits until it listens for SIGHUP.
func (f *holderFixture) run(t *testing.T, poll time.Duration) {
	t.Helper()
	f.h.PollInterval = poll
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case <-f.h.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not start")
	}
}

// waitFor returns the first reload event that satisfies ok.
func (f *holderFixture) waitFor(t *testing.T, what string, ok func(reloadEvent) bool) reloadEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-f.events:
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func loaded(data []byte) func(reloadEvent) bool {
	want := digest(data)
	return func(ev reloadEvent) bool { return ev.err == nil && ev.p.Digest == want }
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes data beside path and renames it over path, as
// editors and config tools do.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestNewHolderFailsOnBadFirstLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5"))
	called := false
	h, err := NewHolder(path, testOpts(), nil, func(*Policy, error) { called = true })
	want := "policy: " + path + `:11: entitlements.e1.ttl: invalid duration "5" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`
	if h != nil || err == nil || err.Error() != want {
		t.Errorf("NewHolder = %v, %v; want error %s", h, err, want)
	}
	if called {
		t.Error("onReload called for the first load")
	}
	if _, err := NewHolder(filepath.Join(t.TempDir(), "missing.yaml"), testOpts(), nil, nil); err == nil {
		t.Error("NewHolder succeeded on a missing file")
	}
}

func TestHolderCurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	if got := f.h.Current(); got == nil || got.Digest != digest(policyV("5m")) || got.Entitlement("e1").TTL != 5*time.Minute {
		t.Fatalf("Current = %+v", got)
	}
	recs := f.logs.records(t)
	if len(recs) != 1 || recs[0]["msg"] != "policy loaded" || recs[0]["component"] != "policy" ||
		recs[0]["path"] != path || recs[0]["digest"] != digest(policyV("5m")) || recs[0]["entitlements"] != 1.0 {
		t.Errorf("logs %v", recs)
	}
}

func TestHolderReloadsOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	f.run(t, 10*time.Millisecond)

	writeFile(t, path, policyV("6m"))
	ev := f.waitFor(t, "reload after write", loaded(policyV("6m")))
	if f.h.Current() != ev.p || ev.p.Entitlement("e1").TTL != 6*time.Minute {
		t.Errorf("Current %+v, event %+v", f.h.Current(), ev.p)
	}
}

func TestHolderReloadsOnRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	f.run(t, 10*time.Millisecond)

	replaceFile(t, path, policyV("7m"))
	f.waitFor(t, "reload after rename", loaded(policyV("7m")))
	// A rename-replace is atomic, so no failed reload is seen on the way.
	select {
	case ev := <-f.events:
		t.Errorf("unexpected reload event %+v", ev)
	default:
	}
	replaceFile(t, path, policyV("8m"))
	f.waitFor(t, "second reload after rename", loaded(policyV("8m")))
	if got := f.h.Current().Entitlement("e1").TTL; got != 8*time.Minute {
		t.Errorf("ttl %v", got)
	}
}

// Kubernetes mounts a ConfigMap as a symlink into a directory that is
// itself swapped by renaming a symlink.
func TestHolderReloadsOnConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		if err := os.Mkdir(filepath.Join(dir, v), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "v1", "policy.yaml"), policyV("5m"))
	writeFile(t, filepath.Join(dir, "v2", "policy.yaml"), policyV("9m"))
	if err := os.Symlink("v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink("..data/policy.yaml", path); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, path)
	f.run(t, 10*time.Millisecond)

	if err := os.Symlink("v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "reload after symlink swap", loaded(policyV("9m")))
}

func TestHolderFailedReloadKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	good := f.h.Current()
	f.run(t, 10*time.Millisecond)

	replaceFile(t, path, policyV("5"))
	ev := f.waitFor(t, "failed reload", func(ev reloadEvent) bool { return ev.err != nil })
	wantErr := "policy: " + path + `:11: entitlements.e1.ttl: invalid duration "5" (want e.g. 90s, 15m, 1h30m, 90d or 1d12h)`
	if ev.err.Error() != wantErr {
		t.Errorf("reload error:\n got %v\nwant %s", ev.err, wantErr)
	}
	if ev.p != good || f.h.Current() != good {
		t.Errorf("policy in force changed after a failed reload")
	}

	// The same bad content is not retried (and not re-reported) every poll.
	time.Sleep(100 * time.Millisecond)
	select {
	case ev := <-f.events:
		t.Errorf("bad content reported again: %+v", ev)
	default:
	}

	// Reload asked for explicitly reports the error again.
	if err := f.h.Reload(); err == nil || err.Error() != wantErr {
		t.Errorf("Reload = %v, want %s", err, wantErr)
	}
	f.waitFor(t, "failed reload event", func(ev reloadEvent) bool { return ev.err != nil && ev.p == good })

	var failures []map[string]any
	for _, r := range f.logs.records(t) {
		if r["level"] == "ERROR" {
			failures = append(failures, r)
		}
	}
	if len(failures) != 2 {
		t.Fatalf("got %d error logs, want 2: %v", len(failures), failures)
	}
	for _, r := range failures {
		if r["msg"] != "policy reload failed; keeping the last good policy" || r["component"] != "policy" ||
			r["path"] != path || r["digest"] != good.Digest || r["error"] != wantErr {
			t.Errorf("error log %v", r)
		}
	}

	// A fixed file is picked up.
	replaceFile(t, path, policyV("6m"))
	f.waitFor(t, "reload of the fixed file", loaded(policyV("6m")))
}

func TestHolderFileRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	good := f.h.Current()
	f.run(t, 10*time.Millisecond)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	ev := f.waitFor(t, "missing file reported", func(ev reloadEvent) bool { return ev.err != nil })
	if !errors.Is(ev.err, os.ErrNotExist) || ev.p != good || f.h.Current() != good {
		t.Errorf("event %+v", ev)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case ev := <-f.events:
		t.Errorf("missing file reported twice: %+v", ev)
	default:
	}
	// The same content coming back is loaded again (it may be a new version
	// of the same file as far as anyone knows).
	replaceFile(t, path, policyV("5m"))
	f.waitFor(t, "reload after the file came back", loaded(policyV("5m")))
}

func TestHolderReloadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	good := f.h.Current()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	err := f.h.Reload()
	if want := "policy: open " + path + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("Reload = %v, want %s", err, want)
	}
	if ev := <-f.events; ev.err != err || ev.p != good || f.h.Current() != good {
		t.Errorf("event %+v", ev)
	}
}

func TestHolderReloadsOnSIGHUP(t *testing.T) {
	// Belt and braces: even if Run's handler were gone, a SIGHUP caught
	// here cannot kill the test binary.
	guard := make(chan os.Signal, 4)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)

	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	f.run(t, time.Hour) // no polling: only the signal can cause a reload

	replaceFile(t, path, policyV("11m"))
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "reload on SIGHUP", loaded(policyV("11m")))

	// SIGHUP reloads even unchanged content (an operator asked).
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "second reload on SIGHUP", loaded(policyV("11m")))
}

func TestHolderRunStopsOnCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, policyV("5m"))
	f := newFixture(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.h.Run(ctx); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
