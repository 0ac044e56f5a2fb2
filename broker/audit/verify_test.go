package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// trail is a clean stored trail: the raw JSON of each event in order.
// With CheckpointEvery 4 and 10 appended events it is
// 1 2 3 4 cp5 6 7 8 9 cp10 11 12.
const trailEvents = 10

func cleanTrailConfig(c *Config) { c.CheckpointEvery = 4 }

// parse decodes a raw event.
func parse(t testing.TB, raw string) Event {
	t.Helper()
	e, problem := decodeEvent([]byte(raw))
	if problem != "" {
		t.Fatalf("decode: %s", problem)
	}
	return e
}

// encode encodes an event.
func encode(t testing.TB, e Event) string {
	t.Helper()
	b, err := encodeEvent(&e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// rehash recomputes e's hash, as an attacker without the key can.
func rehash(t testing.TB, e Event) Event {
	t.Helper()
	h, err := ComputeHash(&e)
	if err != nil {
		t.Fatal(err)
	}
	e.Hash = h
	return e
}

// idx returns the index of seq in raws.
func idx(t testing.TB, raws []string, seq uint64) int {
	t.Helper()
	for i, r := range raws {
		if parse(t, r).Seq == seq {
			return i
		}
	}
	t.Fatalf("seq %d not in trail", seq)
	return -1
}

// tamper is one way to damage a trail, and what Verify must say.
type tamper struct {
	name string
	do   func(t testing.TB, raws []string) []string
	kind ProblemKind
	seq  uint64
	// detail is a substring of Problem.Detail.
	detail string
	// redisOnly / fileOnly: detectable only where the chain head is kept
	// apart from the events (Redis), or different there.
	redisKind ProblemKind
	redisSeq  uint64
}

func tampers() []tamper {
	mod := func(seq uint64, f func(*Event), rehashIt bool) func(testing.TB, []string) []string {
		return func(t testing.TB, raws []string) []string {
			i := idx(t, raws, seq)
			e := parse(t, raws[i])
			f(&e)
			if rehashIt {
				e = rehash(t, e)
			}
			raws[i] = encode(t, e)
			return raws
		}
	}
	return []tamper{
		{name: "modified content", do: mod(3, func(e *Event) { e.Subject = "user:mallory" }, false),
			kind: Modified, seq: 3, detail: "the content does not match the event's hash"},
		{name: "modified and rehashed", do: mod(3, func(e *Event) { e.Outcome = "deny" }, true),
			kind: Modified, seq: 3, detail: "its hash does not match the prev recorded by seq 4"},
		{name: "modified hash only", do: mod(7, func(e *Event) { e.Hash = strings.Repeat("ab", 32) }, false),
			kind: Modified, seq: 7, detail: "does not match"},
		{name: "modified time", do: mod(2, func(e *Event) { e.Time = e.Time.Add(-3600e9) }, false),
			kind: Modified, seq: 2},
		{name: "field added", do: mod(6, func(e *Event) { e.Fields["approved_by"] = "user:ceo" }, false),
			kind: Modified, seq: 6},
		{name: "deleted one", do: func(t testing.TB, r []string) []string { return slices.Delete(r, 2, 3) },
			kind: Deleted, seq: 3, detail: "seq 3 is missing: seq 4 follows after seq 2"},
		{name: "deleted range", do: func(t testing.TB, r []string) []string { return slices.Delete(r, 2, 5) },
			kind: Deleted, seq: 3, detail: "seqs 3..5 are missing"},
		{name: "deleted first", do: func(t testing.TB, r []string) []string { return r[1:] },
			kind: Deleted, seq: 1, detail: "seq 1 is missing"},
		{name: "deleted a checkpoint", do: func(t testing.TB, r []string) []string { return slices.Delete(r, 4, 5) },
			kind: Deleted, seq: 5},
		{name: "deleted last", do: func(t testing.TB, r []string) []string { return r[:len(r)-1] },
			kind: "", redisKind: Deleted, redisSeq: 12},
		{name: "inserted copy", do: func(t testing.TB, r []string) []string { return slices.Insert(r, 3, r[2]) },
			kind: Inserted, seq: 3, detail: "a second event with seq 3"},
		{name: "inserted forgery with a taken seq", do: func(t testing.TB, r []string) []string {
			e := parse(t, r[3]) // seq 4
			e.Subject, e.Fields = "user:mallory", map[string]string{"i": "forged"}
			return slices.Insert(r, 3, encode(t, rehash(t, e)))
		}, kind: Inserted, seq: 4, detail: "seq 5 links to this copy, so the one at"},
		{name: "inserted extra seq", do: func(t testing.TB, r []string) []string {
			e := parse(t, r[2])
			e.Seq, e.Prev = 99, strings.Repeat("0f", 32)
			return slices.Insert(r, 3, encode(t, rehash(t, e)))
		}, kind: Inserted, seq: 99, detail: "links to nothing"},
		{name: "appended forgery", do: func(t testing.TB, r []string) []string {
			last := parse(t, r[len(r)-1])
			e := Event{Seq: last.Seq + 1, ID: "x", Time: last.Time, Type: TypeLeaseRevoked, LeaseID: "l", Prev: last.Hash}
			return append(r, encode(t, rehash(t, e)))
		}, kind: "", redisKind: Inserted, redisSeq: 13},
		{name: "reordered neighbours", do: func(t testing.TB, r []string) []string { r[2], r[3] = r[3], r[2]; return r },
			kind: Reordered, seq: 4, detail: "seq 4 is stored before seq 3"},
		{name: "reordered far", do: func(t testing.TB, r []string) []string {
			two := r[1]
			r = slices.Delete(r, 1, 2)
			return slices.Insert(r, 5, two)
		}, kind: Reordered, seq: 3, detail: "seq 3 is stored before seq 2"},
		{name: "reordered last two", do: func(t testing.TB, r []string) []string {
			n := len(r)
			r[n-2], r[n-1] = r[n-1], r[n-2]
			return r
		}, kind: Reordered, seq: 12},
		{name: "malformed line", do: func(t testing.TB, r []string) []string { r[5] = `{"seq":6,`; return r },
			kind: Malformed, seq: 6},
		{name: "unknown field", do: func(t testing.TB, r []string) []string {
			r[5] = strings.Replace(r[5], `{"seq"`, `{"note":"x","seq"`, 1)
			return r
		}, kind: Malformed, seq: 6, detail: "unknown field"},
		{name: "rewritten from seq 3 on", do: func(t testing.TB, r []string) []string {
			prev := parse(t, r[1]).Hash
			for i := 2; i < len(r); i++ {
				e := parse(t, r[i])
				if e.Seq == 3 {
					e.Subject = "user:mallory"
				}
				e.Prev = prev
				if e.Checkpoint != nil {
					e.Checkpoint.Hash = prev // cannot re-sign
				}
				e = rehash(t, e)
				prev = e.Hash
				r[i] = encode(t, e)
			}
			return r
		}, kind: BadCheckpoint, seq: 5, detail: "signature does not verify; the events before it were rewritten"},
		{name: "checkpoint moved", do: func(t testing.TB, r []string) []string {
			// The checkpoint of seq 4 re-used after seq 8, relinked.
			cp := parse(t, r[4])
			nine := parse(t, r[idx(t, r, 9)])
			cp.Seq, cp.Prev = 10, nine.Hash
			r[idx(t, r, 10)] = encode(t, rehash(t, cp))
			return r
		}, kind: BadCheckpoint, seq: 10, detail: "the checkpoint signs seq 4, not the event before it"},
	}
}

// checkTamper runs one tamper case against a reader.
func checkTamper(t *testing.T, tc tamper, r Reader, pub ed25519.PublicKey, redis bool) {
	t.Helper()
	rep := mustVerify(t, r, pub)
	kind, seq := tc.kind, tc.seq
	if redis && tc.redisKind != "" {
		kind, seq = tc.redisKind, tc.redisSeq
	}
	if kind == "" {
		if !rep.OK() {
			t.Fatalf("want ok (not detectable without the head), got %s", rep)
		}
		return
	}
	if rep.OK() {
		t.Fatalf("tampering not detected: %s", rep)
	}
	p := rep.Problem
	if p.Kind != kind || p.Seq != seq || !strings.Contains(p.Detail, tc.detail) {
		t.Fatalf("problem %s; want %s at seq %d with %q", p, kind, seq, tc.detail)
	}
	t.Logf("%s", p)
}

func TestVerifyTamperingJSONL(t *testing.T) {
	fl := newFileLog(t, cleanTrailConfig)
	appendN(t, fl.Log, trailEvents)
	clean := readLines(t, fl.path)
	if len(clean) != 12 {
		t.Fatalf("clean trail has %d lines", len(clean))
	}
	if rep := mustVerify(t, fl.file, fl.PublicKey()); !rep.OK() || rep.Checkpoints != 2 {
		t.Fatalf("clean trail: %s", rep)
	}
	for _, tc := range tampers() {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tampered.jsonl")
			writeLines(t, path, tc.do(t, slices.Clone(clean)))
			checkTamper(t, tc, JSONLFile{Path: path}, fl.key.Public().(ed25519.PublicKey), false)
		})
	}
}

