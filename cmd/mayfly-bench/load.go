package main

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	mayflyv1 "github.com/mayflyhq/mayfly/proto/mayfly/v1"
)

// callFunc is one caller's operation (an issuance, a token create).
type callFunc func(ctx context.Context) error

// issueCall issues the bench entitlement through c.
func issueCall(c mayflyv1.CredentialServiceClient) callFunc {
	req := &mayflyv1.IssueCredentialRequest{Entitlement: issueEntitlement}
	return func(ctx context.Context) error {
		_, err := c.IssueCredential(ctx, req)
		return err
	}
}

// loadResult is what one measured run saw.
type loadResult struct {
	lat  []time.Duration // sorted, one per successful call in the window
	wall time.Duration
	cpu  cpuUse // of this process (clients and brokers), Redis, the extra process and the machine
	// failed describes the calls that failed (nil: none did).
	failed error
}

// failures counts failed calls and keeps the first error. A failed call
// does not stop a run: the figures of the calls that succeeded are still
// reported, and the failures as an ERROR row.
type failures struct {
	mu    sync.Mutex
	n     int
	first error
}

func (f *failures) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.first == nil {
		f.first = err
	}
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// err describes the failures, nil when there were none.
func (f *failures) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		return nil
	}
	return fmt.Errorf("%d calls failed; the first: %w", f.n, f.first)
}

// failPause is how long a caller waits after a failed call, so that a
// broker that refuses everything is not hammered in a tight loop.
const failPause = time.Millisecond

func (r loadResult) rate() float64 { return float64(len(r.lat)) / r.wall.Seconds() }
func (r loadResult) p50() time.Duration {
	return pct(r.lat, 0.50)
}
func (r loadResult) p99() time.Duration { return pct(r.lat, 0.99) }

// cpuPer is CPU time per operation in microseconds.
func cpuPer(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(n)
}

// latencyCap is the initial room for one caller's latencies: enough for
// 20,000 operations/s over all callers, so appends do not reallocate in
// the measured window at the rates this machine reaches.
func latencyCap(d time.Duration, callers int) int {
	return min(int(d.Seconds()*20_000)/callers+64, 1<<20)
}

// closedLoop runs every caller in a loop, each sending its next call as
// soon as the previous one returns, for warm and then dur; it returns the
// calls that completed within dur. A failed call ends the run with its
// error. This is a closed loop at saturation: the latencies are queueing
// at capacity (by Little's law, mean latency = callers / throughput).
func closedLoop(ctx context.Context, e *env, calls []callFunc, warm, dur time.Duration, extraPid int) (loadResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	begin := time.Now()
	mStart, mEnd := begin.Add(warm), begin.Add(warm+dur)
	lat := make([][]time.Duration, len(calls))
	var (
		r    loadResult
		fail failures
		wg   sync.WaitGroup
	)
	for i, call := range calls {
		lat[i] = make([]time.Duration, 0, latencyCap(dur, len(calls)))
		wg.Go(func() {
			defer clientSide()()
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(mEnd) {
					return
				}
				if err := call(ctx); err != nil {
					if ctx.Err() == nil {
						fail.add(err)
						sleepUntil(ctx, time.Now().Add(failPause))
					}
					continue
				}
				if t1 := time.Now(); !t1.Before(mStart) && !t1.After(mEnd) {
					lat[i] = append(lat[i], t1.Sub(t0))
				}
			}
		})
	}
	if sleepUntil(ctx, mStart) {
		s0 := e.snap(ctx, extraPid)
		if sleepUntil(ctx, mEnd) {
			r.cpu = s0.until(e.snap(ctx, extraPid))
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return r, err
	}
	r.wall = dur
	r.lat = slices.Concat(lat...)
	slices.Sort(r.lat)
	r.failed = fail.err()
	if len(r.lat) == 0 {
		if err := r.failed; err != nil {
			return r, fmt.Errorf("no call succeeded in the measured window: %w", err)
		}
		return r, errors.New("no call completed in the measured window")
	}
	return r, nil
}

