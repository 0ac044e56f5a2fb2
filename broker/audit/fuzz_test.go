package audit

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mayflyhq/mayfly/broker/lease"
)

// fuzzKey is fixed so that the seed corpus keeps its meaning across runs.
var fuzzKey = ed25519.NewKeyFromSeed([]byte("mayfly audit fuzz key, 32 bytes!"))

// FuzzVerify feeds arbitrary bytes to Verify as a JSONL trail: it never
// panics, it is deterministic, a trail it accepts is contiguous and every
// event in it matches its hash, and a rejected one names a known problem.
// Query and Lineage read the same bytes without panicking. The seeds are a
// valid chain with checkpoints and every tampered variant of the Verify
// tests.
func FuzzVerify(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.jsonl")
	fl := openFileLog(f, path, fuzzKey, newClock(), cleanTrailConfig)
	appendN(f, fl.Log, trailEvents)
	fl.Append(context.Background(), LeaseRevoked(scenarioLease()))
	fl.Close(context.Background())
	clean := readLines(f, path)
	f.Add([]byte(strings.Join(clean, "\n") + "\n"))
	for _, tc := range tampers() {
		f.Add([]byte(strings.Join(tc.do(f, slices.Clone(clean)), "\n")))
	}
	f.Add([]byte(""))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"seq":1}`))

	known := map[ProblemKind]bool{Modified: true, Deleted: true, Inserted: true, Reordered: true, Malformed: true, BadCheckpoint: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Beyond 64 KiB (some 150 events) the same paths run, only slower:
		// Verify reads up to 4096 records past an anomaly to classify it.
		if len(data) > 64<<10 {
			t.Skip()
		}
		ctx := context.Background()
		r := JSONLBytes(data)
		rep, err := Verify(ctx, r, fuzzKey.Public())
		if err != nil {
			t.Fatalf("Verify of bytes returned an error: %v", err)
		}
		again, _ := Verify(ctx, r, fuzzKey.Public())
		if again.String() != rep.String() {
			t.Fatalf("not deterministic: %s vs %s", rep, again)
		}
		if rep.OK() {
			if rep.Records > 0 && rep.Last-rep.First+1 != rep.Records {
				t.Fatalf("accepted a trail of %d records spanning seq %d..%d", rep.Records, rep.First, rep.Last)
			}
			for rec, err := range r.Records(ctx, 0) {
				if err != nil {
					t.Fatalf("accepted a trail with a malformed record: %v", err)
				}
				if h, err := ComputeHash(&rec.Event); err != nil || h != rec.Event.Hash {
					t.Fatalf("accepted seq %d whose hash does not match", rec.Event.Seq)
				}
			}
		} else if !known[rep.Problem.Kind] || rep.Problem.Detail == "" {
			t.Fatalf("problem %+v", rep.Problem)
		}
		_, _ = Verify(ctx, r) // without a key
		_, _ = Query(ctx, r, Filter{Subject: "user:alice"})
		if n, err := Lineage(ctx, r, Root{Subject: "user:alice"}); err == nil {
			_ = n.Text()
		}
	})
}

func scenarioLease() *lease.Lease {
	return &lease.Lease{ID: "01jlease00000000000000001a", Subject: "user:alice", Entitlement: "db-admin", GrantID: "g-1"}
}
