package chaos

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Flags of the suite. They are registered in the test binary of this
// package (go test ./deploy/chaos -args -chaos.runs=5) and read by Repeat,
// Matrix and WriteReport.
var (
	flagRuns = flag.Int("chaos.runs", 0,
		"runs of every fault case, each with its own random seed (default 1 under CI=true, else 2)")
	flagSeed = flag.Uint64("chaos.seed", 0,
		"run every fault case once with this seed (reproduces a run whose seed was printed)")
	flagReport = flag.String("chaos.report", "",
		"also write the results table, as markdown, to this file")
	flagFull = flag.Bool("chaos.full", false,
		"full-length faults (a 30 s Redis outage, longer load), as `make chaos` runs them; CI runs short ones")
)

// CI reports whether the suite runs under CI=true: then a case whose
// services are missing fails instead of skipping, and each fault case runs
// once unless -chaos.runs says otherwise.
func CI() bool { return os.Getenv("CI") == "true" }

// Full reports whether -chaos.full was given.
func Full() bool { return *flagFull }

// Runs is how many seeds each fault case runs with.
func Runs() int {
	switch {
	case *flagSeed != 0:
		return 1
	case *flagRuns > 0:
		return *flagRuns
	case CI():
		return 1
	}
	return 2
}

// Case names one row of the results table.
type Case struct {
	// ID is the case's number in the fault matrix ("1", "2", ...) or its
	// attack group ("A1", ...). Rows sort by ID.
	ID string
	// Title says in a few words what is done to the broker.
	Title string
}

// Run is one run of a fault case with one seed. It embeds the subtest's
// *testing.T: a failed check fails the run.
type Run struct {
	*testing.T
	// Seed is the run's seed; Rand is seeded with it. Everything a case
	// chooses at random (when to kill, which replica, how long) comes from
	// Rand, so -chaos.seed replays the same choices (the timing of the
	// machine is the only thing that differs).
	Seed uint64
	Rand *rand.Rand
	// Ledger records every credential any client of this run received.
	Ledger *Ledger

	res *result
}

// Figure records a measurement of this run; the table shows the worst
// (largest) over the runs of the case. Durations are shown in seconds.
func (r *Run) Figure(name string, v float64, unit string) {
	r.res.add(name, v, unit, false)
	r.Logf("figure: %s = %s", name, formatValue(v, unit))
}

// Duration records a duration figure (worst = longest).
func (r *Run) Duration(name string, d time.Duration) { r.Figure(name, d.Seconds(), "s") }

// Count records a count; the table shows the total over the runs.
func (r *Run) Count(name string, n int) {
	r.res.add(name, float64(n), "", true)
	r.Logf("count: %s = %d", name, n)
}

// Repeat runs fn once per seed (Runs of them, or the one -chaos.seed
// names) as subtests "seed=N", and records each run's outcome and figures
// under c in the results table. The seed is printed with the command that
// replays the run.
func Repeat(t *testing.T, c Case, fn func(r *Run)) {
	t.Helper()
	res := register(c)
	n := Runs()
	for i := 0; i < n; i++ {
		seed := *flagSeed
		if seed == 0 {
			seed = rand.Uint64() >> 1 // positive as an int64 too, for people who paste it
		}
		name := "seed=" + strconv.FormatUint(seed, 10)
		t.Logf("case %s run %d of %d: %s (replay: go test ./deploy/chaos -run '^%s$' -args -chaos.seed=%d)", c.ID, i+1, n, name, t.Name(), seed)
		ok := t.Run(name, func(t *testing.T) {
			r := &Run{T: t, Seed: seed, Rand: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), Ledger: &Ledger{}, res: res}
			fn(r)
		})
		res.finish(seed, ok)
	}
}

// Attack is one row of an attack matrix: something a caller tries that the
// broker must refuse.
type Attack struct {
	// Name says what is tried.
	Name string
	// Try makes the attempt through the broker's real surface and checks
	// that it is refused with the right status (and recorded, where the
	// broker records decisions). A failure of t is an attack that got
	// through, or was refused the wrong way: a security bug.
	Try func(t *testing.T)
}

