// Package redisbatch sends the Redis commands of concurrent callers
// together: a call waits while earlier ones are on the wire, and every
// call that arrived meanwhile goes in the next pipeline. Under load many
// callers share one round trip (one write and one read on each side
// instead of one per call); alone, a call goes out at once.
//
// A Batcher keeps no goroutine while idle: the call that finds no
// pipeline running starts one, and it runs while calls keep coming.
//
// Ordering and atomicity are Redis's own: each command (a Lua script
// included) runs whole, commands of one pipeline run in order, and those
// of different pipelines interleave as separate calls would. A caller
// whose context ends stops waiting, but its command may still run, as
// with any call whose answer was lost.
package redisbatch

import (
	"context"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Defaults of New.
const (
	// DefaultPipelines is how many pipelines may be on the wire at once.
	DefaultPipelines = 4
	// DefaultMaxBatch is the most commands in one pipeline.
	DefaultMaxBatch = 128
)

// Batcher batches the commands of concurrent callers into pipelines. It
// is safe for concurrent use. The zero value is not usable; call New.
type Batcher struct {
	c         goredis.UniversalClient
	pipelines int
	maxBatch  int

	mu      sync.Mutex
	queue   []*call
	running int // pipelines on the wire, or about to be
}

type call struct {
	ctx  context.Context
	sc   *goredis.Script // a script to run with EVALSHA, or
	args []any           // a plain command
	keys []string
	cmd  *goredis.Cmd
	done chan struct{}
}

// New returns a Batcher on c that keeps at most pipelines pipelines on
// the wire at once (0: DefaultPipelines) of at most maxBatch commands
// each (0: DefaultMaxBatch).
func New(c goredis.UniversalClient, pipelines, maxBatch int) *Batcher {
	if pipelines <= 0 {
		pipelines = DefaultPipelines
	}
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	return &Batcher{c: c, pipelines: pipelines, maxBatch: maxBatch}
}

// Run runs the script sc as sc.Run would (EVALSHA, and the script loaded
// if Redis does not have it) in the next pipeline, and returns its reply.
func (b *Batcher) Run(ctx context.Context, sc *goredis.Script, keys []string, args ...any) (any, error) {
	return b.submit(&call{ctx: ctx, sc: sc, keys: keys, args: args})
}

// Do runs one command (its name and arguments, as redis.Client.Do takes
// them) in the next pipeline and returns its reply.
func (b *Batcher) Do(ctx context.Context, args ...any) (any, error) {
	return b.submit(&call{ctx: ctx, args: args})
}

func (b *Batcher) submit(c *call) (any, error) {
	if err := c.ctx.Err(); err != nil {
		return nil, err
	}
	c.done = make(chan struct{})
	b.mu.Lock()
	b.queue = append(b.queue, c)
	start := b.running < b.pipelines
	if start {
		b.running++
	}
	b.mu.Unlock()
	if start {
		go b.loop()
	}
	select {
	case <-c.done:
		res, err := c.cmd.Result()
		if err != nil && c.ctx.Err() != nil {
			// The pipeline ran out of this caller's time (its deadline is
			// the batch's when it is the latest): say so as the context
			// would have, not as an i/o timeout.
			return nil, c.ctx.Err()
		}
		return res, err
	case <-c.ctx.Done():
		return nil, c.ctx.Err()
	}
}

// loop sends pipelines while calls are queued.
func (b *Batcher) loop() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.maxBatch)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		batch := make([]*call, n)
		copy(batch, b.queue)
		b.queue = b.queue[:copy(b.queue, b.queue[n:])]
		b.mu.Unlock()
		b.send(batch)
	}
}

// send runs one batch as a pipeline, loads any script Redis lacked and
// runs its calls again, and wakes every caller.
func (b *Batcher) send(batch []*call) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	pipe := b.c.Pipeline()
	for _, c := range batch {
		if c.sc != nil {
			c.cmd = c.sc.EvalSha(c.ctx, pipe, c.keys, c.args...)
		} else {
			c.cmd = goredis.NewCmd(c.ctx, c.args...)
			_ = pipe.Process(c.ctx, c.cmd) // queued; sent by Exec
		}
	}
	_, _ = pipe.Exec(ctx) // each command's error is its caller's
	for _, c := range batch {
		if c.sc != nil && goredis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			// After a restart or SCRIPT FLUSH: Run loads the script
			// (EVAL) and the next EVALSHA finds it.
			c.cmd = c.sc.Run(ctx, b.c, c.keys, c.args...)
		}
		close(c.done)
	}
}

// batchContext is the context a pipeline runs under: no cancellation of
// its own (a caller that gives up must not fail the others), and the
// latest deadline of its callers, or none if one has none.
func batchContext(batch []*call) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return context.Background(), func() {}
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
