package redisbatch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/mayflyhq/mayfly/broker/internal/redisbatch"
	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// counter counts the pipelines and commands a client sends.
type counter struct{ pipelines, cmds atomic.Int64 }

func (c *counter) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (c *counter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		c.pipelines.Add(1)
		c.cmds.Add(1)
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		c.pipelines.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func newClient(t *testing.T, addr string) (*goredis.Client, *counter) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	n := &counter{}
	c.AddHook(n)
	return c, n
}

var incr = goredis.NewScript(`return redis.call('INCR', KEYS[1])`)

// TestConcurrentCallsShareRoundTrips: many concurrent callers each get
// their own reply, and share pipelines to get them.
func TestConcurrentCallsShareRoundTrips(t *testing.T) {
	c, n := newClient(t, testenv.Redis(t).Addr())
	b := redisbatch.New(c, 0, 0)
	ctx := t.Context()
	const callers, each = 64, 100
	seen := make([]atomic.Bool, callers*each+1)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range each {
				v, err := b.Run(ctx, incr, []string{"n"})
				if err != nil {
					t.Error(err)
					return
				}
				i, ok := v.(int64)
				if !ok || i < 1 || i > callers*each || seen[i].Swap(true) {
					t.Errorf("reply %v: not a fresh count", v)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, _ := c.Get(ctx, "n").Int(); got != callers*each {
		t.Fatalf("n = %d after %d calls", got, callers*each)
	}
	p, cmds := n.pipelines.Load(), n.cmds.Load()
	t.Logf("%d calls in %d round trips", cmds, p)
	if p > callers*each/2 {
		t.Fatalf("%d calls took %d round trips: concurrent calls were not batched", callers*each, p)
	}
}

// TestScriptsReloaded: a script Redis lost (SCRIPT FLUSH, a restart) is
// loaded again, within the batch that found it missing.
func TestScriptsReloaded(t *testing.T) {
	c, _ := newClient(t, testenv.Redis(t).Addr())
	b := redisbatch.New(c, 0, 0)
	ctx := t.Context()
	for i := 1; i <= 3; i++ {
		if err := c.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		v, err := b.Run(ctx, incr, []string{"n"})
		if err != nil || v != int64(i) {
			t.Fatalf("call %d after SCRIPT FLUSH: %v, %v", i, v, err)
		}
	}
}

// TestErrorsStayWithTheirCall: a command that fails fails alone; the
// others of its pipeline get their replies.
func TestErrorsStayWithTheirCall(t *testing.T) {
	c, _ := newClient(t, testenv.Redis(t).Addr())
	b := redisbatch.New(c, 1, 0)
	ctx := t.Context()
	if err := c.HSet(ctx, "h", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 40)
	for i := range errs {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", i)
			if i%4 == 0 {
				key = "h" // INCR on a hash: WRONGTYPE
			}
			_, errs[i] = b.Run(ctx, incr, []string{key})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if wrong := i%4 == 0; wrong != (err != nil) {
			t.Errorf("call %d (on the hash: %v): %v", i, wrong, err)
		}
	}
	if v, err := b.Do(ctx, "GET", "missing"); !errors.Is(err, goredis.Nil) || v != nil {
		t.Errorf("GET of a missing key: %v, %v (want redis.Nil)", v, err)
	}
}

// TestCallerGivesUp: a caller whose context ends stops waiting at once,
// and does not fail the calls it shared a pipeline with.
func TestCallerGivesUp(t *testing.T) {
	srv := testenv.Redis(t)
	c, _ := newClient(t, srv.Addr())
	b := redisbatch.New(c, 1, 0)
	ctx := t.Context()
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Run(done, incr, []string{"n"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("call with an ended context: %v", err)
	}
	// Redis answers nobody for 500ms: a caller with a 100ms deadline
	// gives up at it, one without waits and gets its reply.
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer admin.Close()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var patientErr error
	wg.Go(func() { _, patientErr = b.Run(ctx, incr, []string{"n"}) })
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	_, err := b.Run(short, incr, []string{"n"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("caller with a 100ms deadline: %v after %s", err, time.Since(start))
	}
	wg.Wait()
	if patientErr != nil {
		t.Fatalf("the caller without a deadline: %v", patientErr)
	}
}

// TestRedisDown: with Redis gone every call fails with an error, none
// hangs.
func TestRedisDown(t *testing.T) {
	srv := testenv.Redis(t)
	c, _ := newClient(t, srv.Addr())
	b := redisbatch.New(c, 0, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := b.Run(ctx, incr, []string{"n"}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := b.Run(ctx, incr, []string{"n"}); err == nil || ctx.Err() != nil {
				t.Errorf("call with Redis down: %v (context: %v)", err, ctx.Err())
			}
		})
	}
	wg.Wait()
}
