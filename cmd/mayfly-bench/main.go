// Command mayfly-bench measures a Mayfly deployment end to end and checks
// the figures against their goals. It starts everything it needs itself: a
// real redis-server on a free loopback port (or uses -redis ADDR), a Vault
// dev server from testenv's cached build, a dev trust domain whose CA mints
// real X.509-SVIDs, and brokers (broker.New, in this process) that clients
// reach over real mTLS on loopback.
//
//	go run ./cmd/mayfly-bench                       # everything, full scale (about 10-15 minutes)
//	go run ./cmd/mayfly-bench -leases 10000         # the same at 1/100 of the lease counts
//	go run ./cmd/mayfly-bench -scenarios a,e -o json
//
// Scenarios:
//
//	a  issuance rate and p50/p99, memory store vs Redis store, and Vault
//	   auth/token/create at the same concurrency
//	b  revocation lag when leases/10 leases fall due within 10 s, with 1 and
//	   with 2 broker replicas sharing Redis
//	c  revocation lag when leases active leases fall due over 5 minutes, and
//	   the time a restarted broker takes to be ready with them in Redis
//	d  issuance p99 while a burst of leases/10 expiries is revoked, against
//	   the same load without it
//	e  issuance with a new mTLS connection per request
//	f  Redis memory per active lease at leases active leases
//
// Brokers run in this process rather than as mayflyd processes: the
// lease-lag figures come from the broker's own revoker through a thin
// lease.Store wrapper (the outcome each Finish records, RevokedAt minus
// EndDue, exactly what the revoker's lag metric observes), nothing has to
// be built first, and the load generator and the brokers share the
// machine's cores either way. Each broker is wired as `mayflyd serve`
// wires one: its own go-redis client with mayflyd's options, leases and
// access state in Redis, the JWT issuer and the revoker with their
// defaults.
//
// Leases for b, c, d and f are written straight through the lease Store
// API (Create, then Activate, 64 at a time), each as IssueCredential would
// write it: decided by the policy, with the issuer's revocability; the
// broker's real revoker and JWT issuer end them. Every revocation figure
// says how its leases ended, from the revokers' outcomes and from a sample
// of records read back.
//
// Every row has its value, its goal and PASS or MISS; the notes give CPU
// per operation (this process, Redis, Vault) and how busy the machine's
// other processes kept its cores during the measurement (from /proc/stat).
// A result marked * was measured while others kept a quarter of a core or
// more busy: on a shared machine, run again before trusting it. With
// -cpuprofile, the load generator's goroutines carry the label
// side=client, so `go tool pprof -tagignore=side=client` shows the brokers
// alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// allScenarios in the order they run.
var allScenarios = []string{"a", "b", "c", "d", "e", "f"}

