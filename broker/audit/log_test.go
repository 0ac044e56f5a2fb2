package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendChainsEvents(t *testing.T) {
	fl := newFileLog(t, nil)
	evs := appendN(t, fl.Log, 5)
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
		wantPrev := GenesisHash
		if i > 0 {
			wantPrev = evs[i-1].Hash
		}
		if e.Prev != wantPrev {
			t.Fatalf("seq %d: prev %s, want %s", e.Seq, e.Prev, wantPrev)
		}
		if h, _ := ComputeHash(&e); h != e.Hash {
			t.Fatalf("seq %d: hash does not verify", e.Seq)
		}
		if e.ID != fmt.Sprintf("ev-%04d", i+1) || !e.Time.Equal(fl.clock.Now()) || e.Time.Location() != time.UTC {
			t.Fatalf("seq %d: id %q time %v", e.Seq, e.ID, e.Time)
		}
	}
	if lines := readLines(t, fl.path); len(lines) != 5 {
		t.Fatalf("%d lines, want 5", len(lines))
	}
	st, err := os.Stat(fl.path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", st.Mode().Perm())
	}
	rep := mustVerify(t, fl.file, fl.PublicKey())
	if !rep.OK() || rep.First != 1 || rep.Last != 5 || rep.LastHash != evs[4].Hash || rep.Unsealed != 5 {
		t.Fatalf("report %+v", rep)
	}
	// The caller's copy is its own.
	evs[0].Fields["i"] = "changed"
	if rep := mustVerify(t, fl.file, fl.PublicKey()); !rep.OK() {
		t.Fatalf("changing a returned event changed the log: %s", rep)
	}
}

func TestResumeAfterRestart(t *testing.T) {
	ctx := context.Background()
	fl := newFileLog(t, nil)
	appendN(t, fl.Log, 3)
	if err := fl.Close(ctx); err != nil { // seals: checkpoint at seq 4
		t.Fatal(err)
	}
	fl2 := openFileLog(t, fl.path, fl.key, fl.clock, nil)
	if h := fl2.Stats().Head; h.Seq != 4 || h.CheckpointSeq != 4 {
		t.Fatalf("resumed head %+v, want seq 4 sealed", h)
	}
	evs := appendN(t, fl2.Log, 2)
	if evs[0].Seq != 5 {
		t.Fatalf("first event after restart has seq %d, want 5", evs[0].Seq)
	}
	fl2.Close(ctx)
	rep := mustVerify(t, JSONLFile{Path: fl.path}, fl.key.Public())
	if !rep.OK() || rep.Last != 7 || rep.Checkpoints != 2 || rep.Unsealed != 0 {
		t.Fatalf("report %s (%+v)", rep, rep)
	}
}

