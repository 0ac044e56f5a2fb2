package sidecar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// child is a running exec child.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited; cmd.ProcessState is set
}

func (s *Sidecar) startChild(argv []string) (*child, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	// Later entries win: the credentials replace any inherited MAYFLY_*.
	cmd.Env = append(os.Environ(), s.Environ()...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if s.opts.stdout != nil || s.opts.stderr != nil || s.opts.stdin != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s.opts.stdin, s.opts.stdout, s.opts.stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sidecar: exec %s: %w", argv[0], err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	s.log.Info("child started", "pid", cmd.Process.Pid, "command", argv[0])
	return c, nil
}

// stop ends the child: SIGTERM, then SIGKILL after timeout.
func (c *child) stop(timeout time.Duration) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// exitCode is the child's exit status as a shell reports it: its code, or
// 128 plus the number of the signal that killed it.
func (c *child) exitCode() int {
	st := c.cmd.ProcessState
	if st == nil {
		return 1
	}
	if code := st.ExitCode(); code >= 0 {
		return code
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return 1
}

// Exec starts the sidecar (unless Start was called), then runs argv as a
// child process whose environment carries every credential (see
// EntitlementConfig.EnvPrefix). When a credential's value or lease changes,
// the child gets the configured exec.signal, or with
// exec.restart_on_rotation is stopped and started again with the new
// environment; without either it is left alone (it can read the files or
// the socket).
//
// Exec returns the child's exit code when the child exits by itself, or
// when ctx ends, after sending it SIGTERM (SIGKILL after exec.stop_timeout).
// Either way the sidecar is closed before Exec returns: its leases are
// revoked and its files removed. The error reports a failure to start or a
// failure to revoke.
func (s *Sidecar) Exec(ctx context.Context, argv []string) (int, error) {
	if len(argv) == 0 {
		return 1, errors.New("sidecar: exec: no command")
	}
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		if err := s.Start(ctx); err != nil {
			return 1, err
		}
	}
	// The first credentials are in the child's environment already.
	select {
	case <-s.rotated:
	default:
	}
	c, err := s.startChild(argv)
	if err != nil {
		return 1, errors.Join(err, s.Close())
	}
	var sig syscall.Signal
	if s.cfg.Exec.Signal != "" {
		sig, _ = parseSignal(s.cfg.Exec.Signal) // checked by the config
	}
	timeout := s.cfg.Exec.StopTimeout.Std()
	for {
		select {
		case <-c.done:
			code := c.exitCode()
			s.log.Info("child exited; stopping", "exit_code", code)
			return code, s.Close()
		case <-ctx.Done():
			s.log.Info("stopping the child", "pid", c.cmd.Process.Pid)
			c.stop(timeout)
			return c.exitCode(), s.Close()
		case <-s.rotated:
			switch {
			case sig != 0:
				s.log.Info("credentials rotated; signalling the child", "signal", s.cfg.Exec.Signal, "pid", c.cmd.Process.Pid)
				if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
					s.log.Warn("signalling the child failed", "error", err)
				}
			case s.cfg.Exec.RestartOnRotation:
				s.log.Info("credentials rotated; restarting the child", "pid", c.cmd.Process.Pid)
				c.stop(timeout)
				if c, err = s.startChild(argv); err != nil {
					return 1, errors.Join(err, s.Close())
				}
			}
		}
	}
}
