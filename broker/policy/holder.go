package policy

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultPollInterval is how often Run checks the policy file for changes.
const DefaultPollInterval = 2 * time.Second

// Holder keeps the policy in force and swaps in a new one when the file
// changes or the process gets SIGHUP. A reload that fails keeps the last
// good policy: a typo in a policy edit must never open or close access by
// accident. Current is lock-free, so every decision can call it.
type Holder struct {
	// PollInterval is how often Run reads the file to see whether its
	// content changed; DefaultPollInterval if zero. Set it before Run.
	PollInterval time.Duration

	path     string
	opts     Options
	logger   *slog.Logger
	onReload func(p *Policy, err error)
	cur      atomic.Pointer[Policy]

	mu      sync.Mutex // serialises reloads
	seen    string     // digest of the content last tried, good or bad
	readErr bool       // the last poll could not read the file

	ready     chan struct{} // closed once Run listens for SIGHUP (tests wait on it)
	readyOnce sync.Once
}

// NewHolder loads the policy at path and returns a Holder serving it. It
// fails if this first load fails: a broker must not start without policy.
// logger may be nil (slog.Default). onReload, if not nil, is called after
// every reload attempt with the policy now in force and the error, if any:
// on success the new policy and nil, on failure the last good policy and
// why the file was refused. The broker audits a reload from it.
func NewHolder(path string, opts Options, logger *slog.Logger, onReload func(p *Policy, err error)) (*Holder, error) {
	if logger == nil {
		logger = slog.Default()
	}
	h := &Holder{
		path:     path,
		opts:     opts,
		logger:   logger.With("component", "policy"),
		onReload: onReload,
		ready:    make(chan struct{}),
	}
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	p, err := parse(path, data, opts)
	if err != nil {
		return nil, err
	}
	h.seen = p.Digest
	h.cur.Store(p)
	h.logger.Info("policy loaded", "path", path, "digest", p.Digest, "entitlements", len(p.Entitlements))
	return h, nil
}

// Current returns the policy in force. Callers take it once per request
// and decide against that one value, so a reload mid-request cannot mix
// two policies.
func (h *Holder) Current() *Policy {
	return h.cur.Load()
}

// Reload reads and parses the file now. On failure it keeps the last good
// policy, logs why at Error and returns the error; either way it calls
// onReload.
func (h *Holder) Reload() error {
	h.mu.Lock()
	data, err := readFile(h.path)
	if err != nil {
		h.mu.Unlock()
		return h.failed(err)
	}
	h.readErr = false
	return h.reloadLocked(data)
}

// reloadLocked parses data and swaps it in; called with h.mu held, which
// it releases before calling onReload.
func (h *Holder) reloadLocked(data []byte) error {
	h.seen = digest(data)
	p, err := parse(h.path, data, h.opts)
	if err != nil {
		h.mu.Unlock()
		return h.failed(err)
	}
	h.cur.Store(p)
	h.mu.Unlock()
	h.logger.Info("policy reloaded", "path", h.path, "digest", p.Digest, "entitlements", len(p.Entitlements))
	if h.onReload != nil {
		h.onReload(p, nil)
	}
	return nil
}

func (h *Holder) failed(err error) error {
	cur := h.Current()
	h.logger.Error("policy reload failed; keeping the last good policy",
		"path", h.path, "digest", cur.Digest, "error", err.Error())
	if h.onReload != nil {
		h.onReload(cur, err)
	}
	return err
}

// Run reloads the policy on SIGHUP and whenever the file's content
// changes, until ctx ends; then it returns nil. It reads the file by path
// on every poll, so a file replaced by rename (editors, Kubernetes
// ConfigMap symlink swaps) is seen like one written in place; content that
// was already tried is not tried again until it changes or SIGHUP asks.
// Call it once.
func (h *Holder) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	h.readyOnce.Do(func() { close(h.ready) })

	interval := h.PollInterval
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			h.logger.Info("SIGHUP: reloading policy", "path", h.path)
			_ = h.Reload() // logged and reported by Reload
		case <-tick.C:
			h.poll()
		}
	}
}

// poll reloads if the file's content differs from what was last tried.
func (h *Holder) poll() {
	h.mu.Lock()
	data, err := readFile(h.path)
	if err != nil {
		// Report a missing or unreadable file once, not every poll; a
		// rename-replace can briefly show no file at all.
		first := !h.readErr
		h.readErr = true
		h.seen = ""
		h.mu.Unlock()
		if first {
			_ = h.failed(err)
		}
		return
	}
	h.readErr = false
	if digest(data) == h.seen {
		h.mu.Unlock()
		return
	}
	_ = h.reloadLocked(data)
}
