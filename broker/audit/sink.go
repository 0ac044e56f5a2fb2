package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Sink stores sealed events. The Log calls Write for one sink from one
// goroutine at a time, in ascending Seq order, and calls it again with the
// same event after an error (never skipping it), so a sink must not leave
// a partial record behind when Write fails.
type Sink interface {
	// Name identifies the sink in errors, logs and Stats
	// ("file:/var/log/mayfly/audit.jsonl", "stdout", "redis:mf:{audit}:events").
	Name() string
	// Write stores e. A nil error means e is stored as durably as the
	// sink's policy promises.
	Write(ctx context.Context, e Event) error
	// Close releases the sink; the Log calls it from Close.
	Close() error
}

// SyncPolicy says when a FileSink calls fsync.
type SyncPolicy int

const (
	// SyncAlways: fsync after every event, before Write returns (the
	// default). An event Append accepted survives a power loss.
	SyncAlways SyncPolicy = iota
	// SyncPeriodic: fsync at most every FileConfig.SyncInterval, and at
	// Close. Up to an interval of events can be lost in a power loss (not
	// in a process crash: they are in the page cache).
	SyncPeriodic
	// SyncNever: leave it to the operating system.
	SyncNever
)

// FileConfig configures NewFileSink.
type FileConfig struct {
	// Path is the JSONL file. It is created with mode 0600 (its directory
	// with 0700 if missing); an existing file readable by group or others
	// is tightened to 0600.
	Path string
	// Sync is the fsync policy (default SyncAlways).
	Sync SyncPolicy
	// SyncInterval is the period of SyncPeriodic (default 1s).
	SyncInterval time.Duration
	// Logger is the base logger (default slog.Default()); the sink adds
	// component=audit.
	Logger *slog.Logger
}

// FileSink appends events to a JSONL file, one JSON object per line, in
// the encoding described in the package documentation. One process per
// file: NewFileSink takes an exclusive lock (flock) on it. It is also a
// Reader of the file it writes.
type FileSink struct {
	cfg  FileConfig
	log  *slog.Logger
	mu   sync.Mutex
	f    *os.File
	size int64 // bytes known to be complete lines
	// dirty: written since the last fsync (SyncPeriodic).
	dirty  bool
	timer  *time.Timer
	closed bool
}

// NewFileSink opens (or creates) the file for appending. If the file ends
// in a partial line, left by a crash in the middle of a write that was
// never acknowledged, the partial line is cut off and a warning logged; a
// partial line that is a whole event only missing its newline is kept.
func NewFileSink(cfg FileConfig) (*FileSink, error) {
	if cfg.Path == "" {
		return nil, errors.New("audit: FileConfig.Path is required")
	}
	if cfg.Sync < SyncAlways || cfg.Sync > SyncNever {
		return nil, fmt.Errorf("audit: FileConfig.Sync %d is not a SyncPolicy", cfg.Sync)
	}
	if cfg.SyncInterval < 0 {
		return nil, fmt.Errorf("audit: FileConfig.SyncInterval %s is negative", cfg.SyncInterval)
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &FileSink{cfg: cfg, log: cfg.Logger.With("component", "audit", "sink", "file:"+cfg.Path)}
	if dir := filepath.Dir(cfg.Path); dir != "" {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("audit: %w", err)
			}
		}
	}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %s is in use by another process: %w", cfg.Path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit: %w", err)
		}
		s.log.Warn("audit file was readable by others; mode set to 0600", "was", st.Mode().Perm().String())
	}
	s.f, s.size = f, st.Size()
	if err := s.repairTail(); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// repairTail cuts a partial last line left by a crash.
