package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mayflyhq/mayfly/broker/access"
	"github.com/mayflyhq/mayfly/broker/audit"
	"github.com/mayflyhq/mayfly/broker/lease"
	"github.com/mayflyhq/mayfly/broker/metrics"
)

// auditBacklogMax bounds the events kept in memory while the trail is
// down. Only events of things that happen whatever the trail's state are
// kept (revocations, refusals, background ends); actions that must be
// audited are refused instead, so the backlog grows with revocations and
// refused calls, not with issuance.
const auditBacklogMax = 1 << 20

// auditor is the broker's side of the audit trail: Must for what must be
// on record before it happens, Record for what happens regardless. A nil
// *auditor records nothing.
type auditor struct {
	log     *audit.Log
	logger  *slog.Logger
	metrics *metrics.Metrics
	newID   func(time.Time) string
	now     func() time.Time

	// downSince (unix ns, 0 while up) and lastProbe implement fail-fast
	// while the trail is down (see admit).
	downSince, lastProbe atomic.Int64

	mu      sync.Mutex
	backlog []audit.Event // oldest first; each has its ID and Time set
	dropped int
	wake    chan struct{}
}

func newAuditor(l *audit.Log, logger *slog.Logger, m *metrics.Metrics, now func() time.Time) *auditor {
	if l == nil {
		return nil
	}
	return &auditor{log: l, logger: logger.With("component", "audit"), metrics: m, newID: lease.NewID, now: now,
		wake: make(chan struct{}, 1)}
}

// prepare gives e its id and time, so that an event retried after an
// outcome-unknown failure keeps them (a duplicate is recognisable).
func (a *auditor) prepare(e audit.Event) audit.Event {
	if e.Time.IsZero() {
		e.Time = a.now()
	}
	if e.ID == "" {
		e.ID = a.newID(e.Time)
	}
	return e
}

// appendOne appends e, redacting free text that the log refuses as
// secret-looking (a requester's reason, say) rather than losing the event.
// It reports whether the event is in the chain: a required sink that
// was down gets it before anything later, so it is not lost.
func (a *auditor) appendOne(ctx context.Context, e audit.Event) (inChain bool, err error) {
	if !a.admit() {
		a.metrics.Audit(false)
		return false, errTrailDown
	}
	ctx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()
	ev, err := a.log.Append(ctx, e)
	if errors.Is(err, audit.ErrSecret) {
		e.Fields = maps.Clone(e.Fields)
		for k, v := range e.Fields {
			if _, ok := audit.LooksLikeSecret(v); ok {
				e.Fields[k] = "[redacted: looked like a secret]"
			}
		}
		ev, err = a.log.Append(ctx, e)
	}
	a.metrics.Audit(err == nil)
	a.result(err == nil)
	return err == nil || (errors.Is(err, audit.ErrSinkDown) && ev.Seq != 0), err
}

// errTrailDown refuses at once while the trail is known to be down.
var errTrailDown = errors.New("audit trail unavailable (the last appends failed; retrying)")

// probeEvery is how often, while the trail is down, one caller tries it;
// the others are refused at once instead of each waiting for a timeout.
// appendTimeout bounds one append.
const (
	probeEvery    = 500 * time.Millisecond
	appendTimeout = 3 * time.Second
)

// admit says whether a caller may try the trail now: always while it is
// up; while it is down, one caller per probeEvery.
func (a *auditor) admit() bool {
	if a.downSince.Load() == 0 {
		return true
	}
	now := time.Now().UnixNano()
	last := a.lastProbe.Load()
	return now-last >= int64(probeEvery) && a.lastProbe.CompareAndSwap(last, now)
}

// result records whether an append reached the trail.
func (a *auditor) result(ok bool) {
	switch {
	case ok:
		if a.downSince.Swap(0) != 0 {
			a.logger.Info("audit trail back")
		}
	case a.downSince.Load() == 0:
		now := time.Now().UnixNano()
		a.lastProbe.Store(now)
		if a.downSince.CompareAndSwap(0, now) {
			a.logger.Error("audit trail down: actions that must be audited are refused until it is back")
		}
	}
}