// config is what the flags say.
type config struct {
	scenarios []string
	callers   int
	duration  time.Duration
	warmup    time.Duration
	leases    int
	load      float64
	output    string
	redisAddr string
	aof       bool
	verbose   bool
	cpuprof   string
	// batch is the brokers' revoker.batch (0: the default).
	batch int
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mayfly-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.cpuprof != "" {
		f, err := os.Create(cfg.cpuprof)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "mayfly-bench: -cpuprofile:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := run(ctx, cfg, os.Stderr)
	if rep != nil {
		if werr := rep.write(os.Stdout, cfg.output); werr != nil && err == nil {
			err = werr
		}
	}
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mayfly-bench:", err)
		os.Exit(1)
	}
	if rep.errors() > 0 {
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("mayfly-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run (a,b,c,d,e,f)")
	fs.IntVar(&c.callers, "callers", 32, "concurrent clients, each a workload with its own mTLS connection")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long each issuance measurement runs (after -warmup)")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured load before each issuance measurement")
	fs.IntVar(&c.leases, "leases", 1_000_000, "active leases for c and f; b and d use a tenth; the c and b windows shrink with it (at least 1s)")
	fs.Float64Var(&c.load, "load", 50, "d: offered issuance load, percent of the Redis-backed closed-loop capacity")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	fs.StringVar(&c.redisAddr, "redis", "", "use the Redis at this host:port instead of starting one (keys under a per-run prefix, deleted after)")
	fs.BoolVar(&c.aof, "aof", false, "start Redis with appendonly yes, appendfsync everysec (as recommended for production)")
	fs.BoolVar(&c.verbose, "v", false, "broker warnings and errors to stderr")
	fs.IntVar(&c.batch, "revoker-batch", 0, "the brokers' revoker.batch, leases per claim (0: mayflyd's default, 256)")
	fs.StringVar(&c.cpuprof, "cpuprofile", "", "write a CPU profile of the whole run (clients and brokers) to this file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mayfly-bench [flags]\n\nStarts Redis, Vault and brokers, drives them over mTLS and prints each figure against its goal.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, s := range strings.Split(*scen, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		switch {
		case s == "":
		case !slices.Contains(allScenarios, s):
			return c, fmt.Errorf("-scenarios: unknown scenario %q (want some of %s)", s, strings.Join(allScenarios, ","))
		case !slices.Contains(c.scenarios, s):
			c.scenarios = append(c.scenarios, s)
		}
	}
	switch {
	case len(c.scenarios) == 0:
		return c, errors.New("-scenarios: none given")
	case c.callers < 1:
		return c, errors.New("-callers must be at least 1")
	case c.duration < 100*time.Millisecond:
		return c, errors.New("-duration must be at least 100ms")
	case c.warmup < 0:
		return c, errors.New("-warmup must not be negative")
	case c.leases < 100:
		return c, errors.New("-leases must be at least 100")
	case c.batch < 0:
		return c, errors.New("-revoker-batch must not be negative")
	case c.load <= 0 || c.load > 100:
		return c, errors.New("-load must be in (0, 100]")
	case c.output != "table" && c.output != "json":
		return c, fmt.Errorf("-o: %q is not table or json", c.output)
	}
	slices.SortFunc(c.scenarios, func(a, b string) int { return slices.Index(allScenarios, a) - slices.Index(allScenarios, b) })
	return c, nil
}

func (c config) has(s string) bool { return slices.Contains(c.scenarios, s) }

// Scaled sizes: the full-scale figures of the goals, shrunk with -leases
// at a constant rate of expiries.
const (
	fullLeases   = 1_000_000
	fullWindowB  = 10 * time.Second
	fullWindowC  = 5 * time.Minute
	minWindow    = time.Second
	burstDivisor = 10 // b and d use leases/10
)

func (c config) burstLeases() int { return max(c.leases/burstDivisor, 10) }

// subjects is how many workloads hold the written leases.
func (c config) subjects() int { return max(c.leases/leasesPerSubject, 10) }

func (c config) windowB() time.Duration {
	return max(time.Duration(float64(fullWindowB)*float64(c.leases)/fullLeases), minWindow)
}

func (c config) windowC() time.Duration {
	return max(time.Duration(float64(fullWindowC)*float64(c.leases)/fullLeases), minWindow)
}

// run runs the scenarios and returns the report; an error means the
// environment could not be set up (a scenario that fails is an ERROR row).
func run(ctx context.Context, cfg config, progress io.Writer) (*report, error) {
	start := time.Now()
	benv, err := newEnv(ctx, cfg, progress)
	if err != nil {
		return nil, err
	}
	defer benv.close()
	rep := newReport(cfg)
	type step struct {
		name string
		fn   func(context.Context, *env, *report) error
		on   bool
	}
	steps := []step{
		{"a", scenarioA, cfg.has("a")},
		{"b", scenarioB, cfg.has("b")},
		{"c", scenarioCF, cfg.has("c") || cfg.has("f")},
		{"d", scenarioD, cfg.has("d")},
		{"e", scenarioE, cfg.has("e")},
	}
	for _, s := range steps {
		if !s.on {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		err := s.fn(ctx, benv, rep)
		if err != nil {
			id := s.name
			if id == "c" && !cfg.has("c") {
				id = "f"
			}
			rep.fail(id, err)
			benv.logf("%s: error: %v", id, err)
		}
		benv.logf("%s: done in %s", s.name, time.Since(t0).Round(100*time.Millisecond))
		if cerr := benv.cleanup(ctx); cerr != nil {
			benv.logf("cleanup: %v", cerr)
		}
	}
	rep.Elapsed = time.Since(start).Seconds()
	if ctx.Err() != nil {
		return rep, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return rep, nil
}
