package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/mayflyhq/mayfly/deploy/testenv"
)

// TestRunTinyScale runs every scenario at a tiny scale against a real
// redis-server and a real Vault dev server, and checks that the report is
// well formed and its figures plausible: every row has a finite value and
// a result, rates are positive, latencies and lags are not negative, and
// every lease written for a revocation figure ended revoked. Whether a
// goal is met is not checked: at this scale, and on a shared machine, the
// figures say nothing about the goals.
func TestRunTinyScale(t *testing.T) {
	testenv.RequireRedis(t)
	testenv.RequireVault(t)
	cfg, err := parseFlags([]string{"-leases", "2000", "-duration", "1s", "-warmup", "200ms", "-callers", "8"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := run(ctx, cfg, &progress)
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	var table bytes.Buffer
	if err := rep.write(&table, "table"); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	if rep.errors() > 0 {
		t.Fatalf("scenarios failed; progress:\n%s", progress.String())
	}

	// Every scenario has rows, and scenario f's memory figure exists.
	seen := map[string]int{}
	for _, r := range rep.Rows {
		seen[r.Scenario]++
	}
	for _, s := range allScenarios {
		if seen[s] == 0 {
			t.Errorf("no row for scenario %s", s)
		}
	}
	wantGoals := map[string]int{"a": 2, "b": 4, "c": 2, "d": 1, "e": 1, "f": 1}
	goals := map[string]int{}
	revocationRows := 0
	for _, r := range rep.Rows {
		if math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
			t.Errorf("%s %q: value %v", r.Scenario, r.Metric, r.Value)
		}
		switch r.Result {
		case resultPass, resultMiss:
			goals[r.Scenario]++
			if r.Goal == "" || r.GoalValue == nil || (r.GoalOp != "<=" && r.GoalOp != ">=") {
				t.Errorf("%s %q: goal %q %q %v", r.Scenario, r.Metric, r.Goal, r.GoalOp, r.GoalValue)
			}
			pass := r.Value <= *r.GoalValue
			if r.GoalOp == ">=" {
				pass = r.Value >= *r.GoalValue
			}
			if pass != (r.Result == resultPass) {
				t.Errorf("%s %q: %v against %s %v is %s", r.Scenario, r.Metric, r.Value, r.GoalOp, *r.GoalValue, r.Result)
			}
		case resultInfo:
		default:
			t.Errorf("%s %q: result %q", r.Scenario, r.Metric, r.Result)
		}
		switch {
		case r.Unit == "/s" || r.Unit == "x" || r.Unit == "%" || r.Unit == "B":
			if r.Value <= 0 {
				t.Errorf("%s %q: %v %s, want > 0", r.Scenario, r.Metric, r.Value, r.Unit)
			}
		case r.Unit == "ms" && !strings.Contains(r.Metric, "rise"):
			if r.Value < 0 {
				t.Errorf("%s %q: %v ms, want >= 0", r.Scenario, r.Metric, r.Value)
			}
		}
		if strings.Contains(r.Metric, "lag") && r.Value < 0 {
			t.Errorf("%s %q: negative lag %v", r.Scenario, r.Metric, r.Value)
		}
		if r.Ended != nil {
			revocationRows++
			if !r.Ended.all() || r.Ended.Leases == 0 || r.Ended.Sampled == 0 {
				t.Errorf("%s %q: not every lease ended revoked: %+v", r.Scenario, r.Metric, *r.Ended)
			}
		}
	}
	for s, n := range wantGoals {
		if goals[s] != n {
			t.Errorf("scenario %s: %d rows with a goal, want %d", s, goals[s], n)
		}
	}
	if revocationRows != 4 { // b: 1 and 2 replicas, c, d
		t.Errorf("%d rows say how their leases ended, want 4", revocationRows)
	}
	// Both revocation figures of b at this scale: 200 leases each.
	for _, r := range rep.Rows {
		if r.Scenario == "b" && r.Ended != nil && r.Ended.Leases != cfg.burstLeases() {
			t.Errorf("b wrote %d leases, want %d", r.Ended.Leases, cfg.burstLeases())
		}
	}

	// The table names every row; the JSON parses back to the same rows.
	for _, r := range rep.Rows {
		if !strings.Contains(table.String(), r.Metric) {
			t.Errorf("table lacks %q", r.Metric)
		}
	}
	var buf bytes.Buffer
	if err := rep.write(&buf, "json"); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Leases int `json:"leases"`
		Rows   []struct {
			Scenario string   `json:"scenario"`
			Metric   string   `json:"metric"`
			Value    *float64 `json:"value"`
			Result   string   `json:"result"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, buf.String())
	}
	if back.Leases != 2000 || len(back.Rows) != len(rep.Rows) {
		t.Fatalf("JSON has leases %d and %d rows, want 2000 and %d", back.Leases, len(back.Rows), len(rep.Rows))
	}
	for i, r := range back.Rows {
		if r.Value == nil || *r.Value != rep.Rows[i].Value || r.Metric != rep.Rows[i].Metric || r.Result != rep.Rows[i].Result {
			t.Errorf("JSON row %d = %+v, want %+v", i, r, rep.Rows[i])
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.scenarios, ","); got != "a,b,c,d,e,f" || cfg.callers != 32 || cfg.leases != 1_000_000 || cfg.output != "table" {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg.burstLeases() != 100_000 || cfg.windowB() != 10*time.Second || cfg.windowC() != 5*time.Minute || cfg.subjects() != 10_000 {
		t.Errorf("full scale: %d leases over %s (b), %s (c), %d subjects", cfg.burstLeases(), cfg.windowB(), cfg.windowC(), cfg.subjects())
	}
	cfg, err = parseFlags([]string{"-scenarios", "e, a,e", "-leases", "10000", "-o", "json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.scenarios, ","); got != "a,e" {
		t.Errorf("scenarios %q, want a,e (in run order, once each)", got)
	}
	if cfg.burstLeases() != 1000 || cfg.windowB() != time.Second || cfg.windowC() != 3*time.Second {
		t.Errorf("-leases 10000: %d leases over %s (b), %s (c)", cfg.burstLeases(), cfg.windowB(), cfg.windowC())
	}
	for _, bad := range [][]string{
		{"-scenarios", "a,z"}, {"-scenarios", ""}, {"-callers", "0"}, {"-o", "xml"},
		{"-leases", "5"}, {"-duration", "1ms"}, {"-load", "150"}, {"extra"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestGoalRows(t *testing.T) {
	r := newReport(config{})
	r.goal("x", "rate", 800, "/s", ">=", 700, "")
	r.goal("x", "lag", 1200, "ms", "<=", 1000, "")
	r.goal("x", "nan", math.NaN(), "ms", "<=", 1000, "")
	r.info("x", "info", 1, "ms", "")
	r.fail("y", errors.New("boom"))
	want := []string{resultPass, resultMiss, resultMiss, resultInfo, resultError}
	for i, w := range want {
		if r.Rows[i].Result != w {
			t.Errorf("row %d %q: %s, want %s", i, r.Rows[i].Metric, r.Rows[i].Result, w)
		}
	}
	if r.Rows[0].Goal != "≥ 700/s" || r.Rows[1].Goal != "≤ 1000 ms" {
		t.Errorf("goals %q %q", r.Rows[0].Goal, r.Rows[1].Goal)
	}
	var buf bytes.Buffer
	if err := r.write(&buf, "json"); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(buf.Bytes()) || !strings.Contains(buf.String(), `"value": null`) {
		t.Errorf("JSON with an ERROR row:\n%s", buf.String())
	}

	// A figure measured while other processes were busy is marked.
	quiet := cpuUse{wall: time.Second, machine: 1100 * time.Millisecond, proc: time.Second}
	busy := cpuUse{wall: time.Second, machine: 1500 * time.Millisecond, proc: time.Second}
	r.Rows[0].noise(quiet)
	r.Rows[1].noise(quiet, busy)
	if r.Rows[0].Noisy || !r.Rows[1].Noisy || *r.Rows[1].OtherCores != 0.5 {
		t.Errorf("noise: %v %v %v", r.Rows[0].Noisy, r.Rows[1].Noisy, *r.Rows[1].OtherCores)
	}
	buf.Reset()
	if err := r.write(&buf, "table"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "MISS*") || strings.Contains(buf.String(), "PASS*") || !strings.Contains(buf.String(), "* measured while") {
		t.Errorf("table does not mark the noisy row alone:\n%s", buf.String())
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for q, want := range map[float64]time.Duration{0.5: 50, 0.99: 99, 1: 100, 0: 1} {
		if got := pct(d, q); got != want {
			t.Errorf("pct(1..100, %v) = %v, want %v", q, got, want)
		}
	}
	if pct(nil, 0.5) != 0 || pct([]time.Duration{7}, 0.99) != 7 {
		t.Error("pct of short slices")
	}
}