func (s *FileSink) repairTail() error {
	if s.size == 0 {
		return nil
	}
	var last [1]byte
	if _, err := s.f.ReadAt(last[:], s.size-1); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if last[0] == '\n' {
		return nil
	}
	// Find the start of the partial line.
	start := s.size
	buf := make([]byte, 64<<10)
	for start > 0 {
		n := min(int64(len(buf)), start)
		if _, err := s.f.ReadAt(buf[:n], start-n); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		i := int64(-1)
		for j := n - 1; j >= 0; j-- {
			if buf[j] == '\n' {
				i = j
				break
			}
		}
		if i >= 0 {
			start = start - n + i + 1
			break
		}
		start -= n
	}
	tail := make([]byte, s.size-start)
	if _, err := s.f.ReadAt(tail, start); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if _, problem := decodeEvent(tail); problem == "" {
		if _, err := s.f.Write([]byte{'\n'}); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		s.size++
		s.log.Warn("audit file ended without a newline; added one")
		return s.f.Sync()
	}
	if err := s.f.Truncate(start); err != nil {
		return fmt.Errorf("audit: cut partial last line: %w", err)
	}
	s.log.Warn("audit file ended in a partial line from an interrupted write; cut it off",
		"bytes", s.size-start, "offset", start)
	s.size = start
	return s.f.Sync()
}

// Name implements Sink.
func (s *FileSink) Name() string { return "file:" + s.cfg.Path }

// Write implements Sink: one write(2) of the line and its newline, then
// fsync per the policy. On failure the file is cut back to where it was,
// so a retry never leaves a partial or doubled line.
func (s *FileSink) Write(_ context.Context, e Event) error {
	b, err := encodeEvent(&e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("audit: %s: %w", s.Name(), ErrClosed)
	}
	if _, err := s.f.Write(b); err != nil {
		s.rollback()
		return fmt.Errorf("audit: write %s: %w", s.cfg.Path, err)
	}
	switch s.cfg.Sync {
	case SyncAlways:
		if err := s.f.Sync(); err != nil {
			s.rollback()
			return fmt.Errorf("audit: fsync %s: %w", s.cfg.Path, err)
		}
	case SyncPeriodic:
		s.dirty = true
		if s.timer == nil {
			s.timer = time.AfterFunc(s.cfg.SyncInterval, s.periodicSync)
		}
	}
	s.size += int64(len(b))
	return nil
}

// rollback cuts the file back to the last complete line.
func (s *FileSink) rollback() {
	if err := s.f.Truncate(s.size); err != nil {
		s.log.Error("cannot cut a failed write back; the file may hold a partial line", "error", err)
	}
}

// periodicSync is SyncPeriodic's timer.
func (s *FileSink) periodicSync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if s.closed || !s.dirty {
		return
	}
	if err := s.f.Sync(); err != nil {
		s.log.Error("fsync failed", "error", err)
		return
	}
	s.dirty = false
}

// Close implements Sink: it syncs and closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: close %s: %w", s.cfg.Path, err)
	}
	return nil
}

// Records implements Reader over the file the sink writes.
func (s *FileSink) Records(ctx context.Context, from uint64) iter.Seq2[Record, error] {
	return JSONLFile{Path: s.cfg.Path}.Records(ctx, from)
}

// last implements lastReader, so a Log resumes the chain from the file.
func (s *FileSink) last(ctx context.Context) (Event, bool, error) {
	return JSONLFile{Path: s.cfg.Path}.last(ctx)
}

// StdoutSink writes events as JSONL to standard output (or to W), for
// container log collectors. It cannot be read back.
type StdoutSink struct {
	// W is where lines go; nil means os.Stdout.
	W io.Writer
}

// Name implements Sink.
func (s *StdoutSink) Name() string { return "stdout" }

// Write implements Sink: one Write call per line.
func (s *StdoutSink) Write(_ context.Context, e Event) error {
	b, err := encodeEvent(&e)
	if err != nil {
		return err
	}
	w := s.W
	if w == nil {
		w = os.Stdout
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("audit: write stdout: %w", err)
	}
	return nil
}

// Close implements Sink; it does not close W.
func (s *StdoutSink) Close() error { return nil }