// sample is one call of an open loop: when it was due to arrive, and how
// long from then until it returned.
type sample struct {
	at  time.Time
	lat time.Duration
}

// openLoop offers calls at rate per second, arriving as a Poisson process
// from start until stop is closed or maxDur has passed, queued in arrival
// order to whichever caller is free; so at most len(calls) are in flight
// and a call that arrives while all are busy waits, and that wait counts:
// latency is measured from the scheduled arrival (no coordinated
// omission), including the pacer's own lateness.
// Failed calls are counted in fail and leave no sample.
func openLoop(ctx context.Context, calls []callFunc, rate float64, start time.Time, stop <-chan struct{}, maxDur time.Duration, fail *failures) ([]sample, error) {
	arrivals := make(chan time.Time, 1<<16)
	per := make([][]sample, len(calls))
	var wg sync.WaitGroup
	capHint := min(int(rate*maxDur.Seconds()*1.2)/len(calls)+64, 1<<20)
	for i, call := range calls {
		per[i] = make([]sample, 0, capHint)
		wg.Go(func() {
			defer clientSide()()
			for at := range arrivals {
				if ctx.Err() != nil {
					continue // drain
				}
				if err := call(ctx); err != nil {
					if ctx.Err() == nil {
						fail.add(err)
					}
					continue
				}
				per[i] = append(per[i], sample{at: at, lat: time.Since(at)})
			}
		})
	}
	rnd := mrand.New(mrand.NewPCG(uint64(start.UnixNano()), 0x6d617966))
	end := start.Add(maxDur)
	at := start
	sleepUntil(ctx, start)
pace:
	for ctx.Err() == nil {
		at = at.Add(time.Duration(rnd.ExpFloat64() / rate * float64(time.Second)))
		if at.After(end) {
			break
		}
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-stop:
				t.Stop()
				break pace
			case <-ctx.Done():
				t.Stop()
				break pace
			}
		} else {
			select {
			case <-stop:
				break pace
			default:
			}
		}
		arrivals <- at
	}
	close(arrivals)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := slices.Concat(per...)
	return out, nil
}

// latenciesIn returns the sorted latencies of the samples that arrived in
// [from, to).
func latenciesIn(samples []sample, from, to time.Time) []time.Duration {
	var out []time.Duration
	for _, s := range samples {
		if !s.at.Before(from) && s.at.Before(to) {
			out = append(out, s.lat)
		}
	}
	slices.Sort(out)
	return out
}

// newConnCalls are issuance calls that each open a new mTLS connection
// (full handshake: no session resumption), issue once and close it.
func newConnCalls(e *env, addr string, n int) ([]callFunc, error) {
	calls := make([]callFunc, n)
	req := &mayflyv1.IssueCredentialRequest{Entitlement: issueEntitlement}
	for i := range n {
		if _, err := e.callerConfig(i); err != nil {
			return nil, err
		}
		calls[i] = func(ctx context.Context) error {
			cc, err := e.dialCaller(addr, i)
			if err != nil {
				return err
			}
			defer cc.Close()
			_, err = mayflyv1.NewCredentialServiceClient(cc).IssueCredential(ctx, req)
			return err
		}
	}
	return calls, nil
}

// clientSide labels the calling goroutine, and every goroutine it starts
// (gRPC's client transports among them), side=client for CPU profiles,
// so that a -cpuprofile separates the load generator from the brokers:
// go tool pprof -tagfocus=side=client. It returns the function that
// removes the label.
func clientSide() func() {
	ctx := pprof.WithLabels(context.Background(), pprof.Labels("side", "client"))
	pprof.SetGoroutineLabels(ctx)
	return func() { pprof.SetGoroutineLabels(context.Background()) }
}

// sleepUntil sleeps until t and reports whether ctx is still live.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// progressEvery logs fn's answer every d until stop is closed.
func progressEvery(e *env, d time.Duration, stop <-chan struct{}, fn func() string) {
	go func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				e.logf("  %s", fn())
			}
		}
	}()
}