func TestResumeRefusesDamagedTail(t *testing.T) {
	fl := newFileLog(t, func(c *Config) { c.CheckpointEvery = -1 })
	appendN(t, fl.Log, 3)
	fl.Close(context.Background()) // seals: the checkpoint is seq 4
	lines := readLines(t, fl.path)
	lines[3] = strings.Replace(lines[3], "mayflyd", "mallory", 1)
	writeLines(t, fl.path, lines)
	fs, err := NewFileSink(FileConfig{Path: fl.path, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	_, err = NewLog(context.Background(), Config{Sinks: []SinkConfig{{Sink: fs}}, Signer: fl.key, Logger: quietLogger(t)})
	want := "audit: resume: the last stored event (seq 4) does not match its hash; verify the log before continuing it"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestFileSinkCutsPartialLine(t *testing.T) {
	ctx := context.Background()
	fl := newFileLog(t, func(c *Config) { c.CheckpointEvery = -1 })
	appendN(t, fl.Log, 2)
	fl.Close(context.Background())
	f, _ := os.OpenFile(fl.path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":4,"id":"ev-0004","ti`) // a write cut by a crash
	f.Close()
	fl2 := openFileLog(t, fl.path, fl.key, fl.clock, func(c *Config) { c.CheckpointEvery = -1 })
	if e := appendN(t, fl2.Log, 1)[0]; e.Seq != 4 {
		t.Fatalf("seq %d after repair, want 4", e.Seq)
	}
	fl2.Close(ctx)
	if rep := mustVerify(t, JSONLFile{Path: fl.path}, fl.key.Public()); !rep.OK() || rep.Last != 5 {
		t.Fatalf("report %s", rep)
	}

	// A whole event missing only its newline is kept.
	lines := readLines(t, fl.path)
	os.WriteFile(fl.path, []byte(strings.Join(lines, "\n")), 0o600)
	fs, err := NewFileSink(FileConfig{Path: fl.path, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	fs.Close()
	if got := readLines(t, fl.path); len(got) != len(lines) {
		t.Fatalf("%d lines after repair, want %d", len(got), len(lines))
	}
}

func TestFileSinkModeAndLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "audit.jsonl")
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, nil, 0o644)
	fs, err := NewFileSink(FileConfig{Path: path, Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	if _, err := NewFileSink(FileConfig{Path: path}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second writer: err = %v", err)
	}
	// A new directory is created 0700.
	p2 := filepath.Join(t.TempDir(), "new", "audit.jsonl")
	fs2, err := NewFileSink(FileConfig{Path: p2})
	if err != nil {
		t.Fatal(err)
	}
	fs2.Close()
	if st, _ := os.Stat(filepath.Dir(p2)); st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", st.Mode().Perm())
	}
}

func TestFileSyncPolicies(t *testing.T) {
	for _, pol := range []SyncPolicy{SyncAlways, SyncPeriodic, SyncNever} {
		path := filepath.Join(t.TempDir(), "audit.jsonl")
		fs, err := NewFileSink(FileConfig{Path: path, Sync: pol, SyncInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewLog(context.Background(), Config{Sinks: []SinkConfig{{Sink: fs}}, Signer: newKey(t), Logger: quietLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, l, 10)
		time.Sleep(20 * time.Millisecond)
		if err := l.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if rep := mustVerify(t, JSONLFile{Path: path}, l.PublicKey()); !rep.OK() || rep.Last != 11 {
			t.Fatalf("policy %d: %s", pol, rep)
		}
	}
}

func TestCheckpointEveryN(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Config){
		"ed25519": func(c *Config) { c.CheckpointEvery = 3 },
		"ecdsa":   func(c *Config) { c.CheckpointEvery = 3; c.Signer = ec },
	} {
		t.Run(name, func(t *testing.T) {
			fl := newFileLog(t, mutate)
			appendN(t, fl.Log, 7)
			var cps []uint64
			for rec, err := range fl.file.Records(context.Background(), 0) {
				if err != nil {
					t.Fatal(err)
				}
				if rec.Event.Type == TypeCheckpoint {
					cps = append(cps, rec.Event.Seq)
					if c := rec.Event.Checkpoint; c.Seq != rec.Event.Seq-1 || c.Hash != rec.Event.Prev || rec.Event.Actor != "spiffe://example.org/mayflyd" {
						t.Fatalf("checkpoint %+v on %+v", c, rec.Event)
					}
				}
			}
			// seq 1,2,3, cp 4, 5,6,7, cp 8, 9: one event unsealed.
			if !slices.Equal(cps, []uint64{4, 8}) {
				t.Fatalf("checkpoints at %v, want [4 8]", cps)
			}
			rep := mustVerify(t, fl.file, fl.PublicKey())
			if !rep.OK() || rep.Checkpoints != 2 || rep.LastCheckpoint != 8 || rep.Unsealed != 1 || !rep.SignaturesChecked {
				t.Fatalf("report %s %+v", rep, rep)
			}
			// Without a key the chain still verifies, signatures unchecked.
			if rep := mustVerify(t, fl.file); !rep.OK() || rep.SignaturesChecked {
				t.Fatalf("keyless report %s", rep)
			}
			// Another key: the checkpoints are not trusted.
			rep = mustVerify(t, fl.file, newKey(t).Public())
			if rep.OK() || rep.Problem.Kind != BadCheckpoint || rep.Problem.Seq != 4 {
				t.Fatalf("wrong key: %s", rep)
			}
		})
	}
}

func TestCheckpointByTimeFromRun(t *testing.T) {
	fl := newFileLog(t, func(c *Config) { c.CheckpointEvery = -1; c.CheckpointInterval = 40 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- fl.Run(ctx) }()
	defer func() { cancel(); <-done }()

	appendN(t, fl.Log, 2)
	// The resumed head of an empty file has no checkpoint time, so the
	// first one comes at once; then one per interval of the (fake) clock.
	waitFor(t, func() bool { return fl.Stats().Checkpoints == 1 })
	appendN(t, fl.Log, 1)
	time.Sleep(100 * time.Millisecond)
	if n := fl.Stats().Checkpoints; n != 1 {
		t.Fatalf("%d checkpoints before the interval passed on the clock", n)
	}
	fl.clock.Advance(40 * time.Millisecond)
	waitFor(t, func() bool { return fl.Stats().Checkpoints == 2 })
	fl.clock.Advance(time.Hour)
	time.Sleep(60 * time.Millisecond)
	if n := fl.Stats().Checkpoints; n != 2 {
		t.Fatalf("%d checkpoints: a checkpoint with nothing new to seal", n)
	}
	if rep := mustVerify(t, fl.file, fl.PublicKey()); !rep.OK() || rep.Checkpoints != 2 || rep.Unsealed != 0 {
		t.Fatalf("report %s", rep)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRequiredSinkFailsClosed(t *testing.T) {
	ctx := context.Background()
	req := &memSink{name: "mem-required"}
	fl := newFileLog(t, func(c *Config) {
		c.CheckpointEvery = -1
		c.Sinks = append(c.Sinks, SinkConfig{Sink: req})
	})
	appendN(t, fl.Log, 2)
	req.setFail(errDown)

	e, err := fl.Append(ctx, Event{Type: TypeLeaseIssued, LeaseID: "l-3"})
	want := "audit: required sink unavailable: mem-required did not take seq 3: sink down"
	if !errors.Is(err, ErrSinkDown) || err.Error() != want || e.Seq != 3 {
		t.Fatalf("Append = seq %d, %v; want seq 3, %q", e.Seq, err, want)
	}
	// While the sink owes seq 3, nothing new is recorded anywhere.
	_, err = fl.Append(ctx, Event{Type: TypeLeaseIssued, LeaseID: "l-4"})
	want = "audit: required sink unavailable: mem-required still owes 1 event(s) from seq 3: sink down"
	if !errors.Is(err, ErrSinkDown) || err.Error() != want {
		t.Fatalf("second Append: %v, want %q", err, want)
	}
	if h := fl.Stats().Head; h.Seq != 3 {
		t.Fatalf("head moved to %d while a required sink was down", h.Seq)
	}
	if st := fl.Stats().Sinks[1]; st.Owed != 1 || st.Failures != 2 || !errors.Is(st.LastError, errDown) {
		t.Fatalf("sink stats %+v", st)
	}

	req.setFail(nil)
	if e, err := fl.Append(ctx, Event{Type: TypeLeaseIssued, LeaseID: "l-4"}); err != nil || e.Seq != 4 {
		t.Fatalf("after recovery: seq %d, %v", e.Seq, err)
	}
	if got := req.seqs(); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
		t.Fatalf("sink got %v, want 1..4 in order", got)
	}
	if rep := mustVerify(t, fl.file, fl.PublicKey()); !rep.OK() || rep.Last != 4 {
		t.Fatalf("file: %s", rep)
	}
}

func TestBufferedSinkNeverDrops(t *testing.T) {
	ctx := context.Background()
	buf := &memSink{name: "mem-buffered"}
	fl := newFileLog(t, func(c *Config) {
		c.CheckpointEvery = -1
		c.RetryMin, c.RetryMax = time.Hour, time.Hour // retried only when told
		c.Sinks = append(c.Sinks, SinkConfig{Sink: buf, Mode: Buffered, Buffer: 3})
	})
	appendN(t, fl.Log, 1)
	buf.setFail(errDown)
	appendN(t, fl.Log, 3) // seq 2..4 wait in the buffer
	if st := fl.Stats().Sinks[1]; st.Owed != 3 {
		t.Fatalf("owed %d, want 3", st.Owed)
	}
	_, err := fl.Append(ctx, Event{Type: "x.y"})
	want := "audit: sink buffer full: mem-buffered owes 3 events (buffer 3): sink down"
	if !errors.Is(err, ErrBufferFull) || err.Error() != want {
		t.Fatalf("full buffer: %v, want %q", err, want)
	}
	if h := fl.Stats().Head; h.Seq != 4 {
		t.Fatalf("head %d: an event was recorded although a sink could not take it", h.Seq)
	}
	buf.setFail(nil)
	if err := fl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	appendN(t, fl.Log, 1)
	if got := buf.seqs(); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("buffered sink got %v, want 1..5", got)
	}
}

func TestBufferedSinkRetriedByRun(t *testing.T) {
	buf := &memSink{name: "mem-buffered"}
	fl := newFileLog(t, func(c *Config) {
		c.CheckpointEvery, c.CheckpointInterval = -1, -1
		c.RetryMin, c.RetryMax = time.Millisecond, time.Millisecond
		c.Sinks = append(c.Sinks, SinkConfig{Sink: buf, Mode: Buffered})
	})
	buf.setFail(errDown)
	appendN(t, fl.Log, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- fl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	fl.clock.Advance(time.Second) // past the backoff on the Log's clock
	buf.setFail(nil)
	waitFor(t, func() bool { return len(buf.seqs()) == 3 })
	if st := fl.Stats().Sinks[1]; st.Owed != 0 || st.Failures != 0 || st.Written != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConcurrentAppends(t *testing.T) {
	fl := newFileLog(t, func(c *Config) { c.CheckpointEvery = 50 })
	const workers, each = 8, 100
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := fl.Append(context.Background(), Event{Type: TypeDecision, Subject: fmt.Sprintf("w%d", w),
					Fields: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := fl.Stats()
	if st.Appended != workers*each || st.Checkpoints != workers*each/49 {
		t.Logf("stats %+v", st)
	}
	rep := mustVerify(t, fl.file, fl.PublicKey())
	if !rep.OK() || rep.Last != uint64(workers*each)+st.Checkpoints || uint64(rep.Checkpoints) != st.Checkpoints {
		t.Fatalf("report %s, stats %+v", rep, st)
	}
}

func TestCloseSealsAndRefuses(t *testing.T) {
	ctx := context.Background()
	mem := &memSink{name: "mem"}
	fl := newFileLog(t, func(c *Config) { c.Sinks = append(c.Sinks, SinkConfig{Sink: mem}) })
	appendN(t, fl.Log, 2)
	if err := fl.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := fl.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	lines := readLines(t, fl.path)
	if len(lines) != 3 || !strings.Contains(lines[2], `"type":"audit.checkpoint"`) || !mem.closed {
		t.Fatalf("after Close: %d lines, last %s, sink closed %v", len(lines), lines[len(lines)-1], mem.closed)
	}
	if _, err := fl.Append(ctx, Event{Type: "x.y"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	// Close reports a sink that still owes events.
	bad := &memSink{name: "mem-bad"}
	fl2 := newFileLog(t, func(c *Config) {
		c.Sinks = append(c.Sinks, SinkConfig{Sink: bad, Mode: Buffered})
		c.RetryMin, c.RetryMax = time.Millisecond, time.Millisecond
	})
	bad.setFail(errDown)
	appendN(t, fl2.Log, 1)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := fl2.Close(cctx)
	if err == nil || !strings.Contains(err.Error(), "audit: close: mem-bad did not take 2 event(s) from seq 1: sink down") {
		t.Fatalf("Close: %v", err)
	}
}

func TestNewLogConfigErrors(t *testing.T) {
	ctx := context.Background()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	mem := &memSink{name: "mem"}
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"no signer":    {Config{}, "audit: Config.Signer is required (checkpoints are signed)"},
		"rsa signer":   {Config{Signer: rsaKey}, "audit: checkpoint signer must hold an Ed25519 or ECDSA key, not *rsa.PublicKey"},
		"nil sink":     {Config{Signer: newKey(t), Sinks: []SinkConfig{{}}}, "audit: Config.Sinks[0].Sink is nil"},
		"bad mode":     {Config{Signer: newKey(t), Sinks: []SinkConfig{{Sink: mem, Mode: 7}}}, "audit: Config.Sinks[0].Mode 7 is not Required or Buffered"},
		"twice":        {Config{Signer: newKey(t), Sinks: []SinkConfig{{Sink: mem}, {Sink: mem}}}, "audit: Config.Sinks[1]: mem is listed twice"},
		"secret actor": {Config{Signer: newKey(t), Actor: "password=x"}, "audit: Config.Actor is not a principal id"},
		"retry":        {Config{Signer: newKey(t), RetryMin: time.Minute, RetryMax: time.Second}, "audit: Config.RetryMax 1s is below RetryMin 1m0s"},
	} {
		if _, err := NewLog(ctx, tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}
