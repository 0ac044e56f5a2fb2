package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Results of a row.
const (
	resultPass  = "PASS"
	resultMiss  = "MISS"
	resultInfo  = "-"
	resultError = "ERROR"
)

// row is one measured figure.
type row struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	// Goal is the goal as text ("≥ 70 %"); empty for a figure without one.
	Goal string `json:"goal,omitempty"`
	// GoalOp and GoalValue are the goal for machines: the value must be
	// GoalOp ("<=" or ">=") GoalValue.
	GoalOp    string   `json:"goal_op,omitempty"`
	GoalValue *float64 `json:"goal_value,omitempty"`
	// Result is PASS, MISS, "-" (no goal) or ERROR.
	Result string `json:"result"`
	Note   string `json:"note,omitempty"`
	// Ended says how the leases of a revocation figure ended.
	Ended *ended `json:"ended,omitempty"`
	// OtherCores is how many cores other processes of the machine kept
	// busy while the figure was measured (absent when unknown); Noisy
	// says it was at least noisyCores, so the figure is not to be trusted
	// (the table marks its result with *).
	OtherCores *float64 `json:"other_cores,omitempty"`
	Noisy      bool     `json:"noisy,omitempty"`
}

// noisyCores is the other processes' load from which a figure is marked
// noisy: on a 2-core machine that the bench fills, a quarter of a core
// taken by others changes rates and tail latencies visibly.
const noisyCores = 0.25

// noise records the other processes' load during the measurement of the
// row; with several uses (phases), the busiest counts.
func (x *row) noise(uses ...cpuUse) {
	for _, u := range uses {
		o := u.others()
		if o < 0 {
			continue
		}
		if x.OtherCores == nil || o > *x.OtherCores {
			x.OtherCores = &o
		}
	}
	x.Noisy = x.OtherCores != nil && *x.OtherCores >= noisyCores
}

// ended counts how the leases written for a revocation figure ended: by
// the revokers' recorded outcomes, and by reading a sample of the lease
// records back from Redis.
type ended struct {
	Leases         int `json:"leases"`
	Revoked        int `json:"revoked"`
	Irrevocable    int `json:"irrevocable"`
	Retried        int `json:"retried"`
	Sampled        int `json:"sampled"`
	SampledRevoked int `json:"sampled_revoked"`
}

// all reports whether every lease ended revoked.
func (e ended) all() bool {
	return e.Revoked == e.Leases && e.Irrevocable == 0 && e.SampledRevoked == e.Sampled
}

// report is the run's parameters and rows.
type report struct {
	Started    time.Time `json:"started"`
	Elapsed    float64   `json:"elapsed_s"`
	GoVersion  string    `json:"go_version"`
	GOMAXPROCS int       `json:"gomaxprocs"`
	NumCPU     int       `json:"num_cpu"`
	Redis      string    `json:"redis"`
	Scenarios  []string  `json:"scenarios"`
	Callers    int       `json:"callers"`
	Duration   float64   `json:"duration_s"`
	Leases     int       `json:"leases"`
	// RevokerBatch is the brokers' revoker.batch (0: the default).
	RevokerBatch int   `json:"revoker_batch,omitempty"`
	Rows         []row `json:"rows"`
}

func newReport(cfg config) *report {
	redis := "redis-server started by mayfly-bench (no persistence)"
	switch {
	case cfg.redisAddr != "":
		redis = "existing Redis at " + cfg.redisAddr
	case cfg.aof:
		redis = "redis-server started by mayfly-bench (appendonly, fsync everysec)"
	}
	return &report{
		Started: time.Now().UTC().Truncate(time.Second), GoVersion: runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), Redis: redis,
		Scenarios: cfg.scenarios, Callers: cfg.callers, Duration: cfg.duration.Seconds(), Leases: cfg.leases,
		RevokerBatch: cfg.batch,
	}
}

// info adds a figure without a goal.
func (r *report) info(scenario, metric string, v float64, unit, note string) {
	r.Rows = append(r.Rows, row{Scenario: scenario, Metric: metric, Value: v, Unit: unit, Result: resultInfo, Note: note})
}

