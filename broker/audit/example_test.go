package audit_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/broker/audit"
)

// A single broker process keeps the chain in memory and a JSONL file; the
// file is verified offline with the broker's public key alone.
func ExampleVerify() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "audit")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.jsonl")

	key := ed25519.NewKeyFromSeed(make([]byte, 32)) // the broker's key
	file, _ := audit.NewFileSink(audit.FileConfig{Path: path})
	log, err := audit.NewLog(ctx, audit.Config{
		Sinks:           []audit.SinkConfig{{Sink: file}},
		Signer:          key,
		CheckpointEvery: 2,
		Now:             func() time.Time { return time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		panic(err)
	}
	log.Append(ctx, audit.RequestCreated("r-1", "user:alice", "db-admin", time.Hour, "fix INC-1234", "INC-1234"))
	log.Append(ctx, audit.RequestApproved("r-1", "user:bob", "g-1"))
	log.Append(ctx, audit.GrantCreated("g-1", "r-1", "user:alice", "db-admin", "user:bob", time.Time{}))
	log.Close(ctx) // seals the tail with a last checkpoint

	rep, _ := audit.Verify(ctx, audit.JSONLFile{Path: path}, key.Public())
	fmt.Println(rep)

	// Someone edits the approval.
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), "user:bob", "user:ceo", 1)), 0o600)
	rep, _ = audit.Verify(ctx, audit.JSONLFile{Path: path}, key.Public())
	fmt.Println(rep)

	// Output:
	// ok: seq 1..5, 2 checkpoint(s)
	// FAILED: modified at seq 2 (line 2): the content does not match the event's hash
}