func TestVerifyTamperingRedis(t *testing.T) {
	c := redisClient(t)
	key := newKey(t)
	l, rs := newRedisLog(t, c, key, func(cfg *Config, _ *RedisConfig) { cleanTrailConfig(cfg) })
	appendN(t, l, trailEvents)
	clean := streamRaws(t, c, rs)
	if len(clean) != 12 {
		t.Fatalf("clean stream has %d entries", len(clean))
	}
	if rep := mustVerify(t, rs, key.Public()); !rep.OK() || rep.Checkpoints != 2 {
		t.Fatalf("clean stream: %s", rep)
	}
	for _, tc := range tampers() {
		t.Run(tc.name, func(t *testing.T) {
			rewriteStream(t, c, rs, tc.do(t, slices.Clone(clean)))
			checkTamper(t, tc, rs, key.Public().(ed25519.PublicKey), true)
		})
	}
	// XDEL, what an attacker would use in place.
	rewriteStream(t, c, rs, clean)
	if err := c.XDel(context.Background(), rs.StreamKey(), "7-0").Err(); err != nil {
		t.Fatal(err)
	}
	rep := mustVerify(t, rs, key.Public())
	if rep.OK() || rep.Problem.Kind != Deleted || rep.Problem.Seq != 7 {
		t.Fatalf("XDEL: %s", rep)
	}
	// An entry with extra fields is malformed.
	rewriteStream(t, c, rs, clean)
	c.XAdd(context.Background(), xaddArgs(rs, "13-0", "e", clean[0], "x", "y"))
	if rep := mustVerify(t, rs, key.Public()); rep.OK() || rep.Problem.Kind != Malformed {
		t.Fatalf("extra field: %s", rep)
	}
}