// goal adds a figure with its goal: v op limit ("<=" or ">=").
func (r *report) goal(scenario, metric string, v float64, unit, op string, limit float64, note string) {
	pass := v <= limit
	sym := "≤"
	if op == ">=" {
		pass, sym = v >= limit, "≥"
	}
	if math.IsNaN(v) {
		pass = false
	}
	res := resultMiss
	if pass {
		res = resultPass
	}
	r.Rows = append(r.Rows, row{Scenario: scenario, Metric: metric, Value: v, Unit: unit,
		Goal: sym + " " + formatValue(limit, unit), GoalOp: op, GoalValue: &limit, Result: res, Note: note})
}

// fail adds a row for a scenario that could not be measured.
func (r *report) fail(scenario string, err error) {
	r.Rows = append(r.Rows, row{Scenario: scenario, Metric: "error", Value: math.NaN(), Result: resultError, Note: err.Error()})
}

// last is the row added last.
func (r *report) last() *row { return &r.Rows[len(r.Rows)-1] }

func (r *report) errors() int {
	n := 0
	for _, x := range r.Rows {
		if x.Result == resultError {
			n++
		}
	}
	return n
}

func (r *report) misses() []row {
	var out []row
	for _, x := range r.Rows {
		if x.Result == resultMiss {
			out = append(out, x)
		}
	}
	return out
}

func (r *report) write(w io.Writer, format string) error {
	if format == "json" {
		// NaN is not JSON: an ERROR row's value is null.
		type jsonRow struct {
			row
			Value *float64 `json:"value"`
		}
		rows := make([]jsonRow, len(r.Rows))
		for i, x := range r.Rows {
			rows[i] = jsonRow{row: x}
			if !math.IsNaN(x.Value) && !math.IsInf(x.Value, 0) {
				v := x.Value
				rows[i].Value = &v
			}
		}
		out := struct {
			*report
			Rows []jsonRow `json:"rows"`
		}{r, rows}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "mayfly-bench  %s  %s, GOMAXPROCS %d, %d CPUs\n", r.Started.Format(time.RFC3339), r.GoVersion, r.GOMAXPROCS, r.NumCPU)
	batch := ""
	if r.RevokerBatch > 0 {
		batch = fmt.Sprintf(", revoker batch %d", r.RevokerBatch)
	}
	fmt.Fprintf(w, "callers %d, duration %s, leases %d%s, scenarios %s; %s; took %s\n\n",
		r.Callers, time.Duration(r.Duration*float64(time.Second)), r.Leases, batch, strings.Join(r.Scenarios, ","), r.Redis,
		time.Duration(r.Elapsed*float64(time.Second)).Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	noisy := 0
	fmt.Fprintln(tw, "\tmetric\tvalue\tgoal\tresult\tnote")
	for _, x := range r.Rows {
		v := formatValue(x.Value, x.Unit)
		if x.Result == resultError {
			v = "-"
		}
		goal := x.Goal
		if goal == "" {
			goal = "-"
		}
		res := x.Result
		if x.Noisy {
			res += "*"
			noisy++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.Scenario, x.Metric, v, goal, res, x.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if noisy > 0 {
		fmt.Fprintf(w, "\n* measured while other processes kept %.2f or more of the machine's cores busy: run again to confirm.\n", noisyCores)
	}
	if m := r.misses(); len(m) > 0 {
		fmt.Fprintf(w, "\n%d goal(s) missed:", len(m))
		for _, x := range m {
			fmt.Fprintf(w, " %s %s;", x.Scenario, x.Metric)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// formatValue prints v in unit.
func formatValue(v float64, unit string) string {
	switch unit {
	case "/s":
		return fmt.Sprintf("%.0f/s", v)
	case "ms":
		if math.Abs(v) < 10 {
			return fmt.Sprintf("%.2f ms", v)
		}
		return fmt.Sprintf("%.0f ms", v)
	case "s":
		return fmt.Sprintf("%.2f s", v)
	case "%":
		return fmt.Sprintf("%.0f %%", v)
	case "x":
		return fmt.Sprintf("%.2f×", v)
	case "B":
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%g %s", v, unit)
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
