package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// machineBusy is the CPU time all processes of the machine have used
// (user, nice, system, irq, softirq, steal), from /proc/stat; 0 where
// there is no /proc.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * clockTick
}

// pidCPU is the user+system CPU time of process pid, from /proc; 0 where
// it cannot be read.
func pidCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name in parentheses: state is field 3,
	// utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick
}

// cpuSnap is the CPU used so far by this process, Redis, an optional
// further process (Vault) and the whole machine.
type cpuSnap struct {
	at                          time.Time
	proc, redis, extra, machine time.Duration
}

// snap reads the CPU counters; extraPid (0: none) is a process whose CPU
// is reported on its own.
func (e *env) snap(ctx context.Context, extraPid int) cpuSnap {
	return cpuSnap{at: time.Now(), proc: cpuTime(), redis: e.redisCPU(ctx), extra: pidCPU(extraPid), machine: machineBusy()}
}

// cpuUse is CPU used between two snaps.
type cpuUse struct {
	wall                        time.Duration
	proc, redis, extra, machine time.Duration
}

func (s cpuSnap) until(t cpuSnap) cpuUse {
	return cpuUse{wall: t.at.Sub(s.at), proc: t.proc - s.proc, redis: t.redis - s.redis, extra: t.extra - s.extra, machine: t.machine - s.machine}
}

// others is how many cores other processes of the machine kept busy (the
// shared-machine noise), or -1 when unknown.
func (u cpuUse) others() float64 {
	if u.machine == 0 || u.wall <= 0 {
		return -1
	}
	o := u.machine - u.proc - u.redis - u.extra
	return max(o.Seconds(), 0) / u.wall.Seconds()
}

// noise describes the other processes' load for a note.
func (u cpuUse) noise() string {
	o := u.others()
	if o < 0 {
		return ""
	}
	return fmt.Sprintf("other processes kept %.1f of %d cores busy", o, runtime.NumCPU())
}

// snapAt takes a snap at t (or when ctx ends) and delivers it.
func (e *env) snapAt(ctx context.Context, t time.Time) <-chan cpuSnap {
	c := make(chan cpuSnap, 1)
	go func() {
		sleepUntil(ctx, t)
		c <- e.snap(ctx, 0)
	}()
	return c
}
