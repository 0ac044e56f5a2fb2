package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Head is the end of a chain: the last event's Seq and Hash, and where the
// last checkpoint is. The zero Head is an empty chain.
type Head struct {
	// Seq is the last event's seq (0 when empty).
	Seq uint64
	// Hash is the last event's hash ("" when empty).
	Hash string
	// CheckpointSeq is the Seq of the last audit.checkpoint event (0 when
	// none is known).
	CheckpointSeq uint64
	// CheckpointTime is that checkpoint's Time.
	CheckpointTime time.Time
}

// prevHash is the Prev the next event carries.
func (h Head) prevHash() string {
	if h.Seq == 0 {
		return GenesisHash
	}
	return h.Hash
}

// after returns the head once e is stored on top of h.
func (h Head) after(e *Event) Head {
	n := Head{Seq: e.Seq, Hash: e.Hash, CheckpointSeq: h.CheckpointSeq, CheckpointTime: h.CheckpointTime}
	if e.Type == TypeCheckpoint {
		n.CheckpointSeq, n.CheckpointTime = e.Seq, e.Time
	}
	return n
}

// Chain orders events: one total order per broker deployment. It is the
// seam between the Log and where the head of the chain lives: in this
// process (NewLog's default, for one broker process) or in Redis
// (RedisStreamSink, shared by replicas).
//
// Error contract: Head and Commit wrap ErrChain when the chain's store
// cannot be reached; then nothing was recorded, except where the error
// says the outcome is unknown (a timeout after the store may have acted).
// An error from seal is returned as is, and nothing is recorded.
type Chain interface {
	// Head returns the current head.
	Head(ctx context.Context) (Head, error)
	// Commit records one event atomically on top of the current head:
	// it calls seal with the head it believes current, and stores the
	// sealed event only if the head has not moved; otherwise it calls seal
	// again with the new head (a few times, then gives up with ErrChain).
	// It returns the stored event and the head after it.
	Commit(ctx context.Context, seal func(Head) (Event, error)) (Event, Head, error)
}

// localChain is the in-process Chain of a single broker process: the head
// lives in memory; the sinks hold the events.
type localChain struct {
	mu   sync.Mutex
	head Head
}

// Head implements Chain.
func (c *localChain) Head(context.Context) (Head, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head, nil
}

// Commit implements Chain: seal runs once, under the lock.
func (c *localChain) Commit(_ context.Context, seal func(Head) (Event, error)) (Event, Head, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, err := seal(c.head)
	if err != nil {
		return Event{}, Head{}, err
	}
	c.head = c.head.after(&e)
	return e, c.head, nil
}

// lastReader is implemented by readers that can find the last stored
// event without reading the whole log (JSONLFile).
type lastReader interface {
	last(ctx context.Context) (Event, bool, error)
}

// resumeHead finds the head of the chain stored by r, for an in-process
// chain that restarts. The last event must match its own hash: a log whose
// end was damaged is not continued silently.
func resumeHead(ctx context.Context, r Reader) (Head, error) {
	var (
		last  Event
		found bool
	)
	if lr, ok := r.(lastReader); ok {
		e, ok, err := lr.last(ctx)
		if err != nil {
			return Head{}, err
		}
		last, found = e, ok
	} else {
		for rec, err := range r.Records(ctx, 0) {
			if err != nil {
				if errors.Is(err, ErrMalformed) {
					continue
				}
				return Head{}, err
			}
			last, found = rec.Event, true
		}
	}
	if !found {
		return Head{}, nil
	}
	h, err := ComputeHash(&last)
	if err != nil || h != last.Hash {
		return Head{}, fmt.Errorf("audit: resume: the last stored event (seq %d) does not match its hash; verify the log before continuing it", last.Seq)
	}
	head := Head{Seq: last.Seq, Hash: last.Hash}
	if last.Type == TypeCheckpoint {
		head.CheckpointSeq, head.CheckpointTime = last.Seq, last.Time
	}
	return head, nil
}