// Matrix runs every attack as a subtest and records the group under c: runs
// is the number of attacks, passes the number refused as they must be.
func Matrix(t *testing.T, c Case, attacks []Attack) {
	t.Helper()
	res := register(c)
	failed := 0
	for _, a := range attacks {
		ok := t.Run(a.Name, a.Try)
		res.finish(0, ok)
		if !ok {
			failed++
			res.mu.Lock()
			res.notes = append(res.notes, "NOT refused as required: "+a.Name)
			res.mu.Unlock()
		}
	}
	res.add("attacks not refused", float64(failed), "", true)
}

// result is the row of one case.
type result struct {
	c Case

	mu      sync.Mutex
	runs    int
	passes  int
	failed  []uint64 // seeds of failed fault runs
	figures []*figure
	notes   []string
}

type figure struct {
	name  string
	unit  string
	sum   bool // a count: the total over runs
	value float64
	set   bool
}

func (r *result) add(name string, v float64, unit string, sum bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var f *figure
	for _, g := range r.figures {
		if g.name == name {
			f = g
		}
	}
	if f == nil {
		f = &figure{name: name, unit: unit, sum: sum}
		r.figures = append(r.figures, f)
	}
	switch {
	case sum:
		f.value += v
	case !f.set || v > f.value:
		f.value = v
	}
	f.set = true
}

func (r *result) finish(seed uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs++
	if ok {
		r.passes++
	} else if seed != 0 {
		r.failed = append(r.failed, seed)
	}
}

var (
	resultsMu sync.Mutex
	results   []*result
)

func register(c Case) *result {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	for _, r := range results {
		if r.c.ID == c.ID {
			return r
		}
	}
	r := &result{c: c}
	results = append(results, r)
	return r
}

// Table renders the results of every case that ran as a markdown table.
func Table() string {
	resultsMu.Lock()
	rs := slices.Clone(results)
	resultsMu.Unlock()
	slices.SortStableFunc(rs, func(a, b *result) int { return compareIDs(a.c.ID, b.c.ID) })
	var b strings.Builder
	mode := "short (CI)"
	if Full() {
		mode = "full"
	}
	fmt.Fprintf(&b, "Mayfly fault and attack matrix, %s, %s; %d run(s) per fault case.\n\n", mode, time.Now().UTC().Format("2006-01-02 15:04 MST"), Runs())
	b.WriteString("| case | what | runs | passes | worst measured |\n|---|---|---:|---:|---|\n")
	for _, r := range rs {
		r.mu.Lock()
		var figs []string
		for _, f := range r.figures {
			name := f.name
			if f.sum {
				name += " (total)"
			}
			figs = append(figs, name+" "+formatValue(f.value, f.unit))
		}
		what := r.c.Title
		if len(r.failed) > 0 {
			seeds := make([]string, len(r.failed))
			for i, s := range r.failed {
				seeds[i] = strconv.FormatUint(s, 10)
			}
			what += " (failed seeds: " + strings.Join(seeds, ", ") + ")"
		}
		for _, n := range r.notes {
			what += "; " + n
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %s |\n", r.c.ID, escapeCell(what), r.runs, r.passes, escapeCell(strings.Join(figs, "; ")))
		r.mu.Unlock()
	}
	return b.String()
}

// WriteReport prints the table to w and, with -chaos.report, writes it to
// that file. Call it from TestMain after m.Run.
func WriteReport(w io.Writer) error {
	resultsMu.Lock()
	n := len(results)
	resultsMu.Unlock()
	if n == 0 {
		return nil
	}
	t := Table()
	fmt.Fprintf(w, "\n%s\n", t)
	if *flagReport != "" {
		return os.WriteFile(*flagReport, []byte(t), 0o644)
	}
	return nil
}

// compareIDs sorts "1" < "2" < "10" < "A1" < "A2".
func compareIDs(a, b string) int {
	na, ea := strconv.Atoi(a)
	nb, eb := strconv.Atoi(b)
	switch {
	case ea == nil && eb == nil:
		return na - nb
	case ea == nil:
		return -1
	case eb == nil:
		return 1
	}
	return strings.Compare(a, b)
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		return strconv.FormatFloat(v, 'f', 3, 64) + " s"
	case "":
		if v == float64(int64(v)) {
			return strconv.FormatInt(int64(v), 10)
		}
	}
	return strings.TrimSpace(strconv.FormatFloat(v, 'g', 4, 64) + " " + unit)
}

func escapeCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