// Must records e before the action it describes: the backlog first (the
// trail keeps its order), then e. An error means the action must not
// happen.
func (a *auditor) Must(ctx context.Context, e audit.Event) error {
	if a == nil {
		return nil
	}
	if err := a.drain(ctx); err != nil {
		return err
	}
	_, err := a.appendOne(ctx, a.prepare(e))
	return err
}

// Ready reports whether the trail takes events (the backlog drained, no
// required sink behind): the access service asks before every action.
func (a *auditor) Ready(ctx context.Context) error {
	if a == nil {
		return nil
	}
	if a.downSince.Load() != 0 {
		// Known down: refuse at once, but let one caller in a while probe
		// the trail (a checkpoint is the one event that says nothing new).
		if !a.admit() {
			return errTrailDown
		}
		pctx, cancel := context.WithTimeout(ctx, appendTimeout)
		_, err := a.log.Checkpoint(pctx)
		cancel()
		a.result(err == nil)
		if err != nil {
			return err
		}
	}
	if err := a.drain(ctx); err != nil {
		return err
	}
	behind := func() *audit.SinkStats {
		for _, s := range a.log.Stats().Sinks {
			if s.Mode == audit.Required && s.Owed > 0 {
				return &s
			}
		}
		return nil
	}
	if behind() == nil {
		return nil
	}
	_ = a.log.Flush(ctx)
	if s := behind(); s != nil {
		return fmt.Errorf("audit sink %s is down (%d events owed): %v", s.Name, s.Owed, s.LastError)
	}
	return nil
}

// Record records e, which happened whatever the trail's state: appended
// now if the trail takes it, otherwise kept in order and retried by Run.
func (a *auditor) Record(e audit.Event) {
	if a == nil {
		return
	}
	e = a.prepare(e)
	a.mu.Lock()
	queued := len(a.backlog) > 0
	a.mu.Unlock()
	if !queued {
		in, err := a.appendOne(context.Background(), e)
		if in {
			return
		}
		if !errors.Is(err, errTrailDown) {
			a.logger.Warn("audit trail unavailable; event kept for retry", "type", e.Type, "error", err)
		}
	}
	a.mu.Lock()
	if len(a.backlog) >= auditBacklogMax {
		a.dropped++
		a.mu.Unlock()
		a.metrics.Audit(false)
		a.logger.Error("audit backlog full; event dropped", "type", e.Type, "lease", e.LeaseID, "dropped", a.dropped)
		return
	}
	a.backlog = append(a.backlog, e)
	n := len(a.backlog)
	a.mu.Unlock()
	a.metrics.AuditBacklog(n)
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// drain appends the backlog in order; it stops at the first event the
// trail does not take.
func (a *auditor) drain(ctx context.Context) error {
	for {
		a.mu.Lock()
		if len(a.backlog) == 0 {
			a.mu.Unlock()
			return nil
		}
		e := a.backlog[0]
		a.mu.Unlock()
		if in, err := a.appendOne(ctx, e); !in {
			return err
		}
		a.mu.Lock()
		if len(a.backlog) > 0 && a.backlog[0].ID == e.ID {
			a.backlog[0] = audit.Event{}
			a.backlog = a.backlog[1:]
		}
		n := len(a.backlog)
		a.mu.Unlock()
		a.metrics.AuditBacklog(n)
	}
}

// Run retries the backlog with backoff and runs the log's own background
// work (timed checkpoints, buffered sinks) until ctx ends.
func (a *auditor) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- a.log.Run(ctx) }()
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			<-done
			return nil
		case <-a.wake:
		case <-time.After(backoff):
		}
		if err := a.drain(ctx); err != nil {
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// Close drains what it can of the backlog and closes the log, writing a
// last checkpoint. The broker calls it once every other task has stopped,
// so the events of the last calls and revocations are in.
func (a *auditor) Close(ctx context.Context) error {
	if a == nil {
		return nil
	}
	if err := a.drain(ctx); err != nil {
		a.mu.Lock()
		n := len(a.backlog)
		a.mu.Unlock()
		a.logger.Error("audit events not recorded at shutdown", "events", n, "error", err)
	}
	return a.log.Close(ctx)
}

// accessEvents records what the access service did.
func (a *auditor) accessEvents(_ context.Context, rec *access.DecisionRecord) {
	for _, e := range access.AuditEvents(rec) {
		a.Record(e)
	}
}