func TestVerifyEmptyAndReadErrors(t *testing.T) {
	if rep := mustVerify(t, JSONLBytes(nil)); !rep.OK() || rep.String() != "ok: empty trail" {
		t.Fatalf("empty: %s", rep)
	}
	_, err := Verify(context.Background(), JSONLFile{Path: "/nonexistent/audit.jsonl"})
	if err == nil || !strings.Contains(err.Error(), "audit: open /nonexistent/audit.jsonl") {
		t.Fatalf("missing file: %v", err)
	}
	rep := mustVerify(t, JSONLBytes("\n"))
	if rep.OK() || rep.Problem.Kind != Malformed || rep.Problem.Pos != "line 1" {
		t.Fatalf("blank line: %s", rep)
	}
}

func TestReportString(t *testing.T) {
	fl := newFileLog(t, cleanTrailConfig)
	appendN(t, fl.Log, trailEvents)
	rep := mustVerify(t, fl.file, fl.PublicKey())
	if got, want := rep.String(), "ok: seq 1..12, 2 checkpoint(s), 2 event(s) after the last checkpoint"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	lines := readLines(t, fl.path)
	lines = slices.Delete(lines, 2, 3)
	rep = mustVerify(t, JSONLBytes(strings.Join(lines, "\n")), fl.PublicKey())
	if got, want := rep.String(), "FAILED: deleted at seq 3 (line 3): seq 3 is missing: seq 4 follows after seq 2"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	b, _ := json.Marshal(rep.Problem)
	if !strings.Contains(string(b), `"Kind":"deleted"`) {
		t.Fatalf("problem JSON %s", b)
	}
	_ = fmt.Sprint(rep)
}
